"""Copy this machine's dma-buf kernel files into DIR, a tree the --tree option reads back.

Copies, for each process that holds a dma-buf, its dma-buf fd links (same target text), their
fdinfo, the dma-buf lines of its maps, and comm, cmdline, status, stat and cgroup; plus debugfs
dma_buf/bufinfo, /sys/kernel/dmabuf/buffers, the udmabuf parameters, dma_heap.mem_accounting, the
heap and udmabuf device names (as empty files) and the kernel release. Nothing else about any process is kept.
Run as root to include every process and debugfs. DIR must be empty or not exist.
"""

from __future__ import annotations

import argparse
import sys

from dmabuf_inspect.scan.capture import capture
from dmabuf_inspect.scan.views import plural
from dmabuf_inspect.textsafe import escape

NAME = "capture"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="where to write the tree (empty or new)")


def run(args: argparse.Namespace) -> int:
    report = capture(args.directory, args.roots)
    print(
        f"captured kernel {escape(report.kernel)} into {escape(report.directory)}: "
        f"{plural(report.processes, 'process')} holding dma-bufs "
        f"({plural(report.fds, 'fd')}, {plural(report.mappings, 'mapping')})"
    )
    for name, state in sorted(report.sources.items()):
        print(f"  {name}: {escape(state)}")
    if report.denied_pids:
        n = len(report.denied_pids)
        print(
            f"dmabuf-inspect: {plural(n, 'process')} could not be read and "
            f"{'is' if n == 1 else 'are'} not in the capture; run as root to include them",
            file=sys.stderr,
        )
    if report.outside_pids:
        n = len(report.outside_pids)
        print(
            f"dmabuf-inspect: {plural(n, 'process')} {'has' if n == 1 else 'have'} links that lead outside the "
            f"source capture and {'is' if n == 1 else 'are'} not in the capture "
            f"(pid{'s' if n != 1 else ''} {', '.join(map(str, report.outside_pids))})",
            file=sys.stderr,
        )
    if report.vanished:
        n = report.vanished
        print(f"  {plural(n, 'process')} exited during the capture and {'was' if n == 1 else 'were'} skipped")
    return 0
