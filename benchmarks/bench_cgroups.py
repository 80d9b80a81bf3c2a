"""Per-group totals (scan/cgroups.group_totals) from the processes' own figures, against the same
totals taken buffer by buffer, on the lab's 100 x 100 load in one process, side by side.

    python3 benchmarks/bench_cgroups.py [--processes 100] [--buffers 100] [--shared 8] [--rounds 21]

The snapshot is built as collect() builds it (every process's buffers, Rss and Pss from the buffers
it holds), grouped as `dump` groups it (by cgroup: here 7 services). Each round times both ways once,
in an order that turns every round; prints one JSON object with each way's best and median and the
median of the per-round ratios (fast / buffer by buffer). Needs no dma-buf: runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from turns import in_turns

from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot, Totals
from dmabuf_inspect.scan import cgroups

PAGE = 4096


def load(processes: int, per_proc: int, shared: int) -> Snapshot:
    """benchmarks/loadgen.py's load as a snapshot: own buffers per process, `shared` held by all."""
    pids = range(1000, 1000 + processes)
    buffers: list[Buffer] = []
    held: dict[int, list[Buffer]] = {pid: [] for pid in pids}
    for pid in pids:
        for fd in range(3, 3 + per_proc):
            b = Buffer(len(buffers) + 1, PAGE, "bpf", "system", "heap", None, 1, (Holder(pid, (fd,), 0, 0),), (), (), 0)
            buffers.append(b)
            held[pid].append(b)
    for i in range(shared):
        its = tuple(Holder(pid, (3 + per_proc + i,), 0, 0) for pid in pids)
        b = Buffer(len(buffers) + 1, PAGE, "bpf", "system", "heap", None, processes, its, (), (), 0)
        buffers.append(b)
        for pid in pids:
            held[pid].append(b)
    procs = tuple(
        Process(
            pid,
            1,
            "load",
            "",
            0,
            "root",
            len(mine),
            sum(b.size_bytes for b in mine),
            sum(b.size_bytes // len(b.holders) for b in mine),
        )
        for pid, mine in held.items()
    )
    total = sum(b.size_bytes for b in buffers)
    return Snapshot("bench", 0.0, {}, tuple(buffers), procs, Totals(len(buffers), total, total, 0), ())


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    snap = load(args.processes, args.buffers, args.shared)
    group = {p.pid: f"/system.slice/s{p.pid % 7}.service" for p in snap.processes}

    def by_buffer() -> object:
        return cgroups.group_totals(snap, group.get, from_processes=False)

    def from_processes() -> object:
        return cgroups.group_totals(snap, group.get)

    assert from_processes() == by_buffer()
    ways: dict[str, Callable[[], float]] = {
        "from_processes": lambda: timed(from_processes),
        "buffer_by_buffer": lambda: timed(by_buffer),
    }
    times = in_turns(ways, args.rounds)
    ratios = [f / b for f, b in zip(times["from_processes"], times["buffer_by_buffer"], strict=True)]
    print(
        json.dumps(
            {
                "buffers": len(snap.buffers),
                "processes": len(snap.processes),
                **{n: {"best_ms": min(t) * 1e3, "median_ms": statistics.median(t) * 1e3} for n, t in times.items()},
                "ratio_median_per_round": statistics.median(ratios),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
