"""--pid and --exporter of `list` and `buffers`: one parse, one filter, one message when nothing matches."""

from __future__ import annotations

import argparse

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.notes import print_notes
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import exporter_names, filter_miss_text, filter_snapshot


class NoMatchError(DmabufInspectError):
    """A --pid/--exporter filter kept no buffer (exit 1)."""


def add_filter_arguments(parser: argparse.ArgumentParser, *, pid_help: str) -> None:
    parser.add_argument("--pid", type=int, action="append", metavar="PID", help=pid_help)
    parser.add_argument(
        "--exporter",
        action="append",
        metavar="NAMES",
        help="only buffers of these exporters or classes, any case (a comma list, repeatable), "
        "e.g. udmabuf, system, heap, drm",
    )


def filtered_snapshot(args: argparse.Namespace, *, cgroups: bool = False) -> Snapshot:
    """A scan of args.roots (with each process's cgroup when `cgroups`) with --pid/--exporter
    applied; NoMatchError when they keep nothing (the scan's notes, such as denied processes, are
    printed first: they may be why)."""
    return scan_and_filter(args, cgroups=cgroups)[1]


def scan_and_filter(args: argparse.Namespace, *, cgroups: bool = False) -> tuple[Snapshot, Snapshot]:
    """(the whole scan, the scan with --pid/--exporter applied), as filtered_snapshot()."""
    snap = collect(args.roots, cgroups=cgroups) if cgroups else collect(args.roots)
    exporters = exporter_names(args.exporter or ())
    miss = filter_miss_text(snap, args.pid, exporters)
    if miss is not None:
        print_notes(snap)
        raise NoMatchError(miss)
    return snap, filter_snapshot(snap, args.pid, exporters)
