"""BPF iterators against what they would replace, on the same load in the same boot (issue 14).

Run as root in the kernel lab (the dma-buf iterator needs 6.16+; on 6.12 only the holders run):
    python3 benchmarks/bench_bpf.py [--processes 100] [--buffers 100] [--rounds 5]
It starts the load of bench_scan.py (benchmarks/loadgen.py: PROCESSES x BUFFERS system-heap
buffers, every 4th mapped, 8 shared by all), then runs --rounds rounds; each round times, once
each, in an order that turns by one every round, each in a fresh process (TCG gives some processes
1.5-2.5x slower lives; see bench_scan.py):
  bufinfo       read debugfs dma_buf/bufinfo and parse it as the scan does (parse_bufinfo_table)
  bpf_buffers   read our dma-buf iterator and parse its records into the same columns
                (BpfSource.buffer_table(): what stands in for bufinfo; 6.16+)
  floor_min     ../shared/bench/floor_scan.c min mode: every process's fds and maps through /proc,
                in C (one stat per fd, fdinfo once per buffer), compiled here with gcc -O2
  bpf_holders   read our task_file and task_vma iterators and parse them: every process's dma-buf
                fds and mappings (BpfSource.holders())
  bpf_all       bpf_holders then bpf_buffers: what a BPF scan reads from the kernel (the processes'
                comm, cmdline and owner come on top, for the processes found only)
  *_read        the same reads without the parsing: what the kernel's side costs
Each worker loads its programs (untimed: the verifier runs once per process), reads once to warm
up, and times the second read. The one-time costs are timed once, apart: BTF parsed into the
layout, the layout read from its cache, and each program loaded and attached.
Prints one JSON object: best and median of each, the ratio of bests and the median of the
per-round ratios bpf_buffers/bufinfo, bpf_holders/floor_min and bpf_all/floor_min.
"""

from __future__ import annotations

import argparse
import json
import os
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

from dmabuf_inspect.kernel.bpf import programs, source  # noqa: E402
from dmabuf_inspect.kernel.bpf.btf import VMLINUX, Btf  # noqa: E402
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT  # noqa: E402
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo_table  # noqa: E402

BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"
CONTENDERS = (
    "bufinfo",
    "bpf_buffers",
    "floor_min",
    "bpf_holders",
    "bpf_all",
    "bufinfo_read",
    "bpf_buffers_read",
    "bpf_holders_read",
)
NEEDS_DMABUF_ITER = ("bpf_buffers", "bpf_all", "bpf_buffers_read")


def _floor_binary() -> Path | None:
    """floor_scan.c compiled as bench_scan.py compiles it."""
    for src in (
        HERE.parent.parent / "shared" / "bench" / "floor_scan.c",
        HERE.parent / "shared" / "bench" / "floor_scan.c",
    ):
        if src.exists():
            out = Path(tempfile.gettempdir()) / "floor_scan_bpf_bench"
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
            return out
    return None


