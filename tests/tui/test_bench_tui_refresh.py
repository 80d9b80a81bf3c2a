"""The refresh benchmark runs (small), and its numbers mean what they say."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_tui_refresh.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tui_refresh", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_small() -> None:
    bench = _bench()
    spread, one = bench.run(n_buffers=400, repeat=2)
    assert spread.scenario == "spread" and one.scenario == "one-process"
    assert one.processes == 1 and one.selected_rows >= one.buffers  # the leaker holds every buffer
    for r in (spread, one):
        assert r.buffers > 390 and 0 < r.apply_ms <= r.apply_max_ms < bench.BUDGET_MS
        assert r.prepare_ms > 0 and r.apply_paint_ms >= r.apply_ms
