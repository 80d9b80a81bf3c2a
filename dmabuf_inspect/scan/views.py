"""Tables derived from a snapshot, computed once here for every front end (CLI, JSON, TUI, export)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from dmabuf_inspect.model import Buffer, Snapshot
from dmabuf_inspect.textsafe import escape


class ExporterTotal(NamedTuple):
    """The buffers of one exporter: how many, how large, and how much of it only the kernel holds."""

    exporter: str
    exporter_class: str
    buffers: int
    bytes: int
    userspace_bytes: int
    kernel_only_bytes: int | None  # None when the snapshot cannot tell (debugfs bufinfo unread)


def exporter_totals(snap: Snapshot) -> list[ExporterTotal]:
    """One row per (exporter, class), largest first, then by exporter name."""
    acc: dict[tuple[str, str], list[int]] = {}
    for b in snap.buffers:
        row = acc.setdefault((b.exporter, b.exporter_class), [0, 0, 0, 0])
        row[0] += 1
        row[1] += b.size_bytes
        row[2 if b.holders else 3] += b.size_bytes
    known = snap.totals.kernel_only_bytes is not None
    totals = [
        ExporterTotal(e, c, n, size, user, kern if known else None) for (e, c), (n, size, user, kern) in acc.items()
    ]
    return sorted(totals, key=lambda t: (-t.bytes, t.exporter, t.exporter_class))


Mix = tuple[tuple[str, int], ...]  # (exporter, buffers), most buffers first, ties by exporter name


def mix_of(buffers: Iterable[Buffer]) -> Mix:
    counts: dict[str, int] = {}
    for b in buffers:
        counts[b.exporter] = counts.get(b.exporter, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def exporter_mix(snap: Snapshot) -> dict[int, Mix]:
    """pid -> the exporters of the buffers it holds (by fd or mapping)."""
    held: dict[int, list[Buffer]] = {}
    for b in snap.buffers:
        for h in b.holders:
            held.setdefault(h.pid, []).append(b)
    return {pid: mix_of(bufs) for pid, bufs in held.items()}


def mix_text(mix: Mix) -> str:
    """'udmabuf:3 system:1', escaped for a terminal."""
    return " ".join(f"{escape(e)}:{n}" for e, n in mix)
