"""Per-buffer table with every holder, then totals per exporter.

HOLDERS lists pid:fds for fds and pid:m<N> for N mappings. KREFS are references that no
process holds by fd or mapping (the kernel's, or those of processes we may not read).
--pid and --exporter keep the buffers that match; a filter that matches nothing exits 1.
"""

from __future__ import annotations

import argparse

from dmabuf_inspect.cli.filters import add_filter_arguments, filtered_snapshot
from dmabuf_inspect.cli.tables import human_bytes, render_csv, render_table
from dmabuf_inspect.model import Buffer
from dmabuf_inspect.scan.notes import no_buffers_text, print_notes
from dmabuf_inspect.scan.views import BUFFER_SORTS, exporter_totals, sorted_buffers
from dmabuf_inspect.textsafe import escape

NAME = "buffers"
SORT_KEYS = tuple(BUFFER_SORTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default="size", help="default: %(default)s (largest first)")
    add_filter_arguments(parser, pid_help="only buffers this process holds (repeatable)")
    parser.add_argument("--csv", action="store_true", help="CSV of the buffers, exact byte counts")


def holders_text(b: Buffer) -> str:
    parts = []
    for h in b.holders:
        bits = [",".join(str(fd) for fd in h.fds)] if h.fds else []
        if h.maps:
            bits.append(f"m{h.maps}")
        parts.append(f"{h.pid}:{'+'.join(bits)}")
    return " ".join(parts) or "(kernel)"


def run(args: argparse.Namespace) -> int:
    snap = filtered_snapshot(args)
    buffers = sorted_buffers(snap.buffers, args.sort)
    if args.csv:
        print(
            render_csv(
                [
                    "inode",
                    "size_bytes",
                    "exporter",
                    "class",
                    "name",
                    "count",
                    "kernel_refs",
                    "holders",
                    "attachments",
                    "fences",
                ],
                [
                    [
                        b.inode,
                        b.size_bytes,
                        escape(b.exporter),
                        b.exporter_class,
                        escape(b.name, none=""),
                        b.count,
                        b.kernel_refs,
                        holders_text(b),
                        " ".join(escape(a) for a in b.attachments),
                        len(b.fences),
                    ]
                    for b in buffers
                ],
            ),
            end="",
        )
        print_notes(snap)
        return 0
    if not buffers:
        print(no_buffers_text(snap))
        print_notes(snap)
        return 0
    rows = [
        [
            str(b.inode),
            human_bytes(b.size_bytes) + ("?" if b.size_source == "maps" else ""),
            escape(b.exporter),
            b.exporter_class,
            escape(b.name),
            "-" if b.count is None else str(b.count),
            "-" if b.kernel_refs is None else str(b.kernel_refs),
            " ".join(escape(a) for a in b.attachments) or "-",
            str(len(b.fences)) if b.fences else "-",
            holders_text(b),
        ]
        for b in buffers
    ]
    print(
        render_table(
            ["INODE", "SIZE", "EXPORTER", "CLASS", "NAME", "COUNT", "KREFS", "ATTACHED", "FENCES", "HOLDERS"],
            rows,
            right=frozenset({0, 1, 5, 6}),
        )
    )
    print()
    trows = [
        [
            escape(t.exporter),
            t.exporter_class,
            str(t.buffers),
            human_bytes(t.bytes),
            human_bytes(t.userspace_bytes),
            human_bytes(t.kernel_only_bytes),
        ]
        for t in exporter_totals(snap)
    ]
    print(
        render_table(
            ["EXPORTER", "CLASS", "BUFS", "BYTES", "USERSPACE", "KERNEL-ONLY"], trows, right=frozenset({2, 3, 4})
        )
    )
    print_notes(snap)
    return 0
