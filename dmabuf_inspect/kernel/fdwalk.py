"""Which dma-bufs one process holds by fd: one stat() per entry of an open `/proc/PID/fd`.

    fds_by_inode(dirfd, dev) -> {inode: (fd, ...)}   # the entries whose target is on `dev` (the
                                                     # dma-buf filesystem's), by the target's inode;
                                                     # fds ascending, inodes in first-fd order
    dmabuf_dev(dirfd) -> (dev | None, legacy fds)    # readlink until the first `/dmabuf:` link

The directory fd comes from the reader (kernel/reader.py, Tree.open_dir); everything here is
relative to it.

Two walks give the same answer: `_fdwalk.c`, built when the install found a C compiler, and
os.stat(). The C walk runs without the GIL and makes no Python object for the fds it drops;
os.stat() makes an os.stat_result for every fd: with it, a scan of 13 300 fds took 1.20-1.36x
as long in the lab (benchmarks/bench_scan.py, `ours_py` against `ours`).
An entry that can't be stat()ed (closed meanwhile) is skipped by both.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import attrgetter, eq

FdWalk = Callable[[int, int], dict[int, tuple[int, ...]]]

_st_dev, _st_ino = attrgetter("st_dev"), attrgetter("st_ino")


def fds_by_inode_py(dirfd: int, dev: int) -> dict[int, tuple[int, ...]]:
    """The walk with os.stat(); names that are no fd number are skipped, as in C."""
    names = [name for name in os.listdir(dirfd) if name.isdigit()]
    stat = os.stat
    try:
        stats = [stat(name, dir_fd=dirfd) for name in names]
    except OSError:  # an fd closed meanwhile: the slow way, fd by fd
        stats, kept = [], []
        for name in names:
            try:
                stats.append(stat(name, dir_fd=dirfd))
                kept.append(name)
            except OSError:
                continue
        names = kept
    on_dev = list(map(eq, map(_st_dev, stats), repeat(dev)))
    if not any(on_dev):
        return {}
    numbers: Sequence[int] = list(map(int, compress(names, on_dev)))
    inodes: Sequence[int] = list(compress(map(_st_ino, stats), on_dev))
    if numbers != sorted(numbers):  # a live /proc lists fds in order (proc_readfd_common)
        numbers, inodes = zip(*sorted(zip(numbers, inodes, strict=True)), strict=True)
    fds: dict[int, tuple[int, ...]] = dict(zip(inodes, zip(numbers), strict=True))
    if len(fds) != len(inodes):  # one buffer under several fds (Python's mmap dup()s one)
        counts = Counter(inodes)
        if max(counts.values()) == 2:  # the first fd and the last are all of them
            first = dict(zip(reversed(inodes), reversed(numbers), strict=True))
            fds.update((i, (first[i], fds[i][0])) for i, n in counts.items() if n == 2)
        else:
            shared: dict[int, list[int]] = {i: [] for i, n in counts.items() if n > 1}
            for fd, inode in zip(numbers, inodes, strict=True):
                if inode in shared:
                    shared[inode].append(fd)
            fds.update((inode, tuple(f)) for inode, f in shared.items())
    return fds


DMABUF_PREFIX = "/dmabuf:"
DMABUF_ANON = "anon_inode:dmabuf"  # before 5.3 (commit bb2bb9030425, "dma-buf: add DMA_BUF_SET_NAME")


def dmabuf_dev(dirfd: int) -> tuple[int | None, list[int]]:
    """The st_dev of the dma-buf filesystem, from the first `/dmabuf:` link of the open fd
    directory `dirfd` (None if it has none), and the `anon_inode:dmabuf` fds (before 5.3) read
    on the way. Entries closed meanwhile are skipped; OSError if the directory can't be listed."""
    legacy: list[int] = []
    for name in os.listdir(dirfd):
        try:
            target = os.readlink(name, dir_fd=dirfd)
            if target.startswith(DMABUF_PREFIX):
                return os.stat(name, dir_fd=dirfd).st_dev, legacy
        except OSError:
            continue  # closed meanwhile
        if target == DMABUF_ANON and name.isdigit():
            legacy.append(int(name))
    return None, legacy


fds_by_inode_c: FdWalk | None
try:
    from dmabuf_inspect.kernel._fdwalk import fds_by_inode as _built
except ImportError:  # installed without a C compiler
    fds_by_inode_c = None
else:
    fds_by_inode_c = _built

fds_by_inode: FdWalk = fds_by_inode_c or fds_by_inode_py
