"""Full-scan cost against the C floor and lsof, on the same load in the same boot (issue 6).

Run as root in the kernel lab:
    python3 benchmarks/bench_scan.py [--processes 100] [--buffers 100] [--rounds 5]
It starts the load (benchmarks/loadgen.py), then runs --rounds rounds; each round times, once
each and in an order that turns by one every round:
  ours      dmabuf_inspect.scan.snapshot.collect(), maps included (the work of `dump`), the second of
            two scans in a fresh process (the first warms its imports and caches)
  ours_py   the same with the os.stat() walk of fd tables instead of the C one (_fdwalk.c)
  floor_min, floor_naive   ../shared/bench/floor_scan.c in its two modes, compiled here with gcc -O2,
            one scan in a fresh process
then `lsof -n -P` (when installed) and the peak RSS of a fresh `dmabuf-inspect dump` process.
Every contender runs in a fresh process each round: under TCG about one process in four runs
1.5-2.5x slower for its whole life (see the `bench` section of README.md), and a scan that stayed in
one process would carry its luck through every round.
Prints one JSON object: each contender's best and median, the ratio of bests, and the median of
the per-round ratios (ours / floor in the same round: what the machine's noise disturbs least).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loadgen import load  # noqa: E402

from dmabuf_inspect import fdwalk  # noqa: E402
from dmabuf_inspect.scan.snapshot import collect  # noqa: E402


def _floor_binary() -> Path | None:
    for src in (
        HERE.parent.parent / "shared" / "bench" / "floor_scan.c",
        HERE.parent / "shared" / "bench" / "floor_scan.c",
    ):
        if src.exists():
            out = Path("/tmp/floor_scan")
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
            return out
    return None


def _floor_scan(binary: Path, mode: str) -> dict[str, str]:
    out = subprocess.run([str(binary), "1", mode], capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=") for kv in out.split())  # fds=N maps=N unique=N seconds_per_scan=S


def _floor(binary: Path, mode: str) -> Callable[[], float]:
    def run() -> float:
        return float(_floor_scan(binary, mode)["seconds_per_scan"])  # timed inside: no process start-up

    return run


def _ours(walk: str) -> Callable[[], float]:
    def run() -> float:
        out = subprocess.run(
            [sys.executable, __file__, "--one-scan", walk], capture_output=True, text=True, check=True
        ).stdout
        return float(out)

    return run


def _one_scan(walk: str) -> float:
    """In a fresh process: a warm-up scan, then the timed one."""
    if walk == "py":
        fdwalk.fds_by_inode = fdwalk.fds_by_inode_py
    elif fdwalk.fds_by_inode_c is None:
        raise SystemExit("bench_scan: the C walk is not built (pip install -e . with gcc and python3-dev)")
    collect()
    t0 = time.perf_counter()
    collect()
    return time.perf_counter() - t0


def _time_lsof(repeat: int) -> float | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([lsof, "-n", "-P"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_rss_of_dump() -> int:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "dump", "-q"],
        stdout=subprocess.DEVNULL,
        check=True,
        cwd=str(HERE.parent),
        env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) * 1024


def _rounds(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(contenders[name]())
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one-scan", choices=("c", "py"), help=argparse.SUPPRESS)  # a worker: one timed scan
    args = ap.parse_args()
    if args.one_scan:
        print(_one_scan(args.one_scan))
        return 0
    binary = _floor_binary()
    contenders = {"ours": _ours("c"), "ours_py": _ours("py")}
    if binary is not None:
        contenders |= {"floor_min": _floor(binary, "min"), "floor_naive": _floor(binary, "naive")}
    with load(args.processes, args.buffers, shared=args.shared):
        snap = collect()  # warms the dentry caches for everyone
        times = _rounds(contenders, args.rounds)
        floor_saw = _floor_scan(binary, "min") if binary is not None else None
        lsof = _time_lsof(max(1, args.rounds // 2))
        peak_rss = _peak_rss_of_dump()
    result: dict[str, object] = {
        "load": {
            "processes": args.processes,
            "buffers_per_process": args.buffers,
            "shared": args.shared,
            "buffers": len(snap.buffers),
            "fds": sum(b.fd_refs for b in snap.buffers),
            "mappings": sum(b.map_refs for b in snap.buffers),
            "floor_saw": None if floor_saw is None else {k: int(floor_saw[k]) for k in ("fds", "maps", "unique")},
        },
        "c_walk": fdwalk.fds_by_inode_c is not None,
        "rounds": args.rounds,
        "seconds": {name: {"best": min(t), "median": statistics.median(t), "all": t} for name, t in times.items()},
        "lsof_best_s": lsof,
        "dump_peak_rss_bytes": peak_rss,
    }
    ratios: dict[str, dict[str, float]] = {}
    for ours in ("ours", "ours_py"):
        for floor in ("floor_min", "floor_naive"):
            if floor in times:
                per_round = [a / b for a, b in zip(times[ours], times[floor], strict=True)]
                ratios[f"{ours}/{floor}"] = {
                    "of_bests": min(times[ours]) / min(times[floor]),
                    "median_per_round": statistics.median(per_round),
                }
    result["ratios"] = ratios
    if lsof:
        result["lsof_over_ours"] = lsof / min(times["ours"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
