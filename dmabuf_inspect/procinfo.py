"""Who a process is: comm, cmdline, uid/user and ppid.

The live system is read through psutil. A captured tree is read from its own
`comm`, `cmdline` and `status` files, since psutil would follow paths out of it.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from functools import lru_cache

import psutil

from .roots import read_bytes


@dataclass(frozen=True, slots=True)
class ProcIdentity:
    pid: int
    ppid: int | None
    comm: str
    cmdline: str
    uid: int | None
    user: str


def parse_status(data: bytes) -> tuple[int | None, int | None]:
    """(real uid, ppid) from `/proc/PID/status` text; None for what is missing."""
    uid: int | None = None
    ppid: int | None = None
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                uid = int(parts[1])
        elif line.startswith(b"PPid:"):
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                ppid = int(parts[1])
    return uid, ppid


def parse_cmdline(data: bytes) -> str:
    return data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    """The login name of `uid` on this machine, or the number (NSS lookups are slow: cached)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _from_capture(proc_root: str, pid: int) -> ProcIdentity:
    base = os.path.join(proc_root, str(pid))

    def read(name: str) -> bytes:
        try:
            return read_bytes(proc_root, os.path.join(base, name), live=False, limit=1 << 16)
        except OSError:
            return b""

    uid, ppid = parse_status(read("status"))
    return ProcIdentity(
        pid=pid,
        ppid=ppid,
        comm=read("comm").rstrip(b"\n").decode("utf-8", "surrogateescape"),
        cmdline=parse_cmdline(read("cmdline")),
        uid=uid,
        user=str(uid) if uid is not None else "?",
    )


def _from_psutil(pid: int) -> ProcIdentity | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            uid = proc.uids().real
            ppid = proc.ppid()
            comm = proc.name()
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.AccessDenied:
                cmdline = ""
            user = user_name(uid)
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return ProcIdentity(pid, None, "?", "", None, "?")
    return ProcIdentity(pid, ppid, comm, cmdline, uid, user)


def identify(proc_root: str, pid: int, *, live: bool) -> ProcIdentity | None:
    """Who `pid` is, or None when it has exited."""
    if live:
        return _from_psutil(pid)
    return _from_capture(proc_root, pid)
