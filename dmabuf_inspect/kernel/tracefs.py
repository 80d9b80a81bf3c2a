"""The dma_buf tracepoints (Linux 7.0+), read through a tracefs instance of our own.

    reason = unavailable_reason()                 # None, or why tracing can't be used (said once)
    with TraceInstance.create() as trace:          # /sys/kernel/tracing/instances/dmabuf-inspect-PID
        events = trace.read_events()               # whatever trace_pipe holds now; never blocks
        trace.lost_events()                        # events the kernel dropped (ring buffer full)
    # the instance is gone again here, also after an exception

An instance has its own ring buffer and its own event switches, so other tracers on the machine
are not disturbed. Its name carries our pid: an instance left behind by a killed recorder
(SIGKILL) is removed by the next one (`remove_stale`).

include/trace/events/dma_buf.h (7.0), printed by trace_pipe after the common prefix:

    dma_buf_export, dma_buf_mmap, dma_buf_mmap_internal, dma_buf_put:
        exp_name=%s size=%zu ino=%lu
    dma_buf_fd, dma_buf_get:
        exp_name=%s size=%zu ino=%lu fd=%d
    dma_buf_dynamic_attach, dma_buf_detach:
        exp_name=%s size=%zu ino=%lu attachment:%p is_dynamic=%d dev_name=%s

The common prefix (kernel/trace/trace_output.c), TASK being the thread's comm right-aligned in 16
columns (any 15 bytes a process chose: spaces and dashes included), PID the thread id, `(TGID)`
only with options/record-tgid, the flags only with options/irq-info:

               python3-186     [001] ...1.    15.147275: dma_buf_export: exp_name=system size=65536 ino=1
               python3-186     (    186) [001] ...1.    15.147275: dma_buf_fd: exp_name=system size=65536 ino=1 fd=7

and, where the ring buffer dropped events before the ones that follow on that CPU:

    CPU:1 [LOST 1234 EVENTS]
    CPU:1 [LOST EVENTS]

We enable export, fd and the attach pair only: get, put and mmap fire on every import and
mapping (once a frame in a compositor), which would cost more than they tell.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass

from dmabuf_inspect.kernel.procinfo import parse_stat
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.records import NamedTuple

TRACEFS = "/sys/kernel/tracing"
INSTANCE_PREFIX = "dmabuf-inspect-"
EVENTS = ("dma_buf_export", "dma_buf_fd", "dma_buf_dynamic_attach", "dma_buf_detach")
BUFFER_KB = 4096  # per CPU: about 40 s of 1 000 exports/s (an export is two events of ~50 bytes)
_READ_CHUNK = 1 << 16


class TraceEvent(NamedTuple):
    """One dma_buf event of trace_pipe."""

    event: str  # "dma_buf_export" ...
    tid: int  # the thread that ran it (the prefix's PID)
    tgid: int | None  # its process, where the line carried it (record-tgid)
    comm: str | None  # the thread's comm; None where the kernel printed `<...>` (not cached)
    cpu: int
    timestamp_s: float  # the instance's trace_clock
    exp_name: str
    size_bytes: int
    inode: int
    fd: int | None = None  # dma_buf_fd, dma_buf_get
    dev_name: str | None = None  # dma_buf_dynamic_attach, dma_buf_detach
    is_dynamic: bool | None = None


class LostEvents(NamedTuple):
    """A `CPU:N [LOST M EVENTS]` line: M is None where the kernel did not know how many."""

    cpu: int
    lost: int | None


class TraceParseError(ValueError):
    pass


_PREFIX = re.compile(
    r"(?P<task>.*)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>\S{4,5})\s+)?"
    r"(?P<ts>\d+\.\d+):\s(?P<event>\w+):\s?(?P<body>.*)",
    re.DOTALL,
)
_LOST = re.compile(r"CPU:(?P<cpu>\d+) \[LOST (?:(?P<n>\d+) )?EVENTS\]")
_BASE = re.compile(r"exp_name=(?P<exp>\S*) size=(?P<size>\d+) ino=(?P<ino>\d+)")
_FD = re.compile(r" fd=(?P<fd>-?\d+)")
_ATTACH = re.compile(r" attachment:(?P<ptr>\S+) is_dynamic=(?P<dyn>\d+) dev_name=(?P<dev>.*)", re.DOTALL)


def parse_line(line: str) -> TraceEvent | LostEvents | None:
    """One trace_pipe line: a dma_buf event, a lost-events marker, or None for anything else
    (another subsystem's event, a blank line). Raises TraceParseError for a dma_buf event whose
    fields are not the 7.x format.

    The task name is everything before the last `-PID` that the rest of the prefix follows: the
    task is any 15 bytes, the rest is the kernel's, so the last match is the real one.
    """
    line = line.rstrip("\n")
    lost = _LOST.fullmatch(line.strip())
    if lost is not None:
        n = lost.group("n")
        return LostEvents(int(lost.group("cpu")), int(n) if n is not None else None)
    m = _PREFIX.fullmatch(line)
    if m is None:
        return None
    event = m.group("event")
    if not event.startswith("dma_buf_"):
        return None
    body = m.group("body")
    base = _BASE.match(body)
    if base is None:
        raise TraceParseError(f"{event}: unexpected fields {body[:80]!r}")
    rest = body[base.end() :]
    fd: int | None = None
    dev_name: str | None = None
    is_dynamic: bool | None = None
    if event in ("dma_buf_fd", "dma_buf_get"):
        fm = _FD.match(rest)
        if fm is None:
            raise TraceParseError(f"{event}: no fd= in {body[:80]!r}")
        fd = int(fm.group("fd"))
    elif event in ("dma_buf_dynamic_attach", "dma_buf_detach"):
        am = _ATTACH.match(rest)
        if am is None:
            raise TraceParseError(f"{event}: no attachment fields in {body[:80]!r}")
        dev_name, is_dynamic = am.group("dev"), am.group("dyn") != "0"
    task = m.group("task").lstrip(" ")
    tgid = m.group("tgid")
    return TraceEvent(
        event=event,
        tid=int(m.group("pid")),
        tgid=int(tgid) if tgid is not None and tgid.isdigit() else None,
        comm=None if task == "<...>" else task,
        cpu=int(m.group("cpu")),
        timestamp_s=float(m.group("ts")),
        exp_name=base.group("exp"),
        size_bytes=int(base.group("size")),
        inode=int(base.group("ino")),
        fd=fd,
        dev_name=dev_name,
        is_dynamic=is_dynamic,
    )


def parse_stats(text: str) -> int:
    """Events lost on one CPU, from `per_cpu/cpuN/stats`: overrun (overwritten before being
    read), commit overrun and dropped events (the buffer was full with overwrite off)."""
    lost = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("overrun", "commit overrun", "dropped events"):
            with contextlib.suppress(ValueError):
                lost += int(value.strip())
    return lost


class TraceUnavailableError(OSError):
    """Why the dma_buf events can't be traced here: one sentence for the user."""


def _tracefs(root: str) -> Tree:
    """The tracefs at `root`: the live machine's (or a test's stand-in), never a capture's."""
    return Tree(root, live=True)


def unavailable_reason(root: str = TRACEFS) -> str | None:
    """None when `root` has the dma_buf events and we may make an instance; else why not."""
    tree = _tracefs(root)
    try:
        names = tree.listdir()
    except PermissionError:
        return f"permission denied reading {root} (run as root)"
    except FileNotFoundError:
        return f"tracefs is not mounted at {root} (mount -t tracefs nodev {root})"
    except OSError as exc:
        return f"{root}: {os.strerror(exc.errno or 0)}"
    if "events" not in names or "instances" not in names:
        return f"tracefs is not mounted at {root} (mount -t tracefs nodev {root})"
    if not tree.isdir("events/dma_buf"):
        return f"this kernel ({os.uname().release}) has no dma_buf tracepoints (they came with Linux 7.0)"
    if not tree.writable("instances"):
        return f"permission denied creating a trace instance in {root}/instances (run as root)"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: str = TRACEFS) -> list[str]:
    """Remove the instances of recorders that are gone (killed with SIGKILL); their names."""
    removed: list[str] = []
    instances = _tracefs(os.path.join(root, "instances"))
    try:
        names = instances.listdir()
    except OSError:
        return removed
    for name in names:
        rest = name.removeprefix(INSTANCE_PREFIX)
        if rest == name or not rest.isdigit() or _pid_alive(int(rest)):
            continue
        with contextlib.suppress(OSError):
            _remove(instances.path(name))
            removed.append(name)
    return removed


