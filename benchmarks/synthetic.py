"""Snapshots built by hand, with Rss, Pss and totals computed as the collector computes them.

The TUI benchmark (`bench_tui_refresh.py`) builds its synthetic loads here, and the TUI tests
build their scenes with the same builders (tests/support/tui_fakes.py puts this folder on
sys.path): benchmarks never import tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dmabuf_inspect.exporters import exporter_class
from dmabuf_inspect.model import Buffer, Fence, Heap, Holder, Process, ScanError, Snapshot, Totals, Udmabuf

TAKEN_AT = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HEAP_NAMES = frozenset({"system"})
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    cmdline: str = ""
    user: str = "alice"
    uid: int = 1000


def buf(
    inode: int,
    size: int,
    exporter: str = "system",
    *,
    name: str | None = None,
    holders: Iterable[tuple[int, Sequence[int], int]] = (),
    count: int | None = None,
    attachments: Sequence[str] = (),
    fences: Sequence[Fence] = (),
) -> Buffer:
    """holders: (pid, fds, maps); count defaults to the references seen (no kernel-held ones)."""
    hs = tuple(Holder(pid=p, fds=tuple(fds), maps=m, mapped_bytes=m * size) for p, fds, m in holders)
    refs = sum(len(h.fds) + h.maps for h in hs)
    if count is None:
        count = refs
    return Buffer(
        inode=inode,
        size_bytes=size,
        size_source="fdinfo" if hs else "bufinfo",
        exporter=exporter,
        exporter_class=exporter_class(exporter, HEAP_NAMES),
        name=name,
        count=count,
        holders=hs,
        attachments=tuple(attachments),
        fences=tuple(fences),
        kernel_refs=max(count - refs, 0),
    )


def snapshot(
    buffers: Sequence[Buffer],
    procs: Sequence[Proc],
    *,
    bufinfo: bool = True,
    denied: Sequence[int] = (),
    taken_at: float = TAKEN_AT,
    kernel: str = "6.12.107+deb13-amd64",
) -> Snapshot:
    by_pid = {p.pid: p for p in procs}
    held: dict[int, list[Buffer]] = {}
    for b in buffers:
        for h in b.holders:
            held.setdefault(h.pid, []).append(b)
    processes = []
    for pid, bs in held.items():
        p = by_pid[pid]
        processes.append(
            Process(
                pid=pid,
                ppid=1,
                comm=p.comm,
                cmdline=p.cmdline,
                uid=p.uid,
                user=p.user,
                buffers=len(bs),
                rss_bytes=sum(b.size_bytes for b in bs),
                pss_bytes=sum(b.size_bytes // len(b.holders) for b in bs),
            )
        )
    processes.sort(key=lambda p: (-p.rss_bytes, p.pid))
    user = sum(b.size_bytes for b in buffers if b.holders)
    sources = {"fdinfo": "ok", "maps": "ok", "heaps": "ok", "udmabuf": "ok", "sysfs": "unavailable: 6.10"}
    sources["bufinfo"] = "ok" if bufinfo else "unavailable: permission denied reading /sys/kernel/debug"
    return Snapshot(
        kernel=kernel,
        taken_at=taken_at,
        sources=sources,
        buffers=tuple(b for b in buffers if b.holders or bufinfo),
        processes=tuple(processes),
        totals=Totals(
            buffers=sum(1 for b in buffers if b.holders or bufinfo),
            bytes=sum(b.size_bytes for b in buffers if b.holders or bufinfo),
            userspace_bytes=user,
            kernel_only_bytes=sum(b.size_bytes for b in buffers if not b.holders) if bufinfo else None,
        ),
        errors=tuple(ScanError(pid=p, source="fd", error="permission denied") for p in denied),
        heaps=(Heap(name="system", dev_path="/dev/dma_heap/system", major=253, minor=0),),
        udmabuf=Udmabuf(present=True, dev_path="/dev/udmabuf", size_limit_mb=64, list_limit=1024),
        denied_pids=tuple(denied),
    )


def synthetic(
    n_buffers: int,
    n_procs: int,
    *,
    seed: int = 5,
    taken_at: float = TAKEN_AT,
    drop: float = 0.0,
    grow: float = 0.0,
    extra: int = 0,
) -> Snapshot:
    """n_buffers over n_procs processes (a few hold most, as on a real desktop), 1-3 holders each.

    The same seed gives the same buffer i every time. `drop` leaves out that fraction of them,
    `grow` gives that fraction an extra fd, `extra` adds buffers after the first n_buffers: two
    calls with different settings diff into gone, grown and new rows.
    """
    procs = [Proc(1000 + i, f"proc-{i}", f"/usr/bin/proc-{i} --flag {i}", user=f"user{i % 7}") for i in range(n_procs)]
    weights = [1.0 / (i + 1) for i in range(n_procs)]
    exporters = ("system", "drm", "udmabuf", "i915", "videobuf2-dma-contig")
    change = random.Random(seed + int(drop * 1000) + int(grow * 1_000_000))
    buffers = []
    for i in range(n_buffers + extra):
        rng = random.Random(seed * 1_000_003 + i)
        n_holders = 1 + int(rng.random() * 3)
        pids = sorted({rng.choices(procs, weights)[0].pid for _ in range(n_holders)})
        size = (1 + int(rng.random() * 64)) * 64 * KiB
        gone, grown = change.random() < drop, change.random() < grow
        if gone and i < n_buffers:
            continue
        holders = [(pid, [3 + j] + ([900 + j] if grown and j == 0 else []), j % 2) for j, pid in enumerate(pids)]
        name = f"buf-{i}" if i % 3 else None
        buffers.append(buf(10_000 + i, size, exporters[i % len(exporters)], name=name, holders=holders))
    return snapshot(buffers, procs, taken_at=taken_at)
