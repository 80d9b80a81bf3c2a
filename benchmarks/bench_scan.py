"""Full-scan cost against the C floor and lsof, on the same load in the same boot (issue 6).

Run as root in the kernel lab:
    python3 benchmarks/bench_scan.py [--processes 100] [--buffers 100] [--repeat 5]
It starts the load (benchmarks/loadgen.py), then times, best of --repeat each:
  ours      dmabuf_inspect.snapshot.collect() in this process, maps included (the work of `dump`)
  ours_py   the same with the os.stat() walk of fd tables instead of the C one (_fdwalk.c)
  floor     ../shared/bench/floor_scan.c, naive and min, compiled here with gcc -O2
  lsof      `lsof -n -P` (when installed)
and the peak RSS of a fresh `dmabuf-inspect dump` process. Prints one JSON object.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loadgen import load  # noqa: E402

from dmabuf_inspect import fdwalk  # noqa: E402
from dmabuf_inspect.snapshot import collect  # noqa: E402


def _floor_binary() -> Path | None:
    for src in (HERE.parent.parent / "shared" / "bench" / "floor_scan.c",
                HERE.parent / "shared" / "bench" / "floor_scan.c"):
        if src.exists():
            out = Path("/tmp/floor_scan")
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
            return out
    return None


def _floor(binary: Path, mode: str, repeat: int) -> dict[str, float | int]:
    out = subprocess.run([str(binary), str(repeat), mode], capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=") for kv in out.split())
    return {k: (float(v) if "." in v else int(v)) for k, v in fields.items()}


def _time_ours(repeat: int) -> tuple[list[float], int, int]:
    times = []
    snap = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        snap = collect()
        times.append(time.perf_counter() - t0)
    assert snap is not None
    fds = sum(b.fd_refs for b in snap.buffers)
    return times, len(snap.buffers), fds


def _time_ours_py_walk(repeat: int) -> list[float]:
    built = fdwalk.fds_on_dev
    fdwalk.fds_on_dev = fdwalk.fds_on_dev_py
    try:
        return _time_ours(repeat)[0]
    finally:
        fdwalk.fds_on_dev = built


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
    subprocess.run([sys.executable, "-m", "dmabuf_inspect", "dump", "-q"], stdout=subprocess.DEVNULL,
                   check=True, cwd=str(HERE.parent), env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    binary = _floor_binary()
    with load(args.processes, args.buffers, shared=args.shared):
        collect()  # warm the dentry caches the same way the floor's first repeat does
        ours, buffers, fds = _time_ours(args.repeat)
        floor_naive = _floor(binary, "naive", args.repeat) if binary else None
        floor_min = _floor(binary, "min", args.repeat) if binary else None
        ours_py = _time_ours_py_walk(args.repeat)
        ours_again, _, _ = _time_ours(args.repeat)
        lsof = _time_lsof(max(1, args.repeat // 2))
        peak_rss = _peak_rss_of_dump()
    best = min(ours + ours_again)
    result: dict[str, object] = {
        "load": {"processes": args.processes, "buffers_per_process": args.buffers, "shared": args.shared},
        "ours": {"best_s": best, "median_s": statistics.median(ours + ours_again), "buffers": buffers,
                 "fds": fds},
        "c_walk": fdwalk.fds_on_dev_c is not None,
        "ours_py_walk_best_s": min(ours_py),
        "floor_naive": floor_naive,
        "floor_min": floor_min,
        "lsof_best_s": lsof,
        "dump_peak_rss_bytes": peak_rss,
    }
    if floor_naive:
        result["ratio_vs_floor_naive"] = best / float(floor_naive["seconds_per_scan"])
    if floor_min:
        result["ratio_vs_floor_min"] = best / float(floor_min["seconds_per_scan"])
    if floor_min:
        result["ratio_py_walk_vs_floor_min"] = min(ours_py) / float(floor_min["seconds_per_scan"])
    if lsof:
        result["lsof_over_ours"] = lsof / best
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
