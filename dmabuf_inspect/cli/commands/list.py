"""Per-process table: the dma-bufs each process holds by fd or mapping, with Rss and Pss.

Rss is the sum of every buffer a process holds; Pss divides each buffer by the number of
processes holding it (as Android's dmabuf_dump does). A process with dma-buf fds that could not be
tied to a buffer (before 5.3) shows BUFS as "0+2?" and RSS/PSS as lower bounds ("≥4.0 MiB", or "?").
Where some buffers are device memory (a PCI BAR exported by vfio-pci), RSS and PSS count RAM only
and DEV the device memory; the CSV then has rss_bytes and pss_bytes of all of it, as the JSON, and
device_rss_bytes and device_pss_bytes last. --pid and --exporter keep the buffers
that match (both: both must); a filter that matches nothing says so and exits 1.

--by cgroup|user|comm groups the table: per group, its processes, the buffers they hold and their
bytes each counted once, Pss, and SHARED, the buffers that processes of another group hold too (a
shared buffer is in the BYTES of each group; Pss adds up). With device memory, BYTES and PSS are
RAM and DEV the device memory each group holds; the CSV then has bytes and pss_bytes of all of it,
and device_bytes and device_pss_bytes last.
"""

from __future__ import annotations

import argparse
import sys

from dmabuf_inspect.cli.filters import add_filter_arguments, filtered_snapshot, scan_and_filter
from dmabuf_inspect.cli.main import keep
from dmabuf_inspect.cli.tables import human_bytes, render_csv, render_table
from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.notes import no_buffers_text, print_notes
from dmabuf_inspect.scan.views import (
    PROCESS_SORTS,
    buffers_cell,
    lower_bound_bytes_text,
    mix_text,
    plural,
    plural_word,
    process_rows,
)
from dmabuf_inspect.textsafe import escape