def _floor(binary: Path) -> dict[str, str]:
    out = subprocess.run([str(binary), "1", "min"], capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=") for kv in out.split())  # fds=N maps=N unique=N seconds_per_scan=S


def _worker(name: str) -> Callable[[], float]:
    def run() -> float:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        return float(out.stdout)

    return run


def _read_bufinfo() -> int:
    with open(BUFINFO, "rb") as f:
        return len(parse_bufinfo_table(f.read()).inode)


def _read_bufinfo_raw() -> int:
    with open(BUFINFO, "rb") as f:
        return len(f.read())


def _one(name: str) -> float:
    """In a fresh process: set up, one warm-up, then the timed read."""
    bpf = source.BpfSource()
    work: Callable[[], object]
    if name == "bufinfo":
        work = _read_bufinfo
    elif name == "bufinfo_read":
        work = _read_bufinfo_raw
    elif name == "bpf_buffers":
        work = bpf.buffer_table
    elif name == "bpf_buffers_read":
        work = bpf._read_dmabuf
    elif name == "bpf_holders":
        work = bpf.holders
    elif name == "bpf_holders_read":

        def work() -> object:
            return bpf._iterator("task_file").read(), bpf._iterator("task_vma").read()
    elif name == "bpf_all":

        def work() -> object:
            return bpf.holders(), bpf.buffer_table()
    else:
        raise SystemExit(f"bench_bpf: no contender {name}")
    work()
    t0 = time.perf_counter()
    work()
    elapsed = time.perf_counter() - t0
    bpf.close()
    return elapsed


def _one_time_costs(has_dmabuf_iter: bool) -> dict[str, float]:
    costs: dict[str, float] = {}
    t0 = time.perf_counter()
    with open(VMLINUX, "rb") as f:
        data = f.read()
    btf = Btf(data, VMLINUX)
    layout = programs.Layout.from_btf(btf)
    costs["btf_parse_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        source._layouts.clear()  # parsed and written to the cache, not taken from this process
        source.load_layout(cache_dir=cache)
        source._layouts.clear()
        t0 = time.perf_counter()
        source.load_layout(cache_dir=cache)
        costs["layout_from_cache_s"] = time.perf_counter() - t0
    loads = [("task_file", programs.task_file_records(layout), layout.task_file_iter_id)]
    loads.append(("task_vma", programs.task_vma_records(layout), layout.task_vma_iter_id))
    if has_dmabuf_iter:
        loads.append(("dmabuf", programs.dmabuf_records(layout), layout.dmabuf_iter_id))
    for name, insns, attach_id in loads:
        assert attach_id is not None
        t0 = time.perf_counter()
        it = source.Iterator(name, insns, attach_id)
        costs[f"load_{name}_s"] = time.perf_counter() - t0
        it.close()
    return costs


def _ratio(times: dict[str, list[float]], ours: str, theirs: str) -> dict[str, float] | None:
    if ours not in times or theirs not in times:
        return None
    per_round = [a / b for a, b in zip(times[ours], times[theirs], strict=True)]
    return {"of_bests": min(times[ours]) / min(times[theirs]), "median_per_round": statistics.median(per_round)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a worker: one timed read
    args = ap.parse_args()
    if args.one:
        print(_one(args.one))
        return 0
    if not source.capable():
        raise SystemExit(f"bench_bpf: {NEEDS_ROOT}")
    layout = source.load_layout()
    has_dmabuf_iter = layout.dmabuf_iter_id is not None
    binary = _floor_binary()
    contenders: dict[str, Callable[[], float]] = {}
    for name in CONTENDERS:
        if name == "floor_min" and binary is not None:
            contenders[name] = lambda: float(_floor(binary)["seconds_per_scan"])  # timed inside floor_scan
        elif name != "floor_min" and (has_dmabuf_iter or name not in NEEDS_DMABUF_ITER):
            contenders[name] = _worker(name)
    with load(args.processes, args.buffers, shared=args.shared):
        with source.BpfSource() as bpf:  # what the load is, as the contenders see it
            held = bpf.holders()
            buffers = len(bpf.buffers()) if has_dmabuf_iter else None
        floor_saw = {k: int(v) for k, v in _floor(binary).items() if k != "seconds_per_scan"} if binary else None
        times = in_turns(contenders, args.rounds)
        costs = _one_time_costs(has_dmabuf_iter)
    result: dict[str, object] = {
        "kernel": os.uname().release,
        "load": {
            "processes": args.processes,
            "buffers_per_process": args.buffers,
            "shared": args.shared,
            "bpf_buffers": buffers,
            "bpf_fds": sum(len(fds) for by in held.fds.values() for fds in by.values()),
            "bpf_mappings": sum(len(m) for m in held.maps.values()),
            "bpf_processes": len(held.fds.keys() | held.maps.keys()),
            "floor_saw": floor_saw,
        },
        "rounds": args.rounds,
        "seconds": {n: {"best": min(t), "median": statistics.median(t), "all": t} for n, t in times.items()},
        "one_time_seconds": costs,
        "ratios": {
            name: r
            for name, r in (
                ("bpf_buffers/bufinfo", _ratio(times, "bpf_buffers", "bufinfo")),
                ("bpf_buffers_read/bufinfo_read", _ratio(times, "bpf_buffers_read", "bufinfo_read")),
                ("bpf_holders_read/floor_min", _ratio(times, "bpf_holders_read", "floor_min")),
                ("bpf_holders/floor_min", _ratio(times, "bpf_holders", "floor_min")),
                ("bpf_all/floor_min", _ratio(times, "bpf_all", "floor_min")),
            )
            if r is not None
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
