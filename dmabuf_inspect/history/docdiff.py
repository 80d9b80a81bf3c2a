"""What changed between two `dump` documents or two captures: the document `diff --json`
prints (schema `dmabuf-inspect-diff/1`, schemas/diff-1.schema.json).

    before = side_from_document(json.load(f))        # a `dump` document
    after = side_from_snapshot(collect(Roots.from_tree("after/")))   # a capture
    doc = diff_sides(before, after)
    doc["growth_bytes"] > limit                      # `--fail-on-growth`

A process is (pid, start_ticks): a pid that a restart gave to another process is two entries,
one gone and one new, never merged. Documents without start_ticks (older dumps) fall back to
(pid, comm). A buffer is its inode with its size and exporter: the same inode with another size
or exporter is another buffer (the kernel reused the inode number).

This is not scan/diff.py, the TUI's change marks between two refreshes: that one keys processes
by pid alone and marks growth per row; this one compares two documents whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.textsafe import json_name

SCHEMA_ID = "dmabuf-inspect-diff/1"
SNAPSHOT_SCHEMA = "dmabuf-inspect/1"

Key = tuple[int, Any]  # (pid, start_ticks) or (pid, "comm:" + comm) without start_ticks


class DiffHolder(NamedTuple):
    pid: int
    start_ticks: int | None
    fds: tuple[int, ...]
    maps: int


class DiffBuffer(NamedTuple):
    inode: int
    size_bytes: int
    exporter: str
    name: str | None
    holders: tuple[DiffHolder, ...]


class DiffProcess(NamedTuple):
    pid: int
    start_ticks: int | None
    comm: str
    bytes: int
    buffers: int


@dataclass(frozen=True, slots=True)
class Side:
    """One document, reduced to what the diff compares."""

    kernel: str
    taken_at: float | None
    buffers: Mapping[int, DiffBuffer]
    processes: tuple[DiffProcess, ...]
    kernel_only_known: bool  # bufinfo was read: a buffer with no holder is kernel-only
    total_bytes: int
    total_buffers: int
    device_bytes: int = 0  # of total_bytes: device memory (class vfio), never RAM; 0 in older dumps


class DocumentError(ValueError):
    """Not a `dump` document this version reads."""


def side_from_snapshot(snap: Snapshot) -> Side:
    starts = {p.pid: p.start_ticks for p in snap.processes}
    buffers = {
        b.inode: DiffBuffer(
            b.inode,
            b.size_bytes,
            b.exporter,
            b.name,
            tuple(DiffHolder(h.pid, starts.get(h.pid), tuple(h.fds), h.maps) for h in b.holders),
        )
        for b in snap.buffers
    }
    processes = tuple(DiffProcess(p.pid, p.start_ticks, p.comm, p.rss_bytes, p.buffers) for p in snap.processes)
    return Side(
        snap.kernel,
        snap.taken_at,
        buffers,
        processes,
        snap.totals.kernel_only_bytes is not None,
        snap.totals.bytes,
        snap.totals.buffers,
        snap.totals.device_bytes,
    )


def side_from_document(doc: Any) -> Side:
    """A `dump` document (schema dmabuf-inspect/1). Raises DocumentError."""
    if not isinstance(doc, dict) or doc.get("schema") != SNAPSHOT_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise DocumentError(f"not a `dmabuf-inspect dump` document (schema {found!r}, expected {SNAPSHOT_SCHEMA!r})")
    try:
        processes = tuple(
            DiffProcess(
                int(p["pid"]), p.get("start_ticks"), str(p.get("comm") or ""), int(p["rss_bytes"]), int(p["buffers"])
            )
            for p in doc["processes"]
        )
        starts = {p.pid: p.start_ticks for p in processes}
        buffers = {}
        for b in doc["buffers"]:
            holders = tuple(
                DiffHolder(int(h["pid"]), starts.get(int(h["pid"])), tuple(h.get("fds", ())), int(h.get("maps", 0)))
                for h in b.get("holders", ())
            )
            buffers[int(b["inode"])] = DiffBuffer(
                int(b["inode"]), int(b["size_bytes"]), str(b["exporter"]), b.get("name"), holders
            )
        totals = doc["totals"]
        return Side(
            str(doc.get("kernel", "unknown")),
            doc.get("taken_at"),
            buffers,
            processes,
            totals.get("kernel_only_bytes") is not None,
            int(totals["bytes"]),
            int(totals["buffers"]),
            int(totals.get("device_bytes", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DocumentError(f"a `dump` document with a missing or wrong field ({type(exc).__name__}: {exc})") from None


def _keyer(before: Side, after: Side) -> Any:
    """(pid, start_ticks) when both documents carry start times, else (pid, comm)."""
    with_ticks = all(p.start_ticks is not None for p in (*before.processes, *after.processes))
    comm_of = {
        **{(0, p.pid): p.comm for p in before.processes},
        **{(1, p.pid): p.comm for p in after.processes},
    }

    def key(side: int, pid: int, start_ticks: int | None) -> Key:
        if with_ticks:
            return (pid, start_ticks)
        return (pid, "comm:" + comm_of.get((side, pid), ""))

    return key


def _holders_json(holders: tuple[DiffHolder, ...]) -> list[dict[str, Any]]:
    return [{"pid": h.pid, "start_ticks": h.start_ticks, "fds": list(h.fds), "maps": h.maps} for h in holders]


def _buffer_json(b: DiffBuffer, kernel_only: bool | None) -> dict[str, Any]:
    return {
        "inode": b.inode,
        "size_bytes": b.size_bytes,
        "exporter": b.exporter,
        "name": json_name(b.name)[0],
        "holders": _holders_json(b.holders),
        "kernel_only": kernel_only,
    }


def diff_sides(before: Side, after: Side) -> dict[str, Any]:
    """The diff document of two sides; `growth_bytes` is the change of the total."""
    key = _keyer(before, after)

    def holder_set(side: int, b: DiffBuffer) -> frozenset[tuple[Key, tuple[int, ...], int]]:
        return frozenset((key(side, h.pid, h.start_ticks), h.fds, h.maps) for h in b.holders)

    def kernel_only(side: Side, b: DiffBuffer) -> bool | None:
        return (not b.holders) if side.kernel_only_known else None

    new, gone, changed, new_kernel_only = [], [], [], []
    for inode, b in after.buffers.items():
        old = before.buffers.get(inode)
        ko = kernel_only(after, b)
        if old is None or (old.size_bytes, old.exporter) != (b.size_bytes, b.exporter):
            new.append(_buffer_json(b, ko))
            if ko:
                new_kernel_only.append({**_buffer_json(b, ko), "was": "new"})
            continue
        if holder_set(0, old) != holder_set(1, b):
            changed.append(
                {
                    **_buffer_json(b, ko),
                    "holders_before": _holders_json(old.holders),
                    "kernel_only_before": kernel_only(before, old),
                }
            )
            if ko and old.holders:
                new_kernel_only.append({**_buffer_json(b, ko), "was": "held"})
    for inode, old in before.buffers.items():
        b2 = after.buffers.get(inode)
        if b2 is None or (old.size_bytes, old.exporter) != (b2.size_bytes, b2.exporter):
            gone.append(_buffer_json(old, kernel_only(before, old)))

    procs: dict[Key, dict[str, Any]] = {}
    for side, which in ((0, before), (1, after)):
        for p in which.processes:
            entry = procs.setdefault(
                key(side, p.pid, p.start_ticks),
                {
                    "pid": p.pid,
                    "start_ticks": p.start_ticks,
                    "comm": json_name(p.comm)[0],
                    "before_bytes": 0,
                    "after_bytes": 0,
                    "before_buffers": 0,
                    "after_buffers": 0,
                    "in_before": False,
                    "in_after": False,
                },
            )
            prefix = "after" if side else "before"
            entry[f"{prefix}_bytes"] = p.bytes
            entry[f"{prefix}_buffers"] = p.buffers
            entry[f"in_{prefix}"] = True
            if side:
                entry["comm"] = json_name(p.comm)[0]
    processes = []
    for entry in procs.values():
        entry["delta_bytes"] = entry["after_bytes"] - entry["before_bytes"]
        entry["delta_buffers"] = entry["after_buffers"] - entry["before_buffers"]
        if entry["delta_bytes"] or entry["delta_buffers"] or not (entry["in_before"] and entry["in_after"]):
            processes.append(entry)
    processes.sort(key=lambda e: (-e["delta_bytes"], -e["delta_buffers"], e["pid"]))

    def ko_bytes(side: Side) -> int | None:
        if not side.kernel_only_known:
            return None
        return sum(b.size_bytes for b in side.buffers.values() if not b.holders)

    ko_before, ko_after = ko_bytes(before), ko_bytes(after)
    delta = after.total_bytes - before.total_bytes
    for bufs in (new, gone, changed):
        bufs.sort(key=lambda b: (-b["size_bytes"], b["inode"]))
    return {
        "schema": SCHEMA_ID,
        "before": {
            "kernel": before.kernel,
            "taken_at": before.taken_at,
            "bytes": before.total_bytes,
            "buffers": before.total_buffers,
            "device_bytes": before.device_bytes,
        },
        "after": {
            "kernel": after.kernel,
            "taken_at": after.taken_at,
            "bytes": after.total_bytes,
            "buffers": after.total_buffers,
            "device_bytes": after.device_bytes,
        },
        "delta_bytes": delta,
        "delta_buffers": after.total_buffers - before.total_buffers,
        "delta_kernel_only_bytes": None if ko_before is None or ko_after is None else ko_after - ko_before,
        "delta_device_bytes": after.device_bytes - before.device_bytes,
        "growth_bytes": max(delta, 0),
        "new": new,
        "gone": gone,
        "changed": changed,
        "new_kernel_only": new_kernel_only,
        "processes": processes,
    }
