"""The refresh benchmark runs (small), and its numbers mean what they say."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
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
        # Whether apply stays within bench.BUDGET_MS is the benchmark's to report, not a test's.
        assert r.buffers > 390 and 0 < r.apply_ms <= r.apply_max_ms
        assert (
            r.prepare_ms > 0
            and r.prepare_bare_ms > 0
            and r.history_ms > 0
            and r.cgroups_ms > 0
            and r.apply_paint_ms >= r.apply_ms
        )


def test_benchmarks_run_without_the_tests() -> None:
    """A benchmark imports nothing from tests/: it runs as a script with only the repository on
    the path (its synthetic snapshots come from benchmarks/synthetic.py)."""
    for path in BENCH.parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not any(n.split(".")[0] in ("tests", "tui_fakes", "tui_helpers", "conftest") for n in names), path
        assert '"tests"' not in path.read_text(), path  # no sys.path into tests/
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, str(BENCH), "--buffers", "200", "--repeat", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=BENCH.parent,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("\n") == 2 and '"scenario": "spread"' in out.stdout
