"""Prometheus metrics of the dma-bufs, on stdout or in a textfile for node_exporter.

One scan, printed in the Prometheus text format 0.0.4: totals, per exporter and class, per
cgroup and per process (the top N of each by bytes), heaps and udmabuf, and how the scan went.
With --textfile PATH the same text goes to PATH instead, atomically (a temporary file in the
same directory, then a rename), for node_exporter's --collector.textfile.directory; run it from
a timer. The metric names and their labels: see the README, "Metrics".
"""

from __future__ import annotations

import argparse
import os
import sys

from dmabuf_inspect.errors import DmabufInspectError, UsageError
from dmabuf_inspect.metrics import options
from dmabuf_inspect.textsafe import escape

NAME = "metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--textfile",
        metavar="PATH",
        help="write to PATH (ending in .prom) atomically instead of printing, for node_exporter's textfile collector",
    )
    options.add_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")


def _check_textfile(path: str) -> None:
    if not path.endswith(".prom"):
        raise UsageError(f"--textfile {escape(path)}: must end in .prom (node_exporter reads only *.prom files)")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--textfile {escape(path)}: no such directory {escape(folder)}")


def run(args: argparse.Namespace) -> int:
    if args.textfile is not None:
        _check_textfile(args.textfile)
    from dmabuf_inspect.metrics.collector import exposition, write_textfile  # prometheus_client: only here
    from dmabuf_inspect.metrics.source import observe
    from dmabuf_inspect.scan.notes import print_notes

    opts = options.MetricOptions.from_args(args)
    obs = observe(args.roots, include_maps=not args.no_maps)
    if args.textfile is None:
        text = exposition(obs, opts)
        raw = getattr(sys.stdout, "buffer", None)  # the bytes as made: UTF-8 whatever the locale
        if raw is None:
            sys.stdout.write(text.decode("utf-8"))
        else:
            sys.stdout.flush()
            raw.write(text)
            raw.flush()
    else:
        try:
            write_textfile(args.textfile, obs, opts)
        except OSError as exc:
            raise DmabufInspectError(f"writing {escape(args.textfile)}: {exc.strerror or exc}") from None
    if not args.quiet:
        print_notes(obs.snapshot)
    return 0
