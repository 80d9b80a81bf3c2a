"""classify_fd / is_udmabuf / classify on real dma-bufs: udmabuf, system heap, vgem PRIME.

Runs in the kernel lab VM as root (python3 tests/kernel/run_lab.py).
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Iterator

import pytest
import vgem

from dmabuf_inspect import classify, classify_fd, is_udmabuf
from dmabuf_inspect.errors import NotADmabufError
from dmabuf_inspect.ioctl import buffer as dmabuf_fd
from dmabuf_inspect.ioctl import heaps as heaps_alloc
from dmabuf_inspect.ioctl import udmabuf
from dmabuf_inspect.ioctl.buffer import DmaBuf

pytestmark = pytest.mark.kernel
classify_module = importlib.import_module("dmabuf_inspect.classify")


@pytest.fixture
def ubuf() -> Iterator[DmaBuf]:
    with udmabuf.create_with_memfd(64 << 10) as buf:
        yield buf


@pytest.fixture
def hbuf() -> Iterator[DmaBuf]:
    with heaps_alloc.heap_alloc("system", 64 << 10) as buf:
        yield buf


@pytest.fixture
def prime_fd() -> Iterator[int]:
    with vgem.open_vgem() as card:
        dumb = card.create_dumb(64, 64, 32)
        fd = card.handle_to_fd(dumb.handle)
        card.gem_close(dumb.handle)
        yield fd
        os.close(fd)


def test_udmabuf(ubuf: DmaBuf) -> None:
    info = classify_fd(ubuf.fd)
    assert (info.exporter, info.exporter_class, info.size_bytes, info.name) == ("udmabuf", "udmabuf", 64 << 10, None)
    assert info.inode == os.fstat(ubuf.fd).st_ino
    assert info.details.key == "udmabuf" and info.details.backing == "shmem"
    assert is_udmabuf(ubuf.fd) is True


def test_system_heap(hbuf: DmaBuf) -> None:
    info = classify_fd(hbuf.fd)
    assert (info.exporter, info.exporter_class, info.size_bytes) == ("system", "heap", 64 << 10)
    assert info.inode == os.fstat(hbuf.fd).st_ino
    assert is_udmabuf(hbuf.fd) is False


def test_vgem_prime_export(prime_fd: int) -> None:
    info = classify_fd(prime_fd)
    assert (info.exporter, info.exporter_class, info.size_bytes) == ("drm", "gpu-prime", 64 * 64 * 4)
    assert is_udmabuf(prime_fd) is False


def test_inode_is_the_one_maps_shows(ubuf: DmaBuf) -> None:
    m = ubuf.mmap()
    with open("/proc/self/maps") as f:
        lines = [line.split() for line in f if "/dmabuf:" in line]
    assert any(int(fields[4]) == classify_fd(ubuf.fd).inode for fields in lines)
    m.close()


def test_a_new_name_is_seen_at_once(hbuf: DmaBuf) -> None:
    assert classify_fd(hbuf.fd).name is None  # memoised from here
    dmabuf_fd.set_name(hbuf.fd, "cam\n0")
    assert classify_fd(hbuf.fd).name == "cam\n0"
    dmabuf_fd.set_name(hbuf.fd, "cam1")
    assert classify_fd(hbuf.fd).name == "cam1"


def test_dup_and_memo_keep_answers_apart(ubuf: DmaBuf, hbuf: DmaBuf) -> None:
    dup = os.dup(ubuf.fd)
    try:
        for _ in range(3):
            assert classify_fd(ubuf.fd).exporter == "udmabuf"
            assert classify_fd(hbuf.fd).exporter == "system"
            assert classify_fd(dup).inode == classify_fd(ubuf.fd).inode
    finally:
        os.close(dup)


def test_non_dmabufs_after_a_dmabuf_was_seen(ubuf: DmaBuf) -> None:
    classify_fd(ubuf.fd)  # the dma-buf filesystem's st_dev is known now
    assert classify_module._dmabuf_dev == os.fstat(ubuf.fd).st_dev
    r, w = os.pipe()
    memfd = os.memfd_create("not-a-dmabuf", os.MFD_CLOEXEC)
    try:
        with pytest.raises(NotADmabufError, match="it is a pipe"):
            classify_fd(r)
        with pytest.raises(NotADmabufError, match=r"it is a memfd \(/memfd:not-a-dmabuf"):
            classify_fd(memfd)
        assert ubuf.memfd is not None
        with pytest.raises(NotADmabufError, match="it is a memfd"):  # the udmabuf's own memfd
            classify_fd(ubuf.memfd)
        assert is_udmabuf(r) is False and is_udmabuf(memfd) is False
    finally:
        for fd in (r, w, memfd):
            os.close(fd)
    closed = os.dup(ubuf.fd)
    os.close(closed)
    with pytest.raises(OSError, match="not an open file descriptor"):
        classify_fd(closed)


def test_classify_a_child_process() -> None:
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child allocates, reports its fds, and waits to be killed
        try:
            os.close(r)
            child_u = udmabuf.create_with_memfd(8192)
            child_h = heaps_alloc.heap_alloc("system", 12288)
            dmabuf_fd.set_name(child_h.fd, "child")
            os.write(w, f"{child_u.fd} {child_h.fd} {go_r}\n".encode())
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(w)
    try:
        ufd, hfd, pipe_fd = (int(x) for x in os.read(r, 100).split())
        u = classify(pid, ufd)
        h = classify(pid, hfd)
        assert (u.exporter, u.exporter_class, u.size_bytes) == ("udmabuf", "udmabuf", 8192)
        assert (h.exporter, h.exporter_class, h.size_bytes, h.name) == ("system", "heap", 12288, "child")
        assert u.inode is not None and h.inode is not None and u.inode != h.inode
        with pytest.raises(NotADmabufError, match=rf"pid {pid} fd {pipe_fd} is not a dma-buf: it is pipe:"):
            classify(pid, pipe_fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (r, go_r, go_w):
            os.close(fd)
