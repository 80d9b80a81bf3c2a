"""classify_fd() latency against a bare os.open/os.read/os.close of the same fdinfo file.

Run as root in the kernel lab (it allocates a udmabuf and a system-heap buffer):

    vng --run /boot/vmlinuz-6.12.107+deb13-amd64 --disable-kvm --disable-microvm --user root \\
        --qemu-opts="-cpu max" --rwdir /tmp \\
        --exec "cd /work/main && /root/.pyenv/versions/3.11.7/bin/python3 benchmarks/bench_classify.py"

Both loops run in this one process, interleaved block by block so that drift hits both alike;
the figure is the ratio of the medians of the per-call block means. Exit status 1 when the ratio
is over --limit (1.3). For information it also times calls with classify_fd's memo cleared
before each one (a buffer seen for the first time: fstat, parse, a new ExporterInfo).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmabuf_inspect import classify_fd
from dmabuf_inspect.ioctl import heaps as heaps_alloc
from dmabuf_inspect.ioctl import udmabuf

classify_module = importlib.import_module("dmabuf_inspect.classify")


def per_call_ns(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls


def compare(fd: int, blocks: int, calls: int, *, memo: bool = True) -> dict[str, float]:
    path = f"/proc/self/fdinfo/{fd}"
    flags = os.O_RDONLY | os.O_CLOEXEC

    def bare() -> bytes:
        f = os.open(path, flags)
        data = os.read(f, 4096)
        os.close(f)
        return data

    memo_dict = classify_module._memo

    def classify() -> object:
        if not memo:
            memo_dict.clear()  # every call parses, checks st_dev and builds the answer anew
        return classify_fd(fd)

    classify()  # the first call proves the dma-buf filesystem with fstatfs and caches its st_dev
    bare_ns: list[float] = []
    classify_ns: list[float] = []
    for i in range(blocks):
        if i % 2:
            bare_ns.append(per_call_ns(bare, calls))
            classify_ns.append(per_call_ns(classify, calls))
        else:
            classify_ns.append(per_call_ns(classify, calls))
            bare_ns.append(per_call_ns(bare, calls))
    bare_median = statistics.median(bare_ns)
    classify_median = statistics.median(classify_ns)
    return {
        "bare_median_ns": bare_median,
        "classify_median_ns": classify_median,
        "ratio": classify_median / bare_median,
        "bare_min_ns": min(bare_ns),
        "classify_min_ns": min(classify_ns),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=61)
    parser.add_argument("--calls", type=int, default=200, help="calls per timed block")
    parser.add_argument("--limit", type=float, default=1.3)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    exporters: dict[str, str] = {}
    with udmabuf.create_with_memfd(1 << 20) as ubuf, heaps_alloc.heap_alloc("system", 1 << 20) as hbuf:
        for label, buf in (("udmabuf", ubuf), ("system", hbuf)):
            exporters[label] = classify_fd(buf.fd).exporter
            results[label] = compare(buf.fd, args.blocks, args.calls)
            cold = compare(buf.fd, max(5, args.blocks // 4), args.calls, memo=False)
            results[label]["no_memo_ratio"] = cold["ratio"]
            results[label]["no_memo_classify_median_ns"] = cold["classify_median_ns"]
    worst = max(r["ratio"] for r in results.values())
    ok = worst <= args.limit
    lines = [f"kernel {os.uname().release}; {args.blocks} blocks x {args.calls} calls, interleaved"]
    for label, r in results.items():
        lines.append(
            f"{label:8} exp_name={exporters[label]:8} bare {r['bare_median_ns'] / 1e3:8.2f} us  "
            f"classify_fd {r['classify_median_ns'] / 1e3:8.2f} us  ratio {r['ratio']:.3f}  "
            f"(memo cleared before each call: {r['no_memo_classify_median_ns'] / 1e3:.2f} us, "
            f"ratio {r['no_memo_ratio']:.3f})"
        )
    lines.append(f"{'PASS' if ok else 'FAIL'}: worst ratio {worst:.3f} (limit {args.limit})")
    print("\n".join(lines), flush=True)
    if args.json:
        doc = {
            "kernel": os.uname().release,
            "blocks": args.blocks,
            "calls": args.calls,
            "limit": args.limit,
            "ok": ok,
            "exporters": exporters,
            "results": results,
            "summary": lines,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
