"""Compare two `dump` documents or captures: new, gone and re-held buffers, per-process deltas.

BEFORE and AFTER are each a file written by `dmabuf-inspect dump` (or - for stdin) or a
directory written by `dmabuf-inspect capture`. With --fail-on-growth SIZE the exit status is 3
when the total grew by more than SIZE (0: any growth), for CI:

    dmabuf-inspect dump > a.json; run-the-tests; dmabuf-inspect dump > b.json
    dmabuf-inspect diff a.json b.json --fail-on-growth 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from dmabuf_inspect.cli.tables import human_bytes, render_table
from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.history.docdiff import DocumentError, Side, diff_sides, side_from_document, side_from_snapshot
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import SizeError, parse_size

NAME = "diff"
EXIT_GROWTH = 3


def _growth_limit(text: str) -> int:
    if text.strip() == "0":
        return 0  # any growth; parse_size refuses 0 as a buffer size
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", metavar="BEFORE", help="a `dump` document (- for stdin) or a `capture` directory")
    parser.add_argument("after", metavar="AFTER", help="the same, taken later")
    parser.add_argument("--json", action="store_true", help="the diff as JSON (schema dmabuf-inspect-diff/1)")
    parser.add_argument(
        "--fail-on-growth",
        type=_growth_limit,
        metavar="SIZE",
        help=f"exit {EXIT_GROWTH} when the total grew by more than SIZE (0: any growth), e.g. 0, 64K, 1M",
    )


def load_side(path: str) -> Side:
    if path != "-" and os.path.isdir(path):
        from dmabuf_inspect.kernel.reader import Roots
        from dmabuf_inspect.scan.snapshot import collect

        if not os.path.isdir(os.path.join(path, "proc")):
            raise UsageError(f"{escape(path)}: a directory, but not a capture (no proc/ in it)")
        return side_from_snapshot(collect(Roots.from_tree(path)))
    try:
        if path == "-":
            doc = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{escape(path)}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{escape(path)}: not JSON ({exc})") from None
    try:
        return side_from_document(doc)
    except DocumentError as exc:
        raise UsageError(f"{escape(path)}: {exc}") from None


def _holders(holders: list[dict[str, Any]]) -> str:
    return " ".join(str(h["pid"]) for h in holders) or "(kernel)"


def render(doc: dict[str, Any]) -> str:
    out = [
        f"total {human_bytes(doc['before']['bytes'])} -> {human_bytes(doc['after']['bytes'])} "
        f"({'+' if doc['delta_bytes'] >= 0 else '-'}{human_bytes(abs(doc['delta_bytes']))}), "
        f"buffers {doc['before']['buffers']} -> {doc['after']['buffers']} ({doc['delta_buffers']:+d})"
    ]
    dev_before, dev_after = doc["before"].get("device_bytes", 0), doc["after"].get("device_bytes", 0)
    if dev_before or dev_after:
        dev = doc["delta_device_bytes"]
        out.append(
            f"device memory (not RAM) {human_bytes(dev_before)} -> {human_bytes(dev_after)} "
            f"({'+' if dev >= 0 else '-'}{human_bytes(abs(dev))})"
        )
    if doc["delta_kernel_only_bytes"] is not None:
        ko = doc["delta_kernel_only_bytes"]
        out.append(f"kernel-only {'+' if ko >= 0 else '-'}{human_bytes(abs(ko))}")
    for title, key in (("NEW", "new"), ("GONE", "gone")):
        if doc[key]:
            rows = [
                [
                    str(b["inode"]),
                    human_bytes(b["size_bytes"]),
                    escape(b["exporter"]),
                    escape(b["name"]),
                    _holders(b["holders"]),
                ]
                for b in doc[key]
            ]
            out += [
                "",
                f"{title} ({len(rows)})",
                render_table(["INODE", "SIZE", "EXPORTER", "NAME", "HOLDERS"], rows, frozenset({0, 1})),
            ]
    if doc["changed"]:
        rows = [
            [
                str(b["inode"]),
                human_bytes(b["size_bytes"]),
                escape(b["exporter"]),
                _holders(b["holders_before"]),
                _holders(b["holders"]),
            ]
            for b in doc["changed"]
        ]
        out += [
            "",
            f"HOLDERS CHANGED ({len(rows)})",
            render_table(["INODE", "SIZE", "EXPORTER", "BEFORE", "AFTER"], rows, frozenset({0, 1})),
        ]
    if doc["new_kernel_only"]:
        rows = [
            [str(b["inode"]), human_bytes(b["size_bytes"]), escape(b["exporter"]), b["was"]]
            for b in doc["new_kernel_only"]
        ]
        out += [
            "",
            f"NEW KERNEL-ONLY ({len(rows)})",
            render_table(["INODE", "SIZE", "EXPORTER", "WAS"], rows, frozenset({0, 1})),
        ]
    if doc["processes"]:
        rows = []
        for p in doc["processes"]:
            state = "new" if not p["in_before"] else "gone" if not p["in_after"] else ""
            sign = "+" if p["delta_bytes"] >= 0 else "-"
            rows.append(
                [
                    str(p["pid"]),
                    escape(p["comm"]),
                    human_bytes(p["before_bytes"]),
                    human_bytes(p["after_bytes"]),
                    f"{sign}{human_bytes(abs(p['delta_bytes']))}",
                    f"{p['delta_buffers']:+d}",
                    state,
                ]
            )
        out += [
            "",
            "PROCESSES",
            render_table(["PID", "COMM", "BEFORE", "AFTER", "DELTA", "BUFS", ""], rows, frozenset({0, 2, 3, 4, 5})),
        ]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.before == "-" and args.after == "-":
        raise UsageError("only one of BEFORE and AFTER can be - (stdin)")
    doc = diff_sides(load_side(args.before), load_side(args.after))
    if args.json:
        json.dump(doc, sys.stdout, indent=2 if sys.stdout.isatty() else None)
        sys.stdout.write("\n")
    else:
        print(render(doc))
    if args.fail_on_growth is not None and doc["growth_bytes"] > args.fail_on_growth:
        print(
            f"dmabuf-inspect: dma-buf total grew by {human_bytes(doc['growth_bytes'])} ({doc['growth_bytes']} bytes), "
            f"more than --fail-on-growth {human_bytes(args.fail_on_growth)}",
            file=sys.stderr,
        )
        return EXIT_GROWTH
    return 0
