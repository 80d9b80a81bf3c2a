"""Full-scan cost against the C floor and lsof, on the same load in the same boot (issues 6, 14).

Run as root in the kernel lab:
    python3 benchmarks/bench_scan.py [--processes 100] [--buffers 100] [--rounds 5]
It starts the load (benchmarks/loadgen.py), then runs --rounds rounds; each round times, once
each and in an order that turns by one every round:
  ours        dmabuf_inspect.scan.snapshot.collect(), maps included (the work of `dump`), as it runs
              by default: BPF where it can (root: the dma-buf iterator for the buffers on 6.16+,
              the task iterators for the holders; bufinfo read only when it adds fences or
              devices), the second of two scans in a fresh process (the first warms its imports,
              caches and loads the programs)
  ours_no_bpf the same with --no-bpf: debugfs bufinfo and the /proc walk (C, _fdwalk.c)
  ours_py     the same with the os.stat() walk of fd tables instead of the C one (no BPF)
  dump, dump_no_bpf   `python3 -m dmabuf_inspect dump > /dev/null` as a whole process (start-up,
              imports, the programs loaded, the scan, the JSON), with and without --no-bpf
  bufinfo     debugfs dma_buf/bufinfo read and parsed as the scan does (parse_bufinfo_table), the
              second read of a fresh process
  bpf_buffers our dma-buf iterator read and parsed into the same columns (BpfSource.buffer_table(),
              what stands in for bufinfo; 6.16+), the second read of a fresh process
  floor_min, floor_naive   ../shared/bench/floor_scan.c in its two modes, compiled here with gcc -O2,
              one scan in a fresh process, timed inside it; floor_min_process: the same process
              timed from outside, start-up included (what `dump` is compared with too)
then `lsof -n -P` (when installed) and the peak RSS of a fresh `dmabuf-inspect dump` process.
Every Python contender runs with its modules' bytecode compiled once, beforehand, into a cache of
its own (PYTHONPYCACHEPREFIX), as an installed package has it: the lab's checkout is read-only and
its Python writes no bytecode (PYTHONDONTWRITEBYTECODE), so each `dump` would otherwise compile
every module it imports, a few seconds under TCG.
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loadgen import load  # noqa: E402
from turns import in_turns  # noqa: E402

from dmabuf_inspect.kernel import fdwalk  # noqa: E402
from dmabuf_inspect.kernel.reader import Roots  # noqa: E402
from dmabuf_inspect.scan.snapshot import collect  # noqa: E402

BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"
WORKERS = ("ours", "ours_no_bpf", "ours_py", "bufinfo", "bpf_buffers")
# (numerator, denominator) of the ratios reported, where both ran
RATIOS = (
    ("ours", "floor_min"),
    ("ours_no_bpf", "floor_min"),
    ("ours_py", "floor_min"),
    ("ours", "floor_naive"),
    ("ours_no_bpf", "floor_naive"),
    ("ours", "ours_no_bpf"),
    ("dump", "floor_min"),
    ("dump", "floor_min_process"),
    ("dump_no_bpf", "floor_min_process"),
    ("dump", "dump_no_bpf"),
    ("bpf_buffers", "bufinfo"),
    ("bufinfo", "floor_min"),
    ("bpf_buffers", "floor_min"),
)


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


def _floor_process(binary: Path) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([str(binary), "1", "min"], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0

    return run


def _worker(name: str) -> Callable[[], float]:
    def run() -> float:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        return float(out.stdout)

    return run


def _dump(*extra: str) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dmabuf_inspect", "dump", *extra],
            stdout=subprocess.DEVNULL,
            check=True,
            cwd=str(HERE.parent),
            env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
        )
        return time.perf_counter() - t0

    return run


def _one(name: str) -> float:
    """In a fresh process: a warm-up, then the timed run."""
    work: Callable[[], object]
    if name == "ours":
        work = collect
    elif name in ("ours_no_bpf", "ours_py"):
        if name == "ours_py":
            fdwalk.fds_by_inode = fdwalk.fds_by_inode_py
        elif fdwalk.fds_by_inode_c is None:
            raise SystemExit("bench_scan: the C walk is not built (pip install -e . with gcc and python3-dev)")
        roots = Roots(bpf=False)

        def work() -> object:
            return collect(roots)
    elif name == "bufinfo":
        from dmabuf_inspect.kernel.bufinfo import parse_bufinfo_table

        def work() -> object:
            with open(BUFINFO, "rb") as f:
                return parse_bufinfo_table(f.read())
    elif name == "bpf_buffers":
        from dmabuf_inspect.kernel.bpf import BpfSource

        work = BpfSource().buffer_table
    else:
        raise SystemExit(f"bench_scan: no contender {name}")
    work()
    t0 = time.perf_counter()
    work()
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
    """The peak RSS of one `dump` process, measured by a fresh parent of its own (RUSAGE_CHILDREN
    here would be the largest of every contender run so far)."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run([sys.executable, '-m', 'dmabuf_inspect', 'dump', '-q'], "
        "stdout=subprocess.DEVNULL, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(HERE.parent),
        env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
    ).stdout
    return int(out) * 1024


