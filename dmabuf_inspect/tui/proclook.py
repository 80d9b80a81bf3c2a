"""A closer look at one live process for its detail screen: its own memory and its parents.

psutil does the reading (`memory_info`, `memory_full_info` for USS, `ppid`/`name` up the chain).
It is asked only about the process on screen, when its detail opens or refreshes, in a worker
thread: never in the scan. A process may exit at any point (the look says so), and USS needs
root for another user's process (the look says that too). Nothing here imports textual.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

MAX_PARENTS = 64  # a chain longer than this is cut (pid namespaces nest, but not this deep)


@dataclass(frozen=True, slots=True)
class ProcessLook:
    """What psutil says about one process; texts are raw (the caller escapes them)."""

    pid: int
    gone: str | None = None  # why there is nothing to say: exited, pid reused, psutil missing
    rss_bytes: int | None = None
    uss_bytes: int | None = None
    memory_problem: str | None = None  # why RSS or USS is missing
    parents: tuple[tuple[int, str | None], ...] = ()  # (pid, comm), nearest first; comm None: unreadable
    parents_problem: str | None = None  # why the chain stops before pid 1


ProcessLooker = Callable[[int, "int | None"], ProcessLook]


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def look(pid: int, start_ticks: int | None = None) -> ProcessLook:
    """Ask psutil about PID. START_TICKS (/proc/PID/stat field 22, from the scan) tells the scanned
    process from a later one that reused its pid; None: not checked."""
    try:
        import psutil
    except ImportError:
        return ProcessLook(pid, gone="psutil is not installed")
    try:
        proc = psutil.Process(pid)
        if start_ticks is not None:
            scanned = psutil.boot_time() + start_ticks / _clock_ticks()
            if abs(proc.create_time() - scanned) > 0.5:
                return ProcessLook(pid, gone="exited (its pid now belongs to another process)")
        rss: int | None = None
        uss: int | None = None
        problem: str | None = None
        try:
            rss = proc.memory_info().rss
            uss = proc.memory_full_info().uss
        except psutil.AccessDenied:
            problem = "USS needs root for another user's process" if rss is not None else "permission denied"
        parents, parents_problem = _parents(proc)
    except psutil.NoSuchProcess:  # a zombie too: it has exited, only its parent has not reaped it
        return ProcessLook(pid, gone="exited")
    except psutil.AccessDenied:
        return ProcessLook(pid, gone="permission denied")
    except psutil.Error as exc:
        return ProcessLook(pid, gone=type(exc).__name__)
    return ProcessLook(pid, None, rss, uss, problem, parents, parents_problem)


def _parents(proc: psutil.Process) -> tuple[tuple[tuple[int, str | None], ...], str | None]:
    """PROC's parents, nearest first, up to pid 1 (whose parent is 0), and why the chain stops
    early if it does."""
    import psutil as ps

    chain: list[tuple[int, str | None]] = []
    seen = {proc.pid}
    ppid = proc.ppid()
    while ppid > 0 and ppid not in seen and len(chain) < MAX_PARENTS:
        seen.add(ppid)
        try:
            parent = ps.Process(ppid)
            name: str | None = parent.name()
        except ps.NoSuchProcess:
            chain.append((ppid, None))
            return tuple(chain), f"{ppid} exited"
        except ps.AccessDenied:
            chain.append((ppid, None))
            return tuple(chain), f"{ppid}: permission denied"
        chain.append((ppid, name))
        try:
            ppid = parent.ppid()
        except ps.Error:
            return tuple(chain), f"{parent.pid}'s parent could not be read"
    return tuple(chain), None
