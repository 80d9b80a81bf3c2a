#!/usr/bin/env python3
"""How long the TUI's UI thread spends on one refresh, with synthetic snapshots.

    python3 benchmarks/bench_tui_refresh.py                 # 10 000 buffers, two scenarios
    python3 benchmarks/bench_tui_refresh.py --buffers 50000 --repeat 5 --json

A refresh has two halves. In the worker thread, the snapshot is added to the session's history
(`add_and_frame`: `Timeline.add`, then a `HistoryFrame` copy: `history_ms`) and `prepare()` diffs it against the
one on screen and formats every row, with each buffer's age (`prepare_ms`; `prepare_bare_ms` is
the same prepare without a history, alternated with it in the same run; `cgroups_ms`, the
cgroup panel's rows that prepare adds when the scan read cgroups, as the TUI's does). On the UI thread,
`apply_view()` filters, sorts and hands rows to the tables, which render only the lines on
screen; that half is what must stay under 200 ms.
Each apply alternates between two snapshots that differ (1 % gone, 2 % grown, 1 % new buffers),
so every one is a real change. Scenarios: `spread` (buffers over 300 processes, the largest one
selected) and `one-process` (a leaker holding them all, selected: its buffer table has every row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from synthetic import synthetic  # noqa: E402

from dmabuf_inspect.history.timeline import Timeline  # noqa: E402
from dmabuf_inspect.model import Snapshot  # noqa: E402
from dmabuf_inspect.tui.app import DmabufInspectApp  # noqa: E402
from dmabuf_inspect.tui.historyview import HistoryFrame, add_and_frame  # noqa: E402
from dmabuf_inspect.tui.screens import MainScreen  # noqa: E402
from dmabuf_inspect.tui.viewdata import ViewData, cgroup_rows, prepare  # noqa: E402

BUDGET_MS = 200.0


@dataclass(frozen=True)
class Result:
    scenario: str
    buffers: int
    processes: int
    selected_rows: int  # rows in the selected process's buffer table
    prepare_ms: float  # worker thread, median, with the history's ages (as the app runs it)
    prepare_bare_ms: float  # the same without a history, alternated with it
    history_ms: float  # worker thread, median: Timeline.add + its HistoryFrame
    cgroups_ms: float  # worker thread, median: the cgroup panel's rows (part of prepare when cgroups were read)
    apply_ms: float  # UI thread, median
    apply_max_ms: float
    apply_paint_ms: float  # until the app is idle again (frame composed), median
    idle_ms: float  # the same wait with nothing applied: the test harness's own cost
    repeat: int

    def line(self) -> str:
        verdict = "ok" if self.apply_max_ms < BUDGET_MS else "OVER BUDGET"
        return (
            f"{self.scenario:<12} {self.buffers:>6} buffers {self.processes:>4} procs "
            f"(selected: {self.selected_rows} rows)  history {self.history_ms:5.1f} ms + prepare "
            f"{self.prepare_ms:7.1f} ms (without history {self.prepare_bare_ms:7.1f}; "
            f"cgroup rows {self.cgroups_ms:5.1f}; worker)  "
            f"apply {self.apply_ms:6.1f} ms median, {self.apply_max_ms:6.1f} max  "
            f"apply+paint {self.apply_paint_ms:6.1f} ms (idle wait alone {self.idle_ms:.1f})  [{verdict}]"
        )


def _pair(n_buffers: int, n_procs: int) -> tuple[Snapshot, Snapshot]:
    a = synthetic(n_buffers, n_procs)
    b = synthetic(n_buffers, n_procs, drop=0.01, grow=0.02, extra=n_buffers // 100, taken_at=a.taken_at + 2)
    return a, b


def _never() -> Snapshot:
    raise AssertionError("the benchmark applies views itself")


def _with_cgroups(snap: Snapshot, n_cgroups: int = 30) -> Snapshot:
    """SNAP as a scan that read cgroups (`collect(cgroups=True)`, as the TUI scans): its processes
    spread over N_CGROUPS services."""
    procs = tuple(p._replace(cgroup=f"/system.slice/s{p.pid % n_cgroups}.service") for p in snap.processes)
    return snap._replace(processes=procs, sources={**snap.sources, "cgroup": "ok"})


async def _measure(scenario: str, n_buffers: int, n_procs: int, repeat: int) -> Result:
    a, b = _pair(n_buffers, n_procs)
    prepare_s: list[float] = []
    bare_s: list[float] = []
    history_s: list[float] = []
    views: list[ViewData] = []
    prev: Snapshot | None = None
    frame: HistoryFrame | None = None
    timeline = Timeline()
    for i, snap in enumerate((a, b, a, b, a, b)):
        t0 = time.perf_counter()
        frame = add_and_frame(timeline, snap, frame, live=True)
        history_s.append(time.perf_counter() - t0)
        for with_history in (True, False) if i % 2 else (False, True):
            t0 = time.perf_counter()
            view = prepare(snap, prev, frame if with_history else None)
            (prepare_s if with_history else bare_s).append(time.perf_counter() - t0)
            if with_history:
                views.append(view)
        prev = snap
    view_a, view_b = views[-2], views[-1]  # both with a previous snapshot, as in a live refresh
    cgroups_s: list[float] = []
    for snap in (_with_cgroups(a), _with_cgroups(b)) * 3:
        t0 = time.perf_counter()
        cgroup_rows(snap)
        cgroups_s.append(time.perf_counter() - t0)

    app = DmabufInspectApp(_never, interval_s=3600, cursor_blink=False)
    app.start_scan = lambda: False  # type: ignore[method-assign]
    apply_s: list[float] = []
    paint_s: list[float] = []
    idle_s: list[float] = []
    async with app.run_test(size=(200, 50)) as pilot:
        app.apply_view(view_a)
        await pilot.pause()
        for i in range(repeat):
            view = view_b if i % 2 == 0 else view_a
            t0 = time.perf_counter()
            app.apply_view(view)
            t1 = time.perf_counter()
            await pilot.pause()
            t2 = time.perf_counter()
            apply_s.append(t1 - t0)
            paint_s.append(t2 - t0)
            await pilot.pause()
            t3 = time.perf_counter()
            await pilot.pause()
            idle_s.append(time.perf_counter() - t3)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        selected = len(screen.buffers.all_rows)
    return Result(
        scenario=scenario,
        buffers=len(b.buffers),
        processes=len(b.processes),
        selected_rows=selected,
        prepare_ms=statistics.median(prepare_s[1:]) * 1000,
        prepare_bare_ms=statistics.median(bare_s[1:]) * 1000,
        history_ms=statistics.median(history_s[1:]) * 1000,
        cgroups_ms=statistics.median(cgroups_s) * 1000,
        apply_ms=statistics.median(apply_s) * 1000,
        apply_max_ms=max(apply_s) * 1000,
        apply_paint_ms=statistics.median(paint_s) * 1000,
        idle_ms=statistics.median(idle_s) * 1000,
        repeat=repeat,
    )


def run(n_buffers: int = 10_000, repeat: int = 11) -> list[Result]:
    return [
        asyncio.run(_measure("spread", n_buffers, 300, repeat)),
        asyncio.run(_measure("one-process", n_buffers, 1, repeat)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--buffers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    args = parser.parse_args(argv)
    results = run(args.buffers, args.repeat)
    for r in results:
        print(json.dumps(asdict(r)) if args.json else r.line())
    return 0 if all(r.apply_max_ms < BUDGET_MS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
