"""Who a process is: comm, cmdline, uid/user, ppid and start time, from its `status`, `stat` and
`cmdline` (`comm` only where `stat` can't be read).

Three plain reads per process, live or captured. psutil.Process() costs several more reads and
much more Python per process (4 ms each in the TCG lab, 0.4 s of a 100-process scan), and would
follow a captured tree's paths out of it.
"""

from __future__ import annotations

import os
import pwd
from functools import lru_cache

from dmabuf_inspect.kernel.reader import GONE, Tree, gap_kind
from dmabuf_inspect.records import NamedTuple

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from dmabuf_inspect.kernel.bpf.records import TaskInfo


class ProcIdentity(NamedTuple):
    pid: int
    ppid: int | None
    comm: str
    cmdline: str
    uid: int | None
    user: str
    start_ticks: int | None = None


def parse_stat(data: bytes) -> tuple[str, int | None] | None:
    """(comm, starttime) from `/proc/PID/stat`; None when it is not that.

    `PID (COMM) STATE PPID ...`: COMM is any 15 bytes a process chose, spaces and ')' included,
    so the fields are counted from the last ')'. starttime is field 22, in clock ticks after boot.
    """
    open_at = data.find(b" (")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    comm = data[open_at + 2 : close_at].decode("utf-8", "surrogateescape")
    fields = data[close_at + 1 :].split(None, 20)
    start = fields[19] if len(fields) > 19 else b""  # fields[0] is field 3 (state)
    return comm, int(start) if start.isdigit() else None


def parse_status(data: bytes) -> tuple[int | None, int | None]:
    """(real uid, ppid) from `/proc/PID/status` text; None for what is missing."""
    return _status_field(data, b"\nUid:"), _status_field(data, b"\nPPid:")


def _status_field(data: bytes, key: bytes) -> int | None:
    at = data.find(key)  # "Name:" comes first: the newline before a key is always there
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    parts = data[at + len(key) : end if end >= 0 else len(data)].split()
    return int(parts[0]) if parts and parts[0].isdigit() else None


def parse_cmdline(data: bytes) -> str:
    return data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    """The login name of `uid` on this machine, or the number (NSS lookups are slow: cached)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def start_ticks_of(start_boottime_ns: int) -> int:
    """/proc/PID/stat's starttime of a task_struct's start_boottime: nsec_to_clock_t(), a division
    by NSEC_PER_SEC / USER_HZ (exact: USER_HZ divides 10^9 on every architecture)."""
    return start_boottime_ns // (1_000_000_000 // os.sysconf("SC_CLK_TCK"))


def identify(proc: Tree, pid: int, known: TaskInfo | None = None) -> ProcIdentity | None:
    """Who `pid` is, read from the /proc tree `proc`; None when it has exited.

    A process whose status can't be read for any other reason (denied, a capture's link out of
    it) is "?"; a file after status that can't be read is left empty: status said who it is.
    `known`: what BPF's iter/task read of it (live only): then only its cmdline is read.
    """
    if known is not None and proc.live:
        try:
            cmdline = proc.read_once(f"{pid}/cmdline", 1 << 16)
        except OSError as exc:
            if gap_kind(exc) == GONE:
                return None
            cmdline = b""
        uid = known.uid
        return ProcIdentity(
            pid,
            known.ppid,
            known.comm.decode("utf-8", "surrogateescape"),
            parse_cmdline(cmdline),
            uid,
            "?" if uid is None else user_name(uid),
            start_ticks_of(known.start_boottime_ns),
        )
    try:
        uid, ppid = parse_status(proc.read_once(f"{pid}/status", 1 << 16))
    except OSError as exc:
        if gap_kind(exc) == GONE:
            return None
        return ProcIdentity(pid, None, "?", "", None, "?")

    def read(name: str) -> bytes:
        try:
            return proc.read_once(f"{pid}/{name}", 1 << 16)
        except OSError:
            return b""

    user = "?" if uid is None else user_name(uid) if proc.live else str(uid)  # a capture's uids are another machine's
    stat = parse_stat(read("stat"))
    if stat is None:
        comm, start_ticks = read("comm").rstrip(b"\n").decode("utf-8", "surrogateescape"), None
    else:
        comm, start_ticks = stat
    return ProcIdentity(
        pid=pid,
        ppid=ppid,
        comm=comm,
        cmdline=parse_cmdline(read("cmdline")),
        uid=uid,
        user=user,
        start_ticks=start_ticks,
    )