NAME = "list"
SORT_KEYS = tuple(PROCESS_SORTS)
GROUPS = ("cgroup", "user", "comm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default=None, help="default: rss (largest first)")
    add_filter_arguments(parser, pid_help="only this process (repeatable)")
    parser.add_argument("--csv", action="store_true", help="CSV with exact byte counts")
    parser.add_argument(
        "--by",
        choices=GROUPS,
        help="one row per cgroup (v2 path), user or command name: processes, buffers and bytes each "
        "counted once per group, Pss, and what other groups hold too (largest first; not with --sort)",
    )


def run(args: argparse.Namespace) -> int:
    if args.by is not None:
        if args.sort is not None:
            raise UsageError(f"--sort and --by {args.by} cannot be combined: groups are listed largest first")
        return _run_by(args)
    args.sort = args.sort or "rss"
    snap = filtered_snapshot(args)
    keep(snap)
    device = snap.totals.device_bytes > 0  # RSS and PSS are then RAM, DEV the device memory (issue 16)
    rows = process_rows(snap, args.sort, ram=device)
    headers = ["PID", "USER", "COMM", "BUFS", "RSS", "PSS", "EXPORTERS", "CMDLINE"]
    unjoined = any(p.unjoined_fds for p in snap.processes)
    if args.csv:
        csv_headers = [h.lower() for h in headers[:4]] + ["rss_bytes", "pss_bytes", "exporters", "cmdline"]
        cells: list[list[str | int | None]] = [
            [p.pid, escape(p.user), escape(p.comm), p.buffers, p.rss_bytes, p.pss_bytes, mix_text(m), escape(p.cmdline)]
            for p, m in rows
        ]
        if unjoined:  # buffers, rss_bytes and pss_bytes are lower bounds where this is not 0
            csv_headers.append("unjoined_fds")
            for cell, (p, _) in zip(cells, rows, strict=True):
                cell.append(len(p.unjoined_fds))
        if device:  # as in the JSON: rss_bytes and pss_bytes are all of it, these their device part
            csv_headers += ["device_rss_bytes", "device_pss_bytes"]
            for cell, (p, _) in zip(cells, rows, strict=True):
                cell += [p.device_rss_bytes, p.device_pss_bytes]
        print(render_csv(csv_headers, cells), end="")
    elif not snap.buffers and not snap.processes:
        print(no_buffers_text(snap))
    else:
        table = [
            [
                str(p.pid),
                escape(p.user),
                escape(p.comm),
                buffers_cell(p),
                lower_bound_bytes_text(p.ram_rss_bytes if device else p.rss_bytes, p),
                lower_bound_bytes_text(p.ram_pss_bytes if device else p.pss_bytes, p),
                mix_text(m),
                escape(p.cmdline)[:80],
            ]
            for p, m in rows
        ]
        right = frozenset({0, 3, 4, 5})
        if device:
            headers.insert(6, "DEV")
            for row, (p, _) in zip(table, rows, strict=True):
                row.insert(6, human_bytes(p.device_rss_bytes))
            right |= {6}
        print(render_table(headers, table, right=right))
        print("\n" + _footer(snap, unjoined))
    print_notes(snap)
    return 0


def _run_by(args: argparse.Namespace) -> int:
    """`list --by cgroup|user|comm` (issue 15): scan.cgroups' totals, one row per group."""
    from dmabuf_inspect.scan.cgroups import GroupTotal, group_totals, unit_text

    by: str = args.by
    whole, snap = scan_and_filter(args, cgroups=by == "cgroup")
    # each holder's group from the whole scan: a buffer kept by --pid is also another group's
    group_of = {p.pid: p.cgroup if by == "cgroup" else p.user if by == "user" else p.comm for p in whole.processes}
    rows: list[GroupTotal] = group_totals(snap, group_of.get)
    if args.pid:  # only the groups of the processes asked for
        asked = set(args.pid)
        rows = [r for r in rows if asked.intersection(r.pids)]
    units = [unit_text(r.key) for r in rows] if by == "cgroup" else []
    device = snap.totals.device_bytes > 0  # BYTES and PSS are then RAM, DEV the device memory (issue 16)
    keys = ["(unknown)" if r.key is None else escape(r.key) for r in rows]
    if args.csv:
        headers = [by, *(["unit"] if units else []), "processes", "buffers", "bytes", "pss_bytes"]
        cells: list[list[str | int | None]] = [
            [
                None if r.key is None else escape(r.key),
                *([None if units[i] is None else escape(units[i])] if units else []),
                r.processes,
                r.buffers,
                r.bytes,
                r.pss_bytes,
                r.shared_buffers,
                r.shared_bytes,
            ]
            for i, r in enumerate(rows)
        ]
        headers += ["shared_buffers", "shared_bytes"]
        if device:  # as in the JSON: bytes and pss_bytes are all of it, these their device part
            headers += ["device_bytes", "device_pss_bytes"]
            for cell, r in zip(cells, rows, strict=True):
                cell += [r.device_bytes, r.device_pss_bytes]
        print(render_csv(headers, cells), end="")
    elif not snap.processes:
        print(no_buffers_text(snap))
    else:
        table = [
            [
                keys[i],
                *([escape(units[i], none="-")] if units else []),
                str(r.processes),
                str(r.buffers),
                human_bytes(r.bytes - r.device_bytes if device else r.bytes),
                human_bytes(r.pss_bytes - r.device_pss_bytes if device else r.pss_bytes),
                *([human_bytes(r.device_bytes)] if device else []),
                f"{human_bytes(r.shared_bytes)} in {plural(r.shared_buffers, 'buffer')}" if r.shared_buffers else "-",
            ]
            for i, r in enumerate(rows)
        ]
        headers = [by.upper(), *(["UNIT"] if units else []), "PROCS", "BUFS", "BYTES", "PSS"]
        headers += ["DEV", "SHARED"] if device else ["SHARED"]
        first = 2 if units else 1
        print(render_table(headers, table, right=frozenset(range(first, first + (5 if device else 4)))))
        print(
            f"\n{plural(len(rows), by)}. SHARED: buffers that processes of another {by} hold too, so they are "
            f"in the BYTES of each; PSS (each buffer's size over its holders) adds up over {plural_word(2, by)}."
        )
        if device:
            print("BYTES and PSS are RAM; DEV is device memory (a PCI BAR exported by vfio-pci), never RAM.")
    if by == "cgroup" and snap.sources.get("cgroup", "ok") != "ok":
        print(
            f"dmabuf-inspect: cgroups unknown: {escape(snap.sources['cgroup'].removeprefix('unavailable: '))}",
            file=sys.stderr,
        )
    print_notes(snap)
    return 0


def _footer(snap: Snapshot, unjoined: bool) -> str:
    t = snap.totals
    user = human_bytes(t.userspace_bytes)
    if unjoined:  # fds not tied to a buffer hold bytes that no buffer was counted for
        user = f"≥{user}" if t.userspace_bytes else "?"
    if t.kernel_only_bytes is not None:
        kernel_only = f", kernel-only {human_bytes(t.kernel_only_bytes)}"
    elif snap.sources.get("bufinfo") == "ok":
        kernel_only = ", kernel-only unknown"
    else:
        kernel_only = ""
    device = f"; device memory (not RAM) {human_bytes(t.device_bytes)} in {plural(t.device_buffers, 'buffer')}"
    return f"{plural(t.buffers, 'buffer')}, {human_bytes(t.bytes)} in all; held in userspace {user}{kernel_only}" + (
        device if t.device_bytes else ""
    )
