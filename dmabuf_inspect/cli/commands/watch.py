"""One line per interval, like vmstat: time, total, change, new kernel-only bytes, top growers.

For ssh sessions and logs. Ctrl-C ends it. A process is (pid, start time): a pid reused by
another process starts from 0.
"""

from __future__ import annotations

import argparse
import sys
import time

from dmabuf_inspect.cli.commands.record import _count, _seconds
from dmabuf_inspect.history.watch import HEADER, WatchSample, format_line
from dmabuf_inspect.scan.snapshot import collect

NAME = "watch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=_seconds, default=1.0, metavar="S", help="seconds between lines (default 1)")
    parser.add_argument("--count", type=_count, metavar="N", help="stop after N lines (default: at Ctrl-C)")
    parser.add_argument("--top", type=_count, default=3, metavar="N", help="growers shown per line (default 3)")
    parser.add_argument("--no-maps", action="store_true", help="skip /proc/PID/maps (faster; misses fd-less mappings)")
    parser.add_argument("--no-header", action="store_true", help="lines only")


def run(args: argparse.Namespace) -> int:
    if not args.no_header:
        print(HEADER, flush=True)
    prev: WatchSample | None = None
    lines = 0
    next_at = time.monotonic()
    try:
        while True:
            cur = WatchSample.of(collect(args.roots, include_maps=not args.no_maps))
            print(format_line(prev, cur, args.top), flush=True)
            prev = cur
            lines += 1
            if args.count is not None and lines >= args.count:
                return 0
            next_at = max(next_at + args.interval, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        sys.stdout.flush()
        return 0
