"""`watch`: one line per interval, for ssh sessions and logs, like vmstat.

    TIME          TOTAL     CHANGE   BUFS  NEW-KONLY  TOP GROWERS
    12:00:01   23.1 MiB          -      5          -  -
    12:00:02   23.2 MiB  +64.0 KiB      6        0 B  leaker[1234] +64.0 KiB

CHANGE: the total since the line before. NEW-KONLY: bytes of buffers that only the kernel
holds now and did not before (new ones, and ones whose last process let go); `-` without
debugfs bufinfo. TOP GROWERS: the processes whose bytes grew most since the line before, as
comm[pid]; a process is (pid, start_ticks), so a pid reused by a new process starts from 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import human_bytes

HEADER = f"{'TIME':<8}  {'TOTAL':>10}  {'CHANGE':>11}  {'BUFS':>6}  {'NEW-KONLY':>10}  TOP GROWERS"


@dataclass(frozen=True, slots=True)
class WatchSample:
    """What one line needs from a snapshot, and nothing more (kept between lines)."""

    time: float
    bytes: int
    buffers: int
    kernel_only: dict[int, int] | None  # inode -> size of the buffers no process holds; None without bufinfo
    processes: dict[tuple[int, int | None], tuple[str, int]]  # (pid, start_ticks) -> (comm, bytes)

    @classmethod
    def of(cls, snap: Snapshot) -> WatchSample:
        kernel_only = (
            {b.inode: b.size_bytes for b in snap.buffers if not b.holders}
            if snap.totals.kernel_only_bytes is not None
            else None
        )
        return cls(
            snap.taken_at,
            snap.totals.bytes,
            snap.totals.buffers,
            kernel_only,
            {(p.pid, p.start_ticks): (p.comm, p.rss_bytes) for p in snap.processes},
        )


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


def top_growers(prev: WatchSample, cur: WatchSample, top: int = 3) -> list[tuple[str, int, int]]:
    """(comm, pid, growth) of the processes that grew most, largest first."""
    grown = []
    for key, (comm, nbytes) in cur.processes.items():
        before = prev.processes.get(key, ("", 0))[1]
        if nbytes > before:
            grown.append((comm, key[0], nbytes - before))
    grown.sort(key=lambda g: (-g[2], g[1]))
    return grown[:top]


def format_line(prev: WatchSample | None, cur: WatchSample, top: int = 3) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(cur.time))
    if prev is None:
        change, new_ko, growers = "-", "-" if cur.kernel_only is None else human_bytes(0), "-"
    else:
        change = _signed(cur.bytes - prev.bytes)
        if cur.kernel_only is None or prev.kernel_only is None:
            new_ko = "-"
        else:
            before = prev.kernel_only
            new_ko = human_bytes(sum(size for inode, size in cur.kernel_only.items() if inode not in before))
        grown = top_growers(prev, cur, top)
        growers = ", ".join(f"{escape(comm)}[{pid}] {_signed(n)}" for comm, pid, n in grown) or "-"
    return f"{clock:<8}  {human_bytes(cur.bytes):>10}  {change:>11}  {cur.buffers:>6}  {new_ko:>10}  {growers}"