def _has_dmabuf_iter() -> bool:
    from dmabuf_inspect.kernel.bpf import BpfSource, BpfUnavailable

    with BpfSource() as bpf:
        try:
            bpf.buffers()
        except BpfUnavailable:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", choices=WORKERS, help=argparse.SUPPRESS)  # a worker: one timed run
    args = ap.parse_args()
    if args.one:
        print(_one(args.one))
        return 0
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the contenders: see the module doc
    os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), "bench-scan-pycache"))
    binary = _floor_binary()
    contenders = {name: _worker(name) for name in WORKERS}
    if not _has_dmabuf_iter():
        del contenders["bpf_buffers"]
    contenders |= {"dump": _dump(), "dump_no_bpf": _dump("--no-bpf")}
    if binary is not None:
        contenders |= {
            "floor_min": _floor(binary, "min"),
            "floor_naive": _floor(binary, "naive"),
            "floor_min_process": _floor_process(binary),
        }
    with load(args.processes, args.buffers, shared=args.shared):
        snap = collect()  # warms the dentry caches for everyone
        for warm in ("dump", "dump_no_bpf"):  # compiles the bytecode, and caches the BPF layout
            contenders[warm]()
        times = in_turns(contenders, args.rounds)
        floor_saw = _floor_scan(binary, "min") if binary is not None else None
        lsof = _time_lsof(max(1, args.rounds // 2))
        peak_rss = _peak_rss_of_dump()
    result: dict[str, object] = {
        "kernel": os.uname().release,
        "load": {
            "processes": args.processes,
            "buffers_per_process": args.buffers,
            "shared": args.shared,
            "buffers": len(snap.buffers),
            "fds": sum(b.fd_refs for b in snap.buffers),
            "mappings": sum(b.map_refs for b in snap.buffers),
            "floor_saw": None if floor_saw is None else {k: int(floor_saw[k]) for k in ("fds", "maps", "unique")},
        },
        "sources": snap.sources,
        "c_walk": fdwalk.fds_by_inode_c is not None,
        "rounds": args.rounds,
        "seconds": {name: {"best": min(t), "median": statistics.median(t), "all": t} for name, t in times.items()},
        "lsof_best_s": lsof,
        "dump_peak_rss_bytes": peak_rss,
    }
    ratios: dict[str, dict[str, float]] = {}
    for ours, theirs in RATIOS:
        if ours in times and theirs in times:
            per_round = [a / b for a, b in zip(times[ours], times[theirs], strict=True)]
            ratios[f"{ours}/{theirs}"] = {
                "of_bests": min(times[ours]) / min(times[theirs]),
                "median_per_round": statistics.median(per_round),
            }
    result["ratios"] = ratios
    if lsof:
        result["lsof_over_ours"] = lsof / min(times["ours"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
