"""Run `dmabuf-inspect bench` twice and say whether its medians repeat within 15%.

Run as root in the kernel lab (it allocates udmabufs and system-heap buffers):

    vng --run /boot/vmlinuz-6.12.107+deb13-amd64 --disable-kvm --disable-microvm --user root \\
        --qemu-opts="-cpu max -icount shift=0,sleep=off" --rwdir /tmp \\
        --exec "cd /work/main && /root/.pyenv/versions/3.11.7/bin/python3 benchmarks/bench_mmap.py"

Under plain TCG (no -icount) the guest's clock is the host's, so on a shared 2-core host every
other VM's load lands in the figures: the medians of two runs then differed by up to 1.5-3x on
some figures. With -icount shift=0 the guest clock advances one nanosecond per emulated
instruction: the figures count the work done (the kernel's mmap and fault paths, SYNC, libc
loops) independently of the host, and repeat to within a fraction of a percent. They say nothing
about caches or memory types, which TCG does not model; on real hardware run it without a VM.

Both runs happen in this process, one after the other, each with its own anon and memfd
baselines. Every median of every figure, size and target is compared: |run2 - run1| / run1,
the absolute figures and the ones relative to the baselines (FIGURE/anon, FIGURE/memfd).
Exit status 1 when an absolute figure of a dma-buf exporter differs by more than --limit percent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmabuf_inspect import mmapcost

FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s", "sync_pair_ns")


def medians(report: dict[str, Any]) -> dict[tuple[str, int, str], float]:
    """(target, size, figure) -> median; relative figures are named FIGURE/BASELINE."""
    out = {}
    for target in report["targets"]:
        for size in target["sizes"]:
            for figure in FIGURES:
                if size[figure] is not None:
                    out[(target["target"], size["size_bytes"], figure)] = size[figure]["median"]
            for baseline, rel in size["relative"].items():
                for figure, spread in rel.items():
                    if spread is not None:
                        out[(target["target"], size["size_bytes"], f"{figure}/{baseline}")] = spread["median"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", default="udmabuf,system")
    parser.add_argument("--size", default="4K,64K,1M,16M,64M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=float, default=15.0, help="percent (default 15)")
    parser.add_argument("--json", metavar="FILE", help="also write both reports and the comparison here")
    args = parser.parse_args()
    exporters = [e for e in args.exporter.split(",") if e]
    sizes = mmapcost.parse_sizes(args.size)

    reports = []
    for run in (1, 2):
        print(f"run {run}: {', '.join(exporters)} + baselines, sizes {args.size}, {args.repeat} repeats",
              flush=True)  # fmt: skip
        report = mmapcost.run_bench(exporters=exporters, sizes=sizes, repeat=args.repeat)
        for t in report.targets:
            if t.error or any(s.error for s in t.sizes):
                errors = [t.error] if t.error else [s.error for s in t.sizes if s.error]
                print(f"  {t.target}: {'; '.join(e for e in errors if e)}")
        reports.append(mmapcost.report_to_dict(report))

    first, second = medians(reports[0]), medians(reports[1])
    rows = []
    for key in first:
        if key not in second:
            continue
        a, b = first[key], second[key]
        diff = abs(b - a) / a * 100 if a else float("inf")
        rows.append((*key, a, b, diff))
    dmabuf_targets = set(exporters)
    absolute = [r for r in rows if r[0] in dmabuf_targets and "/" not in r[2]]
    relative = [r for r in rows if r[0] in dmabuf_targets and "/" in r[2]]
    bad = [r for r in absolute if r[5] > args.limit]
    bad_relative = [r for r in relative if r[5] > args.limit]
    missing = [e for e in exporters if not any(r[0] == e for r in rows)]

    print(f"\n{'target':8} {'size':>9} {'figure':24} {'run 1':>12} {'run 2':>12} {'diff':>7}")
    for target, size, figure, a, b, diff in rows:
        flag = "  <-- over" if diff > args.limit else ""
        print(f"{target:8} {size:9d} {figure:24} {a:12.1f} {b:12.1f} {diff:6.1f}%{flag}")
    for exporter in exporters:
        for label, group in (("absolute", absolute), ("relative to the baselines", relative)):
            mine = [r for r in group if r[0] == exporter]
            if mine:
                worst = max(mine, key=lambda r: r[5])
                within = sum(r[5] <= args.limit for r in mine)
                print(f"{exporter}: {label}: {within}/{len(mine)} medians within {args.limit}%, "
                      f"worst {worst[5]:.1f}% ({worst[2]} at {worst[1]} B)")  # fmt: skip
    ok = not bad and not missing
    if missing:
        print(f"FAIL: not measured: {', '.join(missing)}")
    print(f"relative figures: {'PASS' if not bad_relative and not missing else 'FAIL'}: "
          f"{len(bad_relative)} of {len(relative)} differ by more than {args.limit}%")  # fmt: skip
    print(f"{'PASS' if ok else 'FAIL'}: {len(bad)} of {len(absolute)} absolute dma-buf medians differ by "
          f"more than {args.limit}%")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"limit_percent": args.limit, "ok": ok, "reports": reports,
                       "comparison": [dict(zip(("target", "size_bytes", "figure", "run1", "run2",
                                                "diff_percent"), r, strict=True)) for r in rows]},
                      f, indent=2)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
