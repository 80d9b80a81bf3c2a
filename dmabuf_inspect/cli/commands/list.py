"""Per-process table: the dma-bufs each process holds by fd or mapping, with Rss and Pss.

Rss is the sum of every buffer a process holds; Pss divides each buffer by the number of
processes holding it (as Android's dmabuf_dump does).
"""

from __future__ import annotations

import argparse

from dmabuf_inspect.cli.tables import human_bytes, render_csv, render_table
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.notes import no_buffers_text, print_notes
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import exporter_mix, mix_text
from dmabuf_inspect.textsafe import escape

NAME = "list"
SORT_KEYS = ("rss", "pss", "buffers", "pid", "comm", "user")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default="rss", help="default: %(default)s (largest first)")
    parser.add_argument("--pid", type=int, action="append", metavar="PID", help="only this process (repeatable)")
    parser.add_argument(
        "--exporter",
        action="append",
        metavar="NAME",
        help="only buffers of this exporter or class (repeatable), e.g. udmabuf, system, heap, drm",
    )
    parser.add_argument("--csv", action="store_true", help="CSV with exact byte counts")


def filter_snapshot(snap: Snapshot, pids: list[int] | None, exporters: list[str] | None) -> Snapshot:
    """The snapshot restricted to some processes and exporters; Rss/Pss are recomputed."""
    from dataclasses import replace

    if not pids and not exporters:
        return snap
    wanted = set(exporters or ())
    buffers = [
        b
        for b in snap.buffers
        if (not wanted or b.exporter in wanted or b.exporter_class in wanted)
        and (not pids or any(h.pid in pids for h in b.holders))
    ]
    per_pid: dict[int, list[tuple[int, int]]] = {}
    for b in buffers:
        for h in b.holders:
            per_pid.setdefault(h.pid, []).append((b.size_bytes, len(b.holders)))
    processes = []
    for p in snap.processes:
        held = per_pid.get(p.pid)
        if not held or (pids and p.pid not in pids):
            continue
        processes.append(
            replace(
                p,
                buffers=len(held),
                rss_bytes=sum(s for s, _ in held),
                pss_bytes=sum(s // n for s, n in held),
            )
        )
    return replace(snap, buffers=tuple(buffers), processes=tuple(processes))


def run(args: argparse.Namespace) -> int:
    snap = filter_snapshot(collect(args.roots), args.pid, args.exporter)
    key = {
        "rss": lambda p: (-p.rss_bytes, p.pid),
        "pss": lambda p: (-p.pss_bytes, p.pid),
        "buffers": lambda p: (-p.buffers, p.pid),
        "pid": lambda p: (p.pid,),
        "comm": lambda p: (p.comm, p.pid),
        "user": lambda p: (p.user, p.pid),
    }[args.sort]
    processes = sorted(snap.processes, key=key)
    mix = {pid: mix_text(m) for pid, m in exporter_mix(snap).items()}
    headers = ["PID", "USER", "COMM", "BUFS", "RSS", "PSS", "EXPORTERS", "CMDLINE"]
    if args.csv:
        print(
            render_csv(
                [h.lower() for h in headers[:4]] + ["rss_bytes", "pss_bytes", "exporters", "cmdline"],
                [
                    [
                        p.pid,
                        escape(p.user),
                        escape(p.comm),
                        p.buffers,
                        p.rss_bytes,
                        p.pss_bytes,
                        mix.get(p.pid, ""),
                        escape(p.cmdline),
                    ]
                    for p in processes
                ],
            ),
            end="",
        )
    elif not snap.buffers:
        print(no_buffers_text(snap))
    else:
        rows = [
            [
                str(p.pid),
                escape(p.user),
                escape(p.comm),
                str(p.buffers),
                human_bytes(p.rss_bytes),
                human_bytes(p.pss_bytes),
                mix.get(p.pid, ""),
                escape(p.cmdline)[:80],
            ]
            for p in processes
        ]
        print(render_table(headers, rows, right=frozenset({0, 3, 4, 5})))
        t = snap.totals
        kernel_only = "" if t.kernel_only_bytes is None else f", kernel-only {human_bytes(t.kernel_only_bytes)}"
        print(
            f"\n{t.buffers} buffers, {human_bytes(t.bytes)} in all; held in userspace "
            f"{human_bytes(t.userspace_bytes)}{kernel_only}"
        )
    print_notes(snap)
    return 0