def _remove(path: str) -> None:
    """Turn the instance at `path` off and remove it."""
    instance = _tracefs(path)
    with contextlib.suppress(OSError):
        instance.write("tracing_on", b"0")
    with contextlib.suppress(OSError):
        instance.write("events/enable", b"0")
    parent, name = os.path.split(path)
    _tracefs(parent).rmdir(name)


@dataclass(slots=True)
class TraceInstance:
    """Our own tracefs instance with the dma_buf events on, and its trace_pipe open non-blocking."""

    path: str
    clock: str  # the instance's trace_clock: "boot" (CLOCK_BOOTTIME) or "mono" (CLOCK_MONOTONIC)
    pipe_fd: int
    wall_offset_s: float  # time.time() - the clock, when the instance was made
    _partial: bytes = b""
    _closed: bool = False

    @classmethod
    def create(
        cls,
        root: str = TRACEFS,
        *,
        name: str | None = None,
        events: tuple[str, ...] = EVENTS,
        buffer_kb: int = BUFFER_KB,
    ) -> TraceInstance:
        """Make the instance; raises TraceUnavailableError with the one-line reason."""
        reason = unavailable_reason(root)
        if reason is not None:
            raise TraceUnavailableError(reason)
        remove_stale(root)
        instances = _tracefs(os.path.join(root, "instances"))
        name = name or f"{INSTANCE_PREFIX}{os.getpid()}"
        path = instances.path(name)
        try:
            instances.mkdir(name)
        except FileExistsError:
            _remove(path)
            instances.mkdir(name)
        except OSError as exc:
            raise TraceUnavailableError(f"creating the trace instance {path}: {os.strerror(exc.errno or 0)}") from None
        try:
            return cls._setup(path, events, buffer_kb)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                _remove(path)
            if isinstance(exc, OSError) and not isinstance(exc, TraceUnavailableError):
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                raise TraceUnavailableError(f"setting up the trace instance {path}: {why}") from None
            raise

    @classmethod
    def _setup(cls, path: str, events: tuple[str, ...], buffer_kb: int) -> TraceInstance:
        instance = _tracefs(path)
        instance.write("tracing_on", b"0")
        clock, clock_id = "boot", time.CLOCK_BOOTTIME
        try:
            instance.write("trace_clock", b"boot")
        except OSError:  # before 4.10
            clock, clock_id = "mono", time.CLOCK_MONOTONIC
            instance.write("trace_clock", b"mono")
        with contextlib.suppress(OSError):
            instance.write("buffer_size_kb", str(buffer_kb).encode())
        # Not in every kernel's instances: a missing option only costs the tgid column.
        with contextlib.suppress(OSError):
            instance.write("options/record-tgid", b"1")
        for event in events:
            try:
                instance.write(f"events/dma_buf/{event}/enable", b"1")
            except OSError as exc:
                raise TraceUnavailableError(f"enabling {event}: {os.strerror(exc.errno or 0)}") from None
        pipe_fd = instance.open_read("trace_pipe", blocking=False)
        try:
            instance.write("tracing_on", b"1")
        except BaseException:
            os.close(pipe_fd)  # an open trace_pipe keeps the instance busy (rmdir: EBUSY)
            raise
        offset = time.time() - time.clock_gettime(clock_id)
        return cls(path=path, clock=clock, pipe_fd=pipe_fd, wall_offset_s=offset)

    def read_raw(self) -> bytes:
        """Everything trace_pipe holds now, in whole lines; never blocks."""
        chunks = [self._partial]
        while True:
            try:
                chunk = os.read(self.pipe_fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return data[:end]

    def read_events(self) -> tuple[list[TraceEvent], int]:
        """(the dma_buf events read now, the events the markers said were lost meanwhile)."""
        events: list[TraceEvent] = []
        lost = 0
        for raw in self.read_raw().splitlines():
            try:
                parsed = parse_line(raw.decode("utf-8", "surrogateescape"))
            except TraceParseError:
                continue
            if type(parsed) is TraceEvent:
                events.append(parsed)
            elif type(parsed) is LostEvents:
                lost += parsed.lost or 0
        return events, lost

    def wall_time(self, timestamp_s: float) -> float:
        return timestamp_s + self.wall_offset_s

    def lost_events(self) -> int:
        """Events the kernel dropped in this instance so far, over every CPU (per_cpu stats)."""
        total = 0
        per_cpu = _tracefs(os.path.join(self.path, "per_cpu"))
        with contextlib.suppress(OSError):
            for cpu in per_cpu.listdir():
                with contextlib.suppress(OSError):
                    total += parse_stats(per_cpu.read_text(f"{cpu}/stats", 1 << 16))
        return total

    def close(self) -> None:
        """Close trace_pipe (an open reader keeps the instance busy) and remove the instance."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self.pipe_fd)
        try:
            _remove(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def __enter__(self) -> TraceInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Task(NamedTuple):
    """The process behind a traced thread: (pid, start_ticks) names it across pid reuse."""

    pid: int
    start_ticks: int | None
    comm: str | None


def parse_tgid(status: bytes) -> int | None:
    """`Tgid:` of `/proc/TID/status`."""
    at = status.find(b"\nTgid:")
    if at < 0:
        return None
    parts = status[at + 6 : status.find(b"\n", at + 1)].split()
    return int(parts[0]) if parts and parts[0].isdigit() else None


def resolve_task(tid: int, tgid: int | None = None, proc: Tree | None = None) -> Task:
    """The process of thread `tid` as it is now: its pid, start time and comm. Read right after
    the event; a thread that is already gone keeps its tid and an unknown start."""
    proc = proc if proc is not None else Tree("/proc", live=True)
    pid = tgid
    if pid is None:
        try:
            pid = parse_tgid(proc.read(f"{tid}/status", 4096))
        except OSError:
            pid = None
        if pid is None:
            return Task(tid, None, None)
    try:
        stat = parse_stat(proc.read_once(f"{pid}/stat", 4096))
    except OSError:
        stat = None
    if stat is None:
        return Task(pid, None, None)
    return Task(pid, stat[1], stat[0])
