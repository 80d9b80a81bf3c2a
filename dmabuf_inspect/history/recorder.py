"""The recorder loop: a snapshot every interval into the recording, the trace read meanwhile.

    result = record(roots, RecordOptions(output="leak.db", interval_s=1.0, duration_s=600),
                    on_sample=show_progress, on_note=print)

Each sample: note the trace clock, scan (`collect`), read the trace, find what changed
(`ChangeTracker`), match the creators (`CreatorLog`), and write it all in one transaction
with SIGINT and SIGTERM blocked, so a signal lands between samples or aborts a scan, never
half a write. Between samples the trace is read every 0.2 s, so the ring buffer is drained
long before it could fill at 1 000 exports/s.

SIGINT and SIGTERM end the recording cleanly: the sample in progress is dropped, the
recording gets its end time and lost-event count, and the trace instance is removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from dmabuf_inspect.history import store
from dmabuf_inspect.history.creators import CreatorLog, Settled
from dmabuf_inspect.history.tracker import ChangeTracker, SampleChanges, SampleRow
from dmabuf_inspect.kernel import tracefs
from dmabuf_inspect.kernel.reader import Roots, Tree
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.scan.snapshot import collect

TRACE_POLL_S = 0.2
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class RecordOptions:
    output: str
    interval_s: float = 1.0
    duration_s: float | None = None  # None: until a signal (or `samples`)
    samples: int | None = None
    trace: bool = True
    include_maps: bool = True
    overwrite: bool = False
    tracefs_root: str = tracefs.TRACEFS


class Progress(NamedTuple):
    samples: int
    buffers: int
    bytes: int
    elapsed_s: float
    trace_events: int | None  # None when not tracing
    lost_events: int | None


@dataclass(frozen=True, slots=True)
class RecordResult:
    samples: int
    stopped_by: str  # "duration" | "samples" | "SIGINT" | "SIGTERM"
    tracing: str  # "ok" | "unavailable: why"
    lost_events: int | None
    trace_events: int | None
    output: str


class Stopped(BaseException):
    """Raised by our SIGINT/SIGTERM handler: ends the loop wherever it is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    old = {s: signal.signal(s, _raise_stopped) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def boot_time(proc: Tree) -> int | None:
    """`btime` of /proc/stat: the Unix time of boot, for start_ticks -> start time."""
    try:
        data = proc.read("stat", 1 << 20)
    except OSError:
        return None
    for line in data.splitlines():
        if line.startswith(b"btime "):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def _kernel_only(snap: Snapshot) -> tuple[int | None, int | None]:
    if snap.totals.kernel_only_bytes is None:
        return None, None
    return sum(1 for b in snap.buffers if not b.holders), snap.totals.kernel_only_bytes


def write_sample(conn: sqlite3.Connection, row: SampleRow, ch: SampleChanges, settled: Settled | None) -> None:
    """One sample's rows, in one transaction."""
    with store.transaction(conn):
        conn.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        prev = ch.sample_id - 1
        if settled is not None and settled.creators:
            store.insert_many(conn, "creators", settled.creators, 9)
        buffers = ch.new_buffers
        if settled is not None and settled.buffer_creators:
            bc = settled.buffer_creators
            buffers = [b._replace(creator_id=bc[b.id]) if b.id in bc else b for b in buffers]
        if buffers:
            store.insert_many(conn, "buffers", buffers, 8)
        if ch.ended_buffers:
            conn.executemany("UPDATE buffers SET last_sample = ? WHERE id = ?", ((prev, i) for i in ch.ended_buffers))
        if ch.name_changes:
            conn.executemany("UPDATE buffers SET name = ? WHERE id = ?", ch.name_changes)
        if ch.new_processes:
            store.insert_many(conn, "processes", ch.new_processes, 8)
        if ch.reopened_processes:
            conn.executemany(
                "UPDATE processes SET last_sample = NULL WHERE id = ?", ((i,) for i in ch.reopened_processes)
            )
        if ch.ended_processes:
            conn.executemany(
                "UPDATE processes SET last_sample = ? WHERE id = ?", ((prev, i) for i in ch.ended_processes)
            )
        if ch.comm_changes:
            conn.executemany("UPDATE processes SET comm = ? WHERE id = ?", ch.comm_changes)
        if ch.process_totals:
            store.insert_many(conn, "process_totals", ch.process_totals, 4)
        if ch.new_holdings:
            store.insert_many(conn, "holdings", ch.new_holdings, 7)
        if ch.ended_holdings:
            conn.executemany("UPDATE holdings SET last_sample = ? WHERE id = ?", ((prev, i) for i in ch.ended_holdings))
        if settled is not None:
            if settled.events:
                conn.executemany(
                    "INSERT INTO trace_events (time, event, inode, buffer_id, pid, start_ticks, comm, fd, dev_name)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    settled.events,
                )
            if settled.short_lived:
                conn.executemany("INSERT OR REPLACE INTO short_lived VALUES (?, ?, ?, ?, ?, ?)", settled.short_lived)


class _Trace:
    """The trace instance and the creator log, or the reason there is none."""

    def __init__(self, roots: Roots, options: RecordOptions) -> None:
        self.instance: tracefs.TraceInstance | None = None
        self.log: CreatorLog | None = None
        self.lost_markers = 0
        self.clock_id = time.CLOCK_BOOTTIME
        if not options.trace:
            self.status = "unavailable: not requested (--no-trace)"
        elif not roots.live:
            self.status = "unavailable: reading a captured tree, not this machine"
        else:
            try:
                self.instance = tracefs.TraceInstance.create(options.tracefs_root)
            except tracefs.TraceUnavailableError as exc:
                self.status = f"unavailable: {exc}"
            else:
                self.status = "ok"
                self.log = CreatorLog(self.instance.wall_offset_s)
                if self.instance.clock == "mono":
                    self.clock_id = time.CLOCK_MONOTONIC
        self.proc = roots.proc

    def now(self) -> float:
        return time.clock_gettime(self.clock_id)

    def drain(self) -> None:
        if self.instance is None or self.log is None:
            return
        events, lost = self.instance.read_events()
        self.lost_markers += lost
        if events:
            proc = self.proc
            self.log.add(events, lambda tid, tgid: tracefs.resolve_task(tid, tgid, proc))

    def lost(self) -> int | None:
        if self.instance is None:
            return None
        return max(self.instance.lost_events(), self.lost_markers)

    def close(self) -> None:
        if self.instance is not None:
            self.instance.close()


def record(
    roots: Roots,
    options: RecordOptions,
    *,
    on_sample: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> RecordResult:
    """Record until the duration, the sample count, SIGINT or SIGTERM. Raises UsageError or
    RecordingError before the first sample when the file can't be made."""
    conn = store.create(options.output, overwrite=options.overwrite)
    tracker = ChangeTracker()
    sample_id = 0
    stopped_by = "duration"
    trace: _Trace | None = None
    started = time.time()
    with _signals_raise():
        try:
            with _signals_blocked():
                trace = _Trace(roots, options)
                with store.transaction(conn):
                    store.set_meta(
                        conn,
                        {
                            "started": started,
                            "interval_s": options.interval_s,
                            "tracing": trace.status,
                            "trace_clock": trace.instance.clock if trace.instance else None,
                            "include_maps": options.include_maps,
                            "pid": os.getpid(),
                            "boot_time": boot_time(roots.proc),
                            "clock_ticks": os.sysconf("SC_CLK_TCK"),
                        },
                    )
            if trace.status != "ok" and on_note is not None:
                on_note(f"tracing {trace.status}; creators will be unknown")
            start_mono = time.monotonic()
            next_at = start_mono
            while True:
                sample_id += 1
                scan_start = trace.now()
                t0 = time.monotonic()
                snap = collect(roots, include_maps=options.include_maps)
                scan_s = time.monotonic() - t0
                trace.drain()
                scan_end = trace.now()
                changes = tracker.update(snap, sample_id)
                settled = trace.log.settle(scan_start, scan_end, changes, tracker) if trace.log else None
                ko_buffers, ko_bytes = _kernel_only(snap)
                user_buffers = snap.totals.buffers - (ko_buffers or 0)
                lost = trace.lost()
                events = trace.log.events_read if trace.log else None
                row = SampleRow(
                    sample_id,
                    snap.taken_at,
                    scan_s,
                    snap.totals.buffers,
                    snap.totals.bytes,
                    user_buffers,
                    snap.totals.userspace_bytes,
                    ko_buffers,
                    ko_bytes,
                    events,
                    lost,
                )
                with _signals_blocked():
                    if sample_id == 1:
                        with store.transaction(conn):
                            store.set_meta(conn, {"kernel": snap.kernel, "sources": snap.sources})
                    write_sample(conn, row, changes, settled)
                elapsed = time.monotonic() - start_mono
                if on_sample is not None:
                    on_sample(Progress(sample_id, snap.totals.buffers, snap.totals.bytes, elapsed, events, lost))
                del snap, changes, settled
                if options.samples is not None and sample_id >= options.samples:
                    stopped_by = "samples"
                    break
                next_at += options.interval_s
                now = time.monotonic()
                if next_at < now:  # the scan took longer than the interval: start again at once
                    next_at = now
                if options.duration_s is not None and next_at - start_mono > options.duration_s + 1e-6:
                    stopped_by = "duration"
                    break
                while (left := next_at - time.monotonic()) > 0:
                    time.sleep(min(TRACE_POLL_S, left))
                    trace.drain()
        except Stopped as exc:
            stopped_by = str(exc)
            if not _sample_written(conn, sample_id):
                sample_id -= 1
        finally:
            for s in _SIGNALS:  # a second signal while we clean up changes nothing
                signal.signal(s, _ignore)
            lost = trace.lost() if trace is not None else None
            events = trace.log.events_read if trace is not None and trace.log else None
            try:
                with store.transaction(conn):
                    store.set_meta(conn, {"ended": time.time(), "lost_events": lost, "stopped_by": stopped_by})
            finally:
                try:
                    store.finish(conn)
                finally:
                    if trace is not None:
                        trace.close()
    assert trace is not None
    return RecordResult(
        samples=sample_id,
        stopped_by=stopped_by,
        tracing=trace.status,
        lost_events=lost,
        trace_events=events,
        output=options.output,
    )


def _sample_written(conn: sqlite3.Connection, sample_id: int) -> bool:
    return conn.execute("SELECT 1 FROM samples WHERE id = ?", (sample_id,)).fetchone() is not None


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass
