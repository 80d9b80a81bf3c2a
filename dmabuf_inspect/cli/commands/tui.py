"""Live, htop-like view of dma-bufs: processes, their buffers, holders, fences, exporters.

Refreshes every --interval seconds (p pauses, r scans now); rows that grew since the last
refresh are highlighted, new and gone buffers are marked. `e` writes the current view to a
JSON file in the working directory, `?` lists every key. With --proc-root and the other root
options (or --tree) it browses a capture from another machine.
"""

from __future__ import annotations

import argparse
import math
import sys

from dmabuf_inspect.errors import DmabufInspectError

NAME = "tui"
MIN_INTERVAL_S = 0.2


def interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S} seconds, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=interval, default=2.0, metavar="SECONDS", help="seconds between scans (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DmabufInspectError("the TUI needs a terminal; use `dmabuf-inspect list` or `dump` in scripts")
    from dmabuf_inspect.tui import run_tui  # textual is imported only here, never by the core

    return run_tui(args.roots, args.interval)
