"""Per-process table: the dma-bufs each process holds by fd or mapping, with Rss and Pss.

Rss is the sum of every buffer a process holds; Pss divides each buffer by the number of
processes holding it (as Android's dmabuf_dump does). --pid and --exporter keep the buffers
that match (both: both must); a filter that matches nothing says so and exits 1.
"""

from __future__ import annotations

import argparse

from dmabuf_inspect.cli.filters import add_filter_arguments, filtered_snapshot
from dmabuf_inspect.cli.tables import human_bytes, render_csv, render_table
from dmabuf_inspect.scan.notes import no_buffers_text, print_notes
from dmabuf_inspect.scan.views import PROCESS_SORTS, mix_text, plural, process_rows
from dmabuf_inspect.textsafe import escape

NAME = "list"
SORT_KEYS = tuple(PROCESS_SORTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default="rss", help="default: %(default)s (largest first)")
    add_filter_arguments(parser, pid_help="only this process (repeatable)")
    parser.add_argument("--csv", action="store_true", help="CSV with exact byte counts")


def run(args: argparse.Namespace) -> int:
    snap = filtered_snapshot(args)
    rows = process_rows(snap, args.sort)
    headers = ["PID", "USER", "COMM", "BUFS", "RSS", "PSS", "EXPORTERS", "CMDLINE"]
    if args.csv:
        csv_headers = [h.lower() for h in headers[:4]] + ["rss_bytes", "pss_bytes", "exporters", "cmdline"]
        cells: list[list[str | int | None]] = [
            [p.pid, escape(p.user), escape(p.comm), p.buffers, p.rss_bytes, p.pss_bytes, mix_text(m), escape(p.cmdline)]
            for p, m in rows
        ]
        print(render_csv(csv_headers, cells), end="")
    elif not snap.buffers:
        print(no_buffers_text(snap))
    else:
        table = [
            [
                str(p.pid),
                escape(p.user),
                escape(p.comm),
                str(p.buffers),
                human_bytes(p.rss_bytes),
                human_bytes(p.pss_bytes),
                mix_text(m),
                escape(p.cmdline)[:80],
            ]
            for p, m in rows
        ]
        print(render_table(headers, table, right=frozenset({0, 3, 4, 5})))
        t = snap.totals
        kernel_only = "" if t.kernel_only_bytes is None else f", kernel-only {human_bytes(t.kernel_only_bytes)}"
        print(
            f"\n{plural(t.buffers, 'buffer')}, {human_bytes(t.bytes)} in all; held in userspace "
            f"{human_bytes(t.userspace_bytes)}{kernel_only}"
        )
    print_notes(snap)
    return 0
