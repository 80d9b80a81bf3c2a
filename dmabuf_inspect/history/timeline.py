"""A session's memory for a live view (the TUI): totals and per-process bytes over the last
refreshes, when each buffer was first seen, and who made it when the trace is on.

    timeline = Timeline(points=300)
    timeline.start_tracing()            # "ok" or "unavailable: why"; optional
    timeline.add(snapshot)              # after each refresh (any thread, one at a time)
    timeline.total_bytes()              # [bytes, ...] oldest first: the sparkline
    timeline.process_bytes(pid, start_ticks)
    timeline.first_seen(inode)          # Unix time, or None
    timeline.creator(inode)             # Creator(pid, start_ticks, comm, time) or None
    timeline.close()                    # removes the trace instance

Memory is bounded: `points` values per series, one entry per live buffer, and the exports of
about one refresh interval. Nothing here imports textual.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dmabuf_inspect.kernel import tracefs
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.records import NamedTuple


class Creator(NamedTuple):
    pid: int
    start_ticks: int | None
    comm: str | None
    time: float  # Unix time of the export


@dataclass(slots=True)
class Timeline:
    points: int = 300
    times: deque[float] = field(default_factory=deque)
    totals: deque[int] = field(default_factory=deque)
    kernel_only: deque[int | None] = field(default_factory=deque)
    per_process: dict[tuple[int, int | None], deque[int]] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)  # inode -> first seen, live buffers only
    creators: dict[int, Creator] = field(default_factory=dict)  # inode -> creator, live buffers only
    pending: dict[int, tuple[Creator, int]] = field(default_factory=dict)  # exports not seen yet, refreshes waited
    trace: tracefs.TraceInstance | None = None
    tracing: str = "unavailable: not started"

    def __post_init__(self) -> None:
        self.times = deque(maxlen=self.points)
        self.totals = deque(maxlen=self.points)
        self.kernel_only = deque(maxlen=self.points)

    def start_tracing(self, root: str = tracefs.TRACEFS) -> str:
        try:
            self.trace = tracefs.TraceInstance.create(root)
        except tracefs.TraceUnavailableError as exc:
            self.tracing = f"unavailable: {exc}"
        else:
            self.tracing = "ok"
        return self.tracing

    def _drain(self) -> None:
        if self.trace is None:
            return
        events, _lost = self.trace.read_events()
        for e in events:
            if e.event == "dma_buf_export":
                task = tracefs.resolve_task(e.tid, e.tgid)
                comm = task.comm if task.comm is not None else e.comm
                self.pending[e.inode] = (
                    Creator(task.pid, task.start_ticks, comm, self.trace.wall_time(e.timestamp_s)),
                    0,
                )

    def add(self, snap: Snapshot) -> None:
        self._drain()
        self.times.append(snap.taken_at)
        self.totals.append(snap.totals.bytes)
        self.kernel_only.append(snap.totals.kernel_only_bytes)
        alive = {b.inode for b in snap.buffers}
        for inode in alive - self.seen.keys():
            self.seen[inode] = snap.taken_at
            found = self.pending.pop(inode, None)
            if found is not None:
                self.creators[inode] = found[0]
        for inode in self.seen.keys() - alive:
            del self.seen[inode]
            self.creators.pop(inode, None)
        self.pending = {i: (c, n + 1) for i, (c, n) in self.pending.items() if n < 1}
        current = {(p.pid, p.start_ticks): p.rss_bytes for p in snap.processes}
        for key in self.per_process.keys() - current.keys():
            del self.per_process[key]
        for key, nbytes in current.items():
            series = self.per_process.get(key)
            if series is None:
                series = self.per_process[key] = deque(maxlen=self.points)
            series.append(nbytes)

    def total_bytes(self) -> list[int]:
        return list(self.totals)

    def process_bytes(self, pid: int, start_ticks: int | None) -> list[int]:
        return list(self.per_process.get((pid, start_ticks), ()))

    def first_seen(self, inode: int) -> float | None:
        return self.seen.get(inode)

    def creator(self, inode: int) -> Creator | None:
        return self.creators.get(inode)

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
            self.trace = None
