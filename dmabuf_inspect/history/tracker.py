"""What changed since the last sample, as the rows the store writes: no SQL here.

    tracker = ChangeTracker()
    changes = tracker.update(snapshot, sample_id)   # rows to insert, ids of rows to close

The tracker keeps the last sample's state (one small tuple per live buffer, holding and
process), so its memory follows what is alive now, not how long the recording is. Each dict
of state is compared with the new sample's in C (dict equality, set difference of items
views): a steady sample costs the building of those dicts and no Python per buffer after it.

A process is (pid, start_ticks): a pid the kernel reused for another process is a new row,
and its holdings are new holdings.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from operator import itemgetter

from dmabuf_inspect.history.store import to_blob
from dmabuf_inspect.model import Holder, Snapshot
from dmabuf_inspect.records import NamedTuple

ProcessKey = tuple[int, int | None]  # (pid, start_ticks)
_ENDED_KEPT = 4096  # ended processes remembered, so one that holds buffers again keeps its row


class SampleRow(NamedTuple):
    id: int
    time: float
    scan_s: float
    buffers: int
    bytes: int
    userspace_buffers: int
    userspace_bytes: int
    kernel_only_buffers: int | None
    kernel_only_bytes: int | None
    trace_events: int | None
    lost_events: int | None


class ProcessRow(NamedTuple):
    id: int
    pid: int
    start_ticks: int | None
    comm: bytes
    cmdline: bytes
    uid: int | None
    first_sample: int
    last_sample: int | None


class BufferRow(NamedTuple):
    id: int
    inode: int
    size_bytes: int
    exporter: str
    name: bytes | None
    first_sample: int
    last_sample: int | None
    creator_id: int | None


class HoldingRow(NamedTuple):
    id: int
    buffer_id: int
    process_id: int
    fds: str
    maps: int
    first_sample: int
    last_sample: int | None


@dataclass(slots=True)
class SampleChanges:
    """The rows one sample adds, and the rows it closes (their last_sample is `sample_id - 1`)."""

    sample_id: int
    new_processes: list[ProcessRow] = field(default_factory=list)
    reopened_processes: list[int] = field(default_factory=list)
    ended_processes: list[int] = field(default_factory=list)
    comm_changes: list[tuple[bytes, int]] = field(default_factory=list)  # (comm, process id)
    process_totals: list[tuple[int, int, int, int]] = field(default_factory=list)  # process, sample, bytes, buffers
    new_buffers: list[BufferRow] = field(default_factory=list)
    ended_buffers: list[int] = field(default_factory=list)
    name_changes: list[tuple[bytes | None, int]] = field(default_factory=list)  # (name, buffer id)
    new_holdings: list[HoldingRow] = field(default_factory=list)
    ended_holdings: list[int] = field(default_factory=list)
    new_inodes: dict[int, int] = field(default_factory=dict)  # inode -> buffer id, for the creators
    replaced_inodes: set[int] = field(default_factory=set)  # alive before and now, but another buffer

    @property
    def rows(self) -> int:
        return (
            len(self.new_processes)
            + len(self.ended_processes)
            + len(self.process_totals)
            + len(self.new_buffers)
            + len(self.ended_buffers)
            + len(self.new_holdings)
            + len(self.ended_holdings)
        )


class _Proc(NamedTuple):
    id: int
    comm: str
    bytes: int
    buffers: int


_REPLACED = (-1, "")  # matches no real buffer (size, exporter): the inode's row is closed


def _fds_text(fds: tuple[int, ...]) -> str:
    return ",".join(map(str, fds))


@dataclass(slots=True)
class ChangeTracker:
    """The state of the last sample and the ids of the open rows."""

    buffer_ids: dict[int, int] = field(default_factory=dict)  # inode -> open buffer row
    identities: dict[int, tuple[int, str]] = field(default_factory=dict)  # inode -> (size, exporter)
    names: dict[int, str | None] = field(default_factory=dict)  # inode -> name
    holders: dict[int, tuple[Holder, ...]] = field(default_factory=dict)  # inode -> holders, as the scan gave them
    starts: dict[int, int | None] = field(default_factory=dict)  # pid -> start_ticks
    held: dict[int, dict[ProcessKey, tuple[tuple[int, ...], int, int]]] = field(default_factory=dict)
    # inode -> (pid, start_ticks) -> (fds, maps, open holding row)
    processes: dict[ProcessKey, _Proc] = field(default_factory=dict)  # holding buffers at the last sample
    ended: OrderedDict[ProcessKey, int] = field(default_factory=OrderedDict)  # key -> row, recently ended
    next_process: int = 1
    next_buffer: int = 1
    next_holding: int = 1

    def forget_buffer(self, inode: int) -> None:
        """Close `inode`'s row at the next sample and open a new one if it is still there: the
        trace saw that inode exported again, so the buffer seen before is gone (inode reuse)."""
        if inode in self.identities:
            self.identities[inode] = _REPLACED

    def update(self, snap: Snapshot, sample_id: int) -> SampleChanges:
        ch = SampleChanges(sample_id)
        prev_sample = sample_id - 1
        self._update_buffers(snap, ch, prev_sample)
        process_ids = self._update_processes(snap, ch, prev_sample)
        self._update_holdings(snap, ch, prev_sample, process_ids)
        return ch

    def _update_buffers(self, snap: Snapshot, ch: SampleChanges, prev_sample: int) -> None:
        buffers = snap.buffers
        inodes = list(map(itemgetter(0), buffers))
        cur = dict(zip(inodes, zip(map(itemgetter(1), buffers), map(itemgetter(3), buffers), strict=True), strict=True))
        if cur != self.identities:
            appeared = cur.items() - self.identities.items()  # new, or same inode with another identity
            vanished = self.identities.items() - cur.items()
            for inode, _ in vanished:
                ch.ended_buffers.append(self.buffer_ids.pop(inode))
                ch.replaced_inodes.add(inode)
            if appeared:
                by_inode = dict(zip(inodes, buffers, strict=True))
                for inode, ident in appeared:
                    b = by_inode[inode]
                    bid = self.next_buffer
                    self.next_buffer += 1
                    self.buffer_ids[inode] = bid
                    ch.new_inodes[inode] = bid
                    ch.new_buffers.append(
                        BufferRow(bid, inode, ident[0], ident[1], to_blob(b.name), ch.sample_id, None, None)
                    )
            ch.replaced_inodes &= ch.new_inodes.keys()
            self.identities = cur
        names = dict(zip(inodes, map(itemgetter(5), buffers), strict=True))
        if names != self.names:
            for inode, name in names.items() - self.names.items():
                if inode in self.names and inode not in ch.new_inodes:
                    ch.name_changes.append((to_blob(name), self.buffer_ids[inode]))
            self.names = names

    def _update_processes(self, snap: Snapshot, ch: SampleChanges, prev_sample: int) -> dict[int, int]:
        """Open and close process rows; the pid -> process row of this sample."""
        seen: dict[ProcessKey, _Proc] = {}
        pid_rows: dict[int, int] = {}
        for p in snap.processes:
            key = (p.pid, p.start_ticks)
            old = self.processes.get(key)
            if old is None:
                reopened = self.ended.pop(key, None)
                if reopened is not None:
                    pid_row = reopened
                    ch.reopened_processes.append(reopened)
                else:
                    pid_row = self.next_process
                    self.next_process += 1
                    ch.new_processes.append(
                        ProcessRow(
                            pid_row,
                            p.pid,
                            p.start_ticks,
                            to_blob(p.comm) or b"",
                            to_blob(p.cmdline) or b"",
                            p.uid,
                            ch.sample_id,
                            None,
                        )
                    )
                ch.process_totals.append((pid_row, ch.sample_id, p.rss_bytes, p.buffers))
            else:
                pid_row = old.id
                if old.bytes != p.rss_bytes or old.buffers != p.buffers:
                    ch.process_totals.append((pid_row, ch.sample_id, p.rss_bytes, p.buffers))
                if old.comm != p.comm:
                    ch.comm_changes.append((to_blob(p.comm) or b"", pid_row))
            seen[key] = _Proc(pid_row, p.comm, p.rss_bytes, p.buffers)
            pid_rows[p.pid] = pid_row
        for key, old in self.processes.items():
            if key not in seen:
                ch.ended_processes.append(old.id)
                ch.process_totals.append((old.id, ch.sample_id, 0, 0))
                self.ended[key] = old.id
                while len(self.ended) > _ENDED_KEPT:
                    self.ended.popitem(last=False)
        self.processes = seen
        return pid_rows

    def _update_holdings(self, snap: Snapshot, ch: SampleChanges, prev_sample: int, pid_rows: dict[int, int]) -> None:
        buffers = snap.buffers
        holders = dict(zip(map(itemgetter(0), buffers), map(itemgetter(7), buffers), strict=True))
        starts = {p.pid: p.start_ticks for p in snap.processes}
        if holders == self.holders and starts == self.starts and not ch.replaced_inodes:
            return
        changed = {inode for inode, _ in holders.items() - self.holders.items()}
        changed.update(inode for inode, _ in self.holders.items() - holders.items())
        changed.update(ch.replaced_inodes)
        reused = {pid for pid, start in starts.items() if pid in self.starts and self.starts[pid] != start}
        if reused:  # a pid now names another process: its holds are new even with the same fds
            changed.update(i for i, hs in holders.items() if any(h.pid in reused for h in hs))
        for inode in changed:
            old = self.held.pop(inode, {})
            if inode in ch.replaced_inodes:
                ch.ended_holdings.extend(v[2] for v in old.values())
                old = {}
            new: dict[ProcessKey, tuple[tuple[int, ...], int, int]] = {}
            for h in holders.get(inode, ()):
                key = (h.pid, starts.get(h.pid))
                was = old.pop(key, None)
                if was is not None and was[0] == h.fds and was[1] == h.maps:
                    new[key] = was
                    continue
                if was is not None:
                    ch.ended_holdings.append(was[2])
                process_row = pid_rows.get(h.pid)
                if process_row is None:  # exited between its fd walk and its identity read
                    continue
                hid = self.next_holding
                self.next_holding += 1
                new[key] = (h.fds, h.maps, hid)
                ch.new_holdings.append(
                    HoldingRow(hid, self.buffer_ids[inode], process_row, _fds_text(h.fds), h.maps, ch.sample_id, None)
                )
            ch.ended_holdings.extend(v[2] for v in old.values())
            if new:
                self.held[inode] = new
        self.holders = holders
        self.starts = starts
