"""The session's history as the screens see it: an immutable frame of the `Timeline`.

The Timeline (history/timeline.py) belongs to the scan worker: after each scan the worker adds
the snapshot to it and copies what the screens need into a `HistoryFrame`, which travels in the
`ViewData`. The UI thread reads only frames, never the Timeline, so nothing is read while the
worker changes it.

    frame = add_and_frame(timeline, snapshot, previous_frame, live=True)   # in the scan worker
    frame.total_bytes                 # the session's totals, oldest first
    frame.series_of(pid)              # one process's bytes (the kernel-only bytes for KERNEL_PID)
    frame.seen_at(inode)              # Unix time first seen, or None
    frame.creator_of(inode)           # Creator(pid, start_ticks, comm, time), or None

A buffer or process gone at this refresh keeps what the previous frame knew of it, for the one
refresh it is still shown. A capture has no history to tell: every refresh reads the same files,
so its lines are flat, its buffers have no age and nothing is traced. Nothing here imports textual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dmabuf_inspect.history.timeline import Creator, Timeline
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.diff import KERNEL_PID

__all__ = [
    "CAPTURE_TRACING",
    "NOT_TRACED",
    "NO_AGE",
    "Creator",
    "HistoryFrame",
    "add_and_frame",
    "age_text",
    "frame_of",
]

CAPTURE_TRACING = "unavailable: a capture has no trace (creators are traced on the live machine only)"
NOT_TRACED = "unavailable: not asked for"
NO_AGE = ("-", -1)  # (cell, seconds) of a buffer whose first sighting is unknown: sorts last, oldest first


def age_text(seconds: float, *, at_least: bool = False) -> str:
    """'42s', '3m05s', '2h07m', '3d04h'; '≥' first when the age is a lower bound (the buffer was
    already there at the session's first refresh)."""
    s = max(int(seconds), 0)
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m{s % 60:02d}s"
    elif s < 86400:
        text = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        text = f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return "≥" + text if at_least else text


@dataclass(frozen=True, slots=True)
class HistoryFrame:
    """What the session remembers, as of one refresh; immutable, so any thread may read it."""

    live: bool  # False for a capture: no ages, no trace, flat lines
    tracing: str  # "ok" or "unavailable: why" (shown once, in the buffer detail and the help)
    session_start: float  # Unix time of the session's first refresh
    times: tuple[float, ...] = ()  # of the refreshes kept (the Timeline's `points`), oldest first
    total_bytes: tuple[int, ...] = ()
    kernel_only_bytes: tuple[int | None, ...] = ()  # None where bufinfo was not read
    process_bytes: Mapping[int, tuple[int, ...]] = field(default_factory=dict)  # pid -> bytes, current
    first_seen: Mapping[int, float] = field(default_factory=dict)  # inode -> Unix time, current buffers
    creators: Mapping[int, Creator] = field(default_factory=dict)  # inode -> creator, current buffers
    gone_process_bytes: Mapping[int, tuple[int, ...]] = field(default_factory=dict)  # gone at this refresh
    gone_first_seen: Mapping[int, float] = field(default_factory=dict)
    gone_creators: Mapping[int, Creator] = field(default_factory=dict)

    @property
    def refreshes(self) -> int:
        return len(self.times)

    @property
    def span_s(self) -> float:
        """Seconds from the oldest refresh kept to the newest."""
        return self.times[-1] - self.times[0] if self.times else 0.0

    def series_of(self, pid: int) -> tuple[int | None, ...] | None:
        """The bytes process PID held at each refresh it was seen, oldest first; for KERNEL_PID the
        kernel-only bytes; None when nothing is known (another pseudo-process)."""
        if pid == KERNEL_PID:
            return self.kernel_only_bytes
        found = self.process_bytes.get(pid)
        if found is None:
            found = self.gone_process_bytes.get(pid)
        return found

    def seen_at(self, inode: int) -> float | None:
        found = self.first_seen.get(inode)
        return found if found is not None else self.gone_first_seen.get(inode)

    def creator_of(self, inode: int) -> Creator | None:
        found = self.creators.get(inode)
        return found if found is not None else self.gone_creators.get(inode)

    def was_there_at_start(self, inode: int) -> bool:
        """Seen at the session's first refresh: its age is a lower bound, its creator untraced."""
        return self.seen_at(inode) == self.session_start

    def age_cells(self, seen_times: Iterable[float], now: float) -> dict[float | None, tuple[str, int]]:
        """First-seen time -> (age cell, age in seconds) for each distinct time, and None -> NO_AGE:
        buffers first seen at the same refresh share one entry, so a row costs a dict lookup."""
        start = self.session_start
        cells: dict[float | None, tuple[str, int]] = {None: NO_AGE}
        for t in set(seen_times):
            cells[t] = (age_text(now - t, at_least=t == start), int(now - t))
        return cells


def _gone(previous: Mapping[int, object], current: Mapping[int, object]) -> set[int]:
    return previous.keys() - current.keys()


def frame_of(timeline: Timeline, snap: Snapshot, previous: HistoryFrame | None, *, live: bool) -> HistoryFrame:
    """Copy what the screens need out of TIMELINE, right after `timeline.add(snap)` (same thread).

    The copies are of C-level containers (a dict or a deque each), except the per-process
    series: one tuple per process in the snapshot."""
    process_bytes = {p.pid: tuple(timeline.process_bytes(p.pid, p.start_ticks)) for p in snap.processes}
    first_seen = dict(timeline.seen) if live else {}
    creators = dict(timeline.creators) if live else {}
    gone_bytes: dict[int, tuple[int, ...]] = {}
    gone_seen: dict[int, float] = {}
    gone_creators: dict[int, Creator] = {}
    if previous is not None:
        gone_bytes = {pid: previous.process_bytes[pid] for pid in _gone(previous.process_bytes, process_bytes)}
        gone_seen = {i: previous.first_seen[i] for i in _gone(previous.first_seen, first_seen)}
        gone_creators = {i: previous.creators[i] for i in _gone(previous.creators, creators)}
    return HistoryFrame(
        live=live,
        tracing=timeline.tracing if live else CAPTURE_TRACING,
        session_start=previous.session_start if previous is not None else snap.taken_at,
        times=tuple(timeline.times),
        total_bytes=tuple(timeline.totals),
        kernel_only_bytes=tuple(timeline.kernel_only),
        process_bytes=process_bytes,
        first_seen=first_seen,
        creators=creators,
        gone_process_bytes=gone_bytes,
        gone_first_seen=gone_seen,
        gone_creators=gone_creators,
    )


def add_and_frame(timeline: Timeline, snap: Snapshot, previous: HistoryFrame | None, *, live: bool) -> HistoryFrame:
    """`timeline.add(snap)`, then its frame. Neither makes a reference cycle, so the cyclic
    collector is paused meanwhile, as in `viewdata.prepare` (else the collection that prepare's
    allocations put off lands here, and costs more than the work itself)."""
    was = gc.isenabled()
    gc.disable()
    try:
        timeline.add(snap)
        return frame_of(timeline, snap, previous, live=live)
    finally:
        if was:
            gc.enable()
