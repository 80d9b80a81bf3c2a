"""Which fds of one process hold dma-bufs: one stat() per entry of an open `/proc/PID/fd`.

    fds_on_dev(dirfd, dev) -> (fds, inodes)   # the entries whose target is on `dev`, in
                                              # directory order, and their targets' inodes

Two walks give the same answer: `_fdwalk.c`, built when the install found a C compiler, and
os.stat(). The C walk runs without the GIL and makes no Python object for the fds it drops;
os.stat() makes an os.stat_result for every fd, which was most of a 10 000-fd scan's cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import compress, repeat
from operator import attrgetter, eq

FdWalk = Callable[[int, int], tuple[list[int], list[int]]]

_st_dev, _st_ino = attrgetter("st_dev"), attrgetter("st_ino")


def fds_on_dev_py(dirfd: int, dev: int) -> tuple[list[int], list[int]]:
    """The walk with os.stat(); an entry that can't be stat()ed (closed meanwhile) is skipped."""
    names = os.listdir(dirfd)
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
    return list(map(int, compress(names, on_dev))), list(compress(map(_st_ino, stats), on_dev))


fds_on_dev_c: FdWalk | None
try:
    from ._fdwalk import fds_on_dev as _built
except ImportError:  # installed without a C compiler
    fds_on_dev_c = None
else:
    fds_on_dev_c = _built

fds_on_dev: FdWalk = fds_on_dev_c or fds_on_dev_py
