"""Who made each buffer: dma_buf events from the trace, matched to the buffers the samples see.

    log = CreatorLog(wall_offset_s=trace.wall_offset_s)
    log.add(events, resolve_task)                    # as they are read, between and after scans
    settled = log.settle(scan_start, scan_end, changes, tracker)   # after each sample's scan

An event is settled at the first sample whose scan ended after it (its time <= scan_end):
- an export of a buffer this sample saw first is that buffer's creator;
- an export of an inode a sample saw before is a new buffer under a reused inode: the tracker
  closes the old one, and the export waits for the next sample, which opens the new one;
- an export during the scan of a buffer the scan had passed already waits one sample more;
- any other export made a buffer no sample saw: it is counted per creating process
  (`short_lived`), not stored one by one.
fd events of another process than the creator, and attach/detach events, are kept for the
buffers a sample saw. Memory: the events of about one interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dmabuf_inspect.history.store import to_blob
from dmabuf_inspect.history.tracker import ChangeTracker, ProcessKey, SampleChanges
from dmabuf_inspect.kernel.tracefs import Task, TraceEvent
from dmabuf_inspect.records import NamedTuple

EXPORT = "dma_buf_export"
FD = "dma_buf_fd"


class CreatorRow(NamedTuple):
    id: int
    inode: int
    time: float  # Unix time
    pid: int
    start_ticks: int | None
    tid: int
    comm: bytes | None
    exporter: str
    size_bytes: int


class TraceEventRow(NamedTuple):
    time: float
    event: str
    inode: int
    buffer_id: int
    pid: int
    start_ticks: int | None
    comm: bytes | None
    fd: int | None
    dev_name: str | None


class ShortLivedRow(NamedTuple):
    id: int
    pid: int
    start_ticks: int | None
    comm: bytes | None
    exports: int
    bytes: int


class _Pending(NamedTuple):
    event: TraceEvent
    task: Task
    carried: bool  # waited one sample already


@dataclass(slots=True)
class Settled:
    creators: list[CreatorRow] = field(default_factory=list)
    buffer_creators: dict[int, int] = field(default_factory=dict)  # buffer id -> creator id
    events: list[TraceEventRow] = field(default_factory=list)
    short_lived: list[ShortLivedRow] = field(default_factory=list)  # rows to insert or replace


@dataclass(slots=True)
class CreatorLog:
    wall_offset_s: float
    pending: list[_Pending] = field(default_factory=list)
    short_lived: dict[ProcessKey, ShortLivedRow] = field(default_factory=dict)
    next_creator: int = 1
    events_read: int = 0

    def add(self, events: Iterable[TraceEvent], resolve: Callable[[int, int | None], Task]) -> None:
        """Queue events, with the process of each thread read now (it may be gone by the sample)."""
        tasks: dict[int, Task] = {}
        for e in events:
            task = tasks.get(e.tid)
            if task is None:
                task = tasks[e.tid] = resolve(e.tid, e.tgid)
            if task.comm is None and e.comm is not None:
                task = task._replace(comm=e.comm)
            self.pending.append(_Pending(e, task, False))
            self.events_read += 1

    def settle(self, scan_start: float, scan_end: float, changes: SampleChanges, tracker: ChangeTracker) -> Settled:
        """Match the events up to `scan_end` (trace clock) with this sample's buffers."""
        out = Settled()
        keep: list[_Pending] = []
        due: list[_Pending] = []
        for p in self.pending:
            (due if p.event.timestamp_s <= scan_end else keep).append(p)
        alive = tracker.buffer_ids
        new = changes.new_inodes
        creator_pid: dict[int, int] = {}
        changed_short: dict[ProcessKey, ShortLivedRow] = {}
        for p in due:
            e, task = p.event, p.task
            if e.event != EXPORT:
                continue
            if e.inode in new:
                bid = new[e.inode]
                cid = self.next_creator
                self.next_creator += 1
                out.creators.append(
                    CreatorRow(
                        cid,
                        e.inode,
                        e.timestamp_s + self.wall_offset_s,
                        task.pid,
                        task.start_ticks,
                        e.tid,
                        to_blob(task.comm),
                        e.exp_name,
                        e.size_bytes,
                    )
                )
                out.buffer_creators[bid] = cid  # a later export of the same inode wins
                creator_pid[e.inode] = task.pid
            elif e.inode in alive and not p.carried:
                tracker.forget_buffer(e.inode)
                keep.append(p._replace(carried=True))
            elif e.timestamp_s >= scan_start and not p.carried:
                keep.append(p._replace(carried=True))
            else:
                key = (task.pid, task.start_ticks)
                row = changed_short.get(key) or self.short_lived.get(key)
                if row is None:
                    row = ShortLivedRow(len(self.short_lived) + 1, task.pid, task.start_ticks, to_blob(task.comm), 0, 0)
                row = row._replace(exports=row.exports + 1, bytes=row.bytes + e.size_bytes)
                self.short_lived[key] = changed_short[key] = row
        for p in due:
            e, task = p.event, p.task
            if e.event == EXPORT:
                continue
            held = alive.get(e.inode)
            if held is None:
                if e.timestamp_s >= scan_start and not p.carried:
                    keep.append(p._replace(carried=True))
                continue
            if e.event == FD and creator_pid.get(e.inode) == task.pid:
                continue  # the fd the creator got with the export
            out.events.append(
                TraceEventRow(
                    e.timestamp_s + self.wall_offset_s,
                    e.event,
                    e.inode,
                    held,
                    task.pid,
                    task.start_ticks,
                    to_blob(task.comm),
                    e.fd,
                    e.dev_name,
                )
            )
        out.short_lived = list(changed_short.values())
        self.pending = keep
        return out
