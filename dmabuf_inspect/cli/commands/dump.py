"""The whole snapshot as one JSON document (schema dmabuf-inspect/1) on stdout.

Names are exact: a name that is not valid UTF-8 also gets `name_hex` with its bytes.
"""

from __future__ import annotations

import argparse
import sys

from dmabuf_inspect.scan.jsonout import dumps
from dmabuf_inspect.scan.notes import print_notes
from dmabuf_inspect.scan.snapshot import collect

NAME = "dump"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-maps", action="store_true", help="skip /proc/PID/maps (faster; misses fd-less mappings)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")


def run(args: argparse.Namespace) -> int:
    snap = collect(args.roots, include_maps=not args.no_maps)
    sys.stdout.write(dumps(snap) + "\n")
    if not args.quiet:
        print_notes(snap)
    return 0
