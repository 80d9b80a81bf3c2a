"""The whole snapshot as one JSON document (schema dmabuf-inspect/1) on stdout.

Compact JSON when stdout is not a terminal (a pipe, a file); indented on a terminal or with
--indent. Names are exact: a name that is not valid UTF-8 also gets `name_hex` with its bytes.
Each holding process's cgroup is read too (one file each): `cgroups` has the per-cgroup totals.
"""

from __future__ import annotations

import argparse
import sys

from dmabuf_inspect.cli.main import keep
from dmabuf_inspect.scan.jsonout import write
from dmabuf_inspect.scan.notes import print_notes
from dmabuf_inspect.scan.snapshot import collect

NAME = "dump"


def _indent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of spaces: {text!r}") from None
    if not 0 <= value <= 16:
        raise argparse.ArgumentTypeError(f"must be 0 to 16 spaces, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-maps", action="store_true", help="skip /proc/PID/maps (faster; misses fd-less mappings)")
    parser.add_argument(
        "--indent",
        nargs="?",
        type=_indent,
        const=2,
        default=None,
        metavar="N",
        help="indent by N spaces (default 2); the default is indented on a terminal, compact otherwise",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")


def run(args: argparse.Namespace) -> int:
    snap = collect(args.roots, include_maps=not args.no_maps, cgroups=True)
    keep(snap)
    indent = args.indent if args.indent is not None else (2 if sys.stdout.isatty() else None)
    write(snap, sys.stdout, indent=indent)
    if not args.quiet:
        print_notes(snap)
    return 0
