"""What changed between two snapshots: new, gone and grown buffers and processes.

This is the first step toward leak detection: a process whose Rss keeps growing, or a buffer
that keeps gaining references, is what a user chasing a leak looks for. No textual here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot

KERNEL_PID = -1  # the pseudo-process that holds the buffers only the kernel holds (Buffer.kernel_only)
# The pseudo-process of the buffers no process was seen holding where one may hold them unseen
# (Buffer.kernel_only None: fds that could not be tied to a buffer, before 5.3). Never shown as
# the kernel's.
UNSEEN_PID = -2
PSEUDO_PIDS = (KERNEL_PID, UNSEEN_PID)


class Change(enum.Enum):
    SAME = "same"
    NEW = "new"
    GREW = "grew"
    GONE = "gone"

    @property
    def mark(self) -> str:
        """The one-cell mark shown at the start of a row."""
        return _MARKS[self]

    @property
    def order(self) -> int:
        """Sort order of the mark column: the interesting rows first."""
        return _ORDER[self]


_MARKS = {Change.SAME: " ", Change.NEW: "+", Change.GREW: "^", Change.GONE: "-"}
_ORDER = {Change.NEW: 0, Change.GREW: 1, Change.GONE: 2, Change.SAME: 3}


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """Changes since the previous snapshot; only entries that are not SAME are present."""

    first: bool  # no previous snapshot: nothing is marked
    buffers: Mapping[int, Change] = field(default_factory=dict)  # inode -> change
    processes: Mapping[int, Change] = field(default_factory=dict)  # pid -> change
    holdings: Mapping[tuple[int, int], Change] = field(default_factory=dict)  # (pid, inode) -> change
    gone_buffers: tuple[Buffer, ...] = ()  # as the previous snapshot saw them
    gone_processes: tuple[Process, ...] = ()
    gone_holdings: Mapping[int, tuple[tuple[Buffer, Holder | None], ...]] = field(default_factory=dict)

    def buffer(self, inode: int) -> Change:
        return self.buffers.get(inode, Change.SAME)

    def process(self, pid: int) -> Change:
        return self.processes.get(pid, Change.SAME)

    def holding(self, pid: int, inode: int) -> Change:
        return self.holdings.get((pid, inode), Change.SAME)


def holdings(snap: Snapshot) -> dict[int, dict[int, tuple[Buffer, Holder | None]]]:
    """pid -> inode -> (buffer, holder); buffers no process was seen holding go to KERNEL_PID
    (only the kernel holds them) or UNSEEN_PID (a process may hold them unseen)."""
    out: dict[int, dict[int, tuple[Buffer, Holder | None]]] = {}
    for b in snap.buffers:
        if not b.holders:
            out.setdefault(KERNEL_PID if b.holders_known else UNSEEN_PID, {})[b.inode] = (b, None)
        for h in b.holders:
            out.setdefault(h.pid, {})[b.inode] = (b, h)
    return out


def _refs(b: Buffer, h: Holder | None) -> int:
    if h is None:
        return b.count or 0
    return len(h.fds) + h.maps


def _buffer_grew(old: Buffer, new: Buffer) -> bool:
    return (
        new.size_bytes > old.size_bytes
        or (new.count or 0) > (old.count or 0)
        or new.fd_refs + new.map_refs > old.fd_refs + old.map_refs
    )


def _process_grew(old: Process, new: Process) -> bool:
    return new.rss_bytes > old.rss_bytes or new.buffers > old.buffers


def _same_process(old: Process, new: Process) -> bool:
    """A reused pid with another comm is another process."""
    return old.comm == new.comm


def diff_snapshots(
    prev: Snapshot | None,
    cur: Snapshot,
    *,
    cur_holdings: Mapping[int, Mapping[int, tuple[Buffer, Holder | None]]] | None = None,
    prev_holdings: Mapping[int, Mapping[int, tuple[Buffer, Holder | None]]] | None = None,
) -> SnapshotDiff:
    """Compare `cur` with `prev`; with no `prev`, nothing is marked."""
    if prev is None:
        return SnapshotDiff(first=True)
    cur_h = cur_holdings if cur_holdings is not None else holdings(cur)
    prev_h = prev_holdings if prev_holdings is not None else holdings(prev)

    old_buffers = {b.inode: b for b in prev.buffers}
    buffers: dict[int, Change] = {}
    for b in cur.buffers:
        old = old_buffers.pop(b.inode, None)
        if old is None:
            buffers[b.inode] = Change.NEW
        elif _buffer_grew(old, b):
            buffers[b.inode] = Change.GREW
    gone_buffers = tuple(old_buffers.values())
    for b in gone_buffers:
        buffers[b.inode] = Change.GONE

    old_procs = {p.pid: p for p in prev.processes}
    processes: dict[int, Change] = {}
    gone_processes: list[Process] = []
    for p in cur.processes:
        old_p = old_procs.pop(p.pid, None)
        if old_p is None or not _same_process(old_p, p):
            processes[p.pid] = Change.NEW
            if old_p is not None:
                gone_processes.append(old_p)
        elif _process_grew(old_p, p):
            processes[p.pid] = Change.GREW
    for old_p in old_procs.values():
        processes[old_p.pid] = Change.GONE
        gone_processes.append(old_p)
    for pseudo in PSEUDO_PIDS:
        if pseudo in cur_h and pseudo not in prev_h:
            processes[pseudo] = Change.NEW
        elif pseudo in prev_h and pseudo not in cur_h:
            processes[pseudo] = Change.GONE
        elif pseudo in cur_h and sum(b.size_bytes for b, _ in cur_h[pseudo].values()) > sum(
            b.size_bytes for b, _ in prev_h[pseudo].values()
        ):
            processes[pseudo] = Change.GREW

    held: dict[tuple[int, int], Change] = {}
    gone_holdings: dict[int, tuple[tuple[Buffer, Holder | None], ...]] = {}
    for pid, now in cur_h.items():
        before = prev_h.get(pid, {})
        if processes.get(pid) is Change.NEW and pid not in PSEUDO_PIDS:
            before = {}
        for inode, (b, h) in now.items():
            was = before.get(inode)
            if was is None:
                held[(pid, inode)] = Change.NEW
            elif _refs(b, h) > _refs(*was) or b.size_bytes > was[0].size_bytes:
                held[(pid, inode)] = Change.GREW
        lost = tuple(v for inode, v in before.items() if inode not in now)
        if lost:
            gone_holdings[pid] = lost
            for b, _ in lost:
                held[(pid, b.inode)] = Change.GONE
    for pid, before in prev_h.items():
        if pid not in cur_h:
            gone_holdings[pid] = tuple(before.values())
            for inode in before:
                held[(pid, inode)] = Change.GONE

    return SnapshotDiff(
        first=False,
        buffers=buffers,
        processes=processes,
        holdings=held,
        gone_buffers=gone_buffers,
        gone_processes=tuple(gone_processes),
        gone_holdings=gone_holdings,
    )
