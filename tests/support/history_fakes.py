"""Synthetic snapshots for the history tests: processes holding buffers, as `collect()` builds them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot, Totals

SOURCES = {"fdinfo": "ok", "bufinfo": "ok", "maps": "ok"}


Held = Mapping[tuple[int, int, str], Iterable[int]] | Mapping[tuple[int, int | None, str], Iterable[int]]


def snapshot(
    held: Held,
    sizes: Mapping[int, int],
    *,
    taken_at: float = 1000.0,
    kernel_only: Iterable[int] = (),
    names: Mapping[int, str | None] | None = None,
    exporters: Mapping[int, str] | None = None,
    fds: Mapping[tuple[int, int], tuple[int, ...]] | None = None,
) -> Snapshot:
    """`held`: (pid, start_ticks, comm) -> inodes it holds (one fd each unless `fds` says);
    `kernel_only`: inodes no process holds."""
    holders: dict[int, list[Holder]] = {}
    processes = []
    for (pid, start, comm), inodes in held.items():
        inodes = list(inodes)
        for i, inode in enumerate(inodes):
            f = (fds or {}).get((pid, inode), (10 + i,))
            holders.setdefault(inode, []).append(Holder(pid, f, 0, 0))
        rss = sum(sizes[i] for i in inodes)
        processes.append(Process(pid, 1, comm, f"/bin/{comm}", 0, "root", len(inodes), rss, rss, start))
    buffers = []
    for inode in sorted(set(holders) | set(kernel_only)):
        exporter = (exporters or {}).get(inode, "system")
        buffers.append(
            Buffer(
                inode,
                sizes[inode],
                "bufinfo",
                exporter,
                "heap",
                (names or {}).get(inode),
                1,
                tuple(sorted(holders.get(inode, []))),
                (),
                (),
                0,
            )
        )
    total = sum(b.size_bytes for b in buffers)
    ko = sum(b.size_bytes for b in buffers if not b.holders)
    return Snapshot(
        kernel="7.3.0-test",
        taken_at=taken_at,
        sources=dict(SOURCES),
        buffers=tuple(buffers),
        processes=tuple(processes),
        totals=Totals(len(buffers), total, total - ko, ko),
        errors=(),
    )
