"""Record snapshots over time into a SQLite file, with each buffer's creator where the kernel traces it.

Stores changes, not copies: buffer lifetimes, holder intervals and per-process totals, one
transaction per sample. On Linux 7.0+, as root, the dma_buf tracepoints name each buffer's
creator (pid, comm, time), through a tracefs instance of its own that is removed on exit.
Ctrl-C or SIGTERM ends it cleanly. Read the file with `dmabuf-inspect report FILE`.
"""

from __future__ import annotations

import argparse
import sys
import time

from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.history.recorder import Progress, RecordOptions, record
from dmabuf_inspect.units import human_bytes

NAME = "record"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the recording to write (SQLite)")
    parser.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between samples (default 1)"
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    stop.add_argument("--samples", type=_count, metavar="N", help="stop after N samples")
    parser.add_argument("--no-trace", action="store_true", help="do not trace the dma_buf events (creators unknown)")
    parser.add_argument("--no-maps", action="store_true", help="skip /proc/PID/maps (faster; misses fd-less mappings)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="nothing on stderr but errors (for scripts)")


class _ProgressLine:
    """One line on a terminal, rewritten after each sample."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.shown = False

    def __call__(self, p: Progress) -> None:
        elapsed = time.strftime("%H:%M:%S", time.gmtime(p.elapsed_s))
        trace = "" if p.trace_events is None else f", {p.trace_events} trace events, {p.lost_events or 0} lost"
        sys.stderr.write(
            f"\r{NAME} {self.output}: {p.samples} samples, {p.buffers} buffers ({human_bytes(p.bytes)}), "
            f"{elapsed} elapsed{trace}\x1b[K"
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    from dmabuf_inspect.textsafe import escape

    if not args.output:
        raise UsageError("--output needs a file name")
    options = RecordOptions(
        output=args.output,
        interval_s=args.interval,
        duration_s=args.duration,
        samples=args.samples,
        trace=not args.no_trace,
        include_maps=not args.no_maps,
        overwrite=args.force,
    )
    progress = _ProgressLine(escape(args.output)) if sys.stderr.isatty() and not args.quiet else None

    def note(text: str) -> None:
        if not args.quiet:
            if progress is not None and progress.shown:
                sys.stderr.write("\n")
            print(f"dmabuf-inspect: {text}", file=sys.stderr)

    try:
        result = record(args.roots, options, on_sample=progress, on_note=note)
    finally:
        if progress is not None:
            progress.end()
    if not args.quiet:
        lost = f", {result.lost_events} trace events lost" if result.lost_events else ""
        print(
            f"dmabuf-inspect: {result.samples} samples in {escape(result.output)} "
            f"(stopped by {result.stopped_by}{lost}); read it with `dmabuf-inspect report {escape(result.output)}`",
            file=sys.stderr,
        )
    return 0
