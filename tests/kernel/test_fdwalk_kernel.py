"""The C walk of fd tables on real dma-bufs: the same fds, inodes and snapshot as os.stat()'s.

A known load (benchmarks/loadgen.py: processes with their own heap buffers, some mapped, some
shared by all) is scanned twice, once with each walk, with nothing changing in between.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmabuf_inspect.kernel import fdwalk
from dmabuf_inspect.scan.snapshot import collect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from loadgen import HEAP, heap_alloc, load

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def pids() -> Iterator[list[int]]:
    with load(8, 25, shared=3) as children:
        yield children


def test_the_lab_scans_with_the_c_walk() -> None:
    assert fdwalk.fds_by_inode_c is not None and fdwalk.fds_by_inode is fdwalk.fds_by_inode_c


def test_both_walks_find_the_same_dmabuf_fds(pids: list[int]) -> None:
    assert fdwalk.fds_by_inode_c is not None
    heap = os.open(HEAP, os.O_RDWR | os.O_CLOEXEC)
    mine = heap_alloc(heap, 4096)
    try:
        dev = os.fstat(mine).st_dev
        for pid in pids:
            dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                c = fdwalk.fds_by_inode_c(dfd, dev)
                assert list(c.items()) == list(fdwalk.fds_by_inode_py(dfd, dev).items())
            finally:
                os.close(dfd)
            # its own 25 buffers and the 3 shared ones, the 7 it mapped (every 4th) under 2 fds: Python's
            # mmap dup()s the fd; nothing else
            assert len(c) == 28 and sorted(map(len, c.values())) == [1] * 21 + [2] * 7
            for inode, fds in c.items():
                for fd in fds:
                    assert os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dmabuf:")
                    assert os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode
    finally:
        os.close(mine)
        os.close(heap)


def test_both_walks_give_the_same_snapshot(pids: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    with_c = collect()
    monkeypatch.setattr(fdwalk, "fds_by_inode", fdwalk.fds_by_inode_py)
    with_py = collect()
    assert with_c.buffers == with_py.buffers
    assert with_c.processes == with_py.processes
    held = {h.pid for b in with_c.buffers for h in b.holders}
    assert set(pids) <= held
    assert sum(len(h.fds) for b in with_c.buffers for h in b.holders if h.pid in pids) == 8 * 35
