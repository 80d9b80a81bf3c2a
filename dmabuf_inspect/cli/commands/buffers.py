"""Per-buffer table with every holder, then totals per exporter.

HOLDERS lists pid:fds for fds and pid:m<N> for N mappings; "(kernel)" when no process holds the
buffer, "?" and why when one may hold it unseen (fds not tied to a buffer, maps not read,
processes that could not be read). KREFS are references that no process holds by fd or mapping
(the kernel's, or those of processes we may not read).
Where some buffers are device memory (a PCI BAR exported by vfio-pci), DEVICE names the PCI device
each lives in, or "unknown" when nothing tells, and the exporter table marks those exporters.
--pid and --exporter keep the buffers that match; a filter that matches nothing exits 1.
"""

from __future__ import annotations

import argparse

from dmabuf_inspect.cli.filters import add_filter_arguments, filtered_snapshot
from dmabuf_inspect.cli.tables import human_bytes, render_csv, render_table
from dmabuf_inspect.exporters import is_device_memory
from dmabuf_inspect.model import UNKNOWN_DEVICE, Buffer
from dmabuf_inspect.scan.notes import no_buffers_text, print_notes
from dmabuf_inspect.scan.views import BUFFER_SORTS, ExporterTotal, exporter_totals, sorted_buffers, unknown_holders_text
from dmabuf_inspect.textsafe import escape

NAME = "buffers"
SORT_KEYS = tuple(BUFFER_SORTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default="size", help="default: %(default)s (largest first)")
    add_filter_arguments(parser, pid_help="only buffers this process holds (repeatable)")
    parser.add_argument("--csv", action="store_true", help="CSV of the buffers, exact byte counts")


def holders_text(b: Buffer, unknown: str = "?") -> str:
    """'812:23,24+m1 1204:9'; '(kernel)' only when no process holds it (Buffer.kernel_only True),
    `unknown` (unknown_holders_text) when a holder may have gone unseen."""
    parts = []
    for h in b.holders:
        bits = [",".join(str(fd) for fd in h.fds)] if h.fds else []
        if h.maps:
            bits.append(f"m{h.maps}")
        parts.append(f"{h.pid}:{'+'.join(bits)}")
    if parts:
        return " ".join(parts)
    return "(kernel)" if b.holders_known else unknown


def _userspace_text(t: ExporterTotal) -> str:
    """USERSPACE of an exporter: a lower bound ('≥') where some of its buffers may be held unseen."""
    size = human_bytes(t.userspace_bytes)
    return "≥" + size if t.kernel_only_bytes is None and t.userspace_bytes < t.bytes else size


def _device_text(b: Buffer, devices: dict[int, str]) -> str:
    """DEVICE: the PCI device a device-memory buffer lives in (snap.device_memory), `unknown` when
    nothing tells; '-' for a buffer that is not device memory."""
    if b.inode in devices:
        return escape(devices[b.inode])
    return UNKNOWN_DEVICE if is_device_memory(b.exporter) else "-"


def run(args: argparse.Namespace) -> int:
    snap = filtered_snapshot(args)
    buffers = sorted_buffers(snap.buffers, args.sort)
    unknown = unknown_holders_text(snap)
    device = snap.totals.device_bytes > 0  # issue 16: which device, and device memory marked
    devices = {d.inode: d.pci_address for d in snap.device_memory}
    if args.csv:
        headers = [
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
        ]
        cells: list[list[str | int | None]] = [
            [
                b.inode,
                b.size_bytes,
                escape(b.exporter),
                b.exporter_class,
                escape(b.name, none=""),
                b.count,
                b.kernel_refs,
                holders_text(b, unknown),
                " ".join(escape(a) for a in b.attachments),
                len(b.fences),
            ]
            for b in buffers
        ]
        if device:
            headers.append("device")
            for cell, b in zip(cells, buffers, strict=True):
                text = _device_text(b, devices)
                cell.append("" if text == "-" else text)
        print(render_csv(headers, cells), end="")
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
            holders_text(b, unknown),
        ]
        for b in buffers
    ]
    headers = ["INODE", "SIZE", "EXPORTER", "CLASS", "NAME", "COUNT", "KREFS", "ATTACHED", "FENCES", "HOLDERS"]
    right = frozenset({0, 1, 5, 6})
    if device:
        headers.insert(4, "DEVICE")
        for row, b in zip(rows, buffers, strict=True):
            row.insert(4, _device_text(b, devices))
        right = frozenset({0, 1, 6, 7})
    print(render_table(headers, rows, right=right))
    print()
    totals = exporter_totals(snap)
    trows = [
        [
            escape(t.exporter),
            t.exporter_class,
            str(t.buffers),
            human_bytes(t.bytes),
            _userspace_text(t),
            "?" if t.kernel_only_bytes is None else human_bytes(t.kernel_only_bytes),
        ]
        for t in totals
    ]
    theaders = ["EXPORTER", "CLASS", "BUFS", "BYTES", "USERSPACE", "KERNEL-ONLY"]
    if device:
        theaders.append("MEMORY")
        for row, t in zip(trows, totals, strict=True):
            row.append("device memory, not RAM" if is_device_memory(t.exporter) else "")
    print(render_table(theaders, trows, right=frozenset({2, 3, 4})))
    print_notes(snap)
    return 0
