"""The timing of one target at one size, in this process: one turn (`measure`).

What each figure is and why it is timed this way: dmabuf_inspect.bench.runner.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import time
from collections.abc import Iterator

from dmabuf_inspect.bench.model import Figures, Sample
from dmabuf_inspect.errors import DmabufInspectError, describe_oserror
from dmabuf_inspect.ioctl import uapi

PAGE_SIZE = mmap.PAGESIZE
BLOCK_BYTES = 256 << 10  # a write or read block covers at least this much
MAX_PASSES = 64
MMAP_CALLS = 8
TOUCH_BYTES = 4 << 20  # fresh mappings per timed turn: enough to touch this much, 2 to 16
MAX_TOUCH_MAPS = 16
SYNC_BLOCKS = 8
SYNC_PAIRS = 4
WRITE_BYTE = 0x5A
_ABSENT_BYTE = 0xA5
_TOUCH_BYTE = 0x01


def passes_for(size_bytes: int) -> int:
    """Passes over the whole buffer per timed block: a block is at least BLOCK_BYTES."""
    return max(1, min(MAX_PASSES, BLOCK_BYTES // size_bytes))


def best_of(size_bytes: int) -> int:
    """Write and read blocks per timed turn, of which the best is kept."""
    return 3 if size_bytes <= 16 << 20 else 2


def touch_maps(size_bytes: int) -> int:
    """Fresh mappings per timed turn whose first touch is timed; the best is kept."""
    return max(2, min(MAX_TOUCH_MAPS, TOUCH_BYTES // size_bytes))


# ---- libc ----------------------------------------------------------------------------------


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        self.munmap = libc.munmap
        self.munmap.restype = ctypes.c_int
        self.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self.memset = libc.memset
        self.memset.restype = ctypes.c_void_p
        self.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
        self.memchr = libc.memchr
        self.memchr.restype = ctypes.c_void_p
        self.memchr.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)


_MAP_FAILED = ctypes.c_void_p(-1).value
_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _map(fd: int, size: int, prot: int, flags: int) -> tuple[int, int]:
    """mmap (libc, so no dup() as Python's mmap does); (address, ns the call took)."""
    lib = _lib()
    t0 = time.perf_counter_ns()
    addr = lib.mmap(None, size, prot, flags, fd, 0)
    t1 = time.perf_counter_ns()
    if addr is None or addr == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return addr, t1 - t0


@contextlib.contextmanager
def _mapped(fd: int, size: int, prot: int, flags: int) -> Iterator[int]:
    addr, _ = _map(fd, size, prot, flags)
    try:
        yield addr
    finally:
        _lib().munmap(addr, size)


def memfd_filled(size_bytes: int) -> int:
    """A memfd of SIZE_BYTES whose pages exist (written once), for the memfd baseline."""
    fd = os.memfd_create("dmabuf-inspect-bench", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size_bytes)
        with _mapped(fd, size_bytes, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED) as addr:
            _lib().memset(addr, WRITE_BYTE, size_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


# ---- the figures --------------------------------------------------------------------------


def _mib_s(nbytes: int, ns: int) -> float:
    return (nbytes / (1 << 20)) / (max(ns, 1) / 1e9)


class _SyncError(Exception):
    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _sync_pairs(fd: int, writable: bool, blocks: int) -> float:
    access = uapi.DMA_BUF_SYNC_RW if writable else uapi.DMA_BUF_SYNC_READ
    start = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_START)
    end = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_END)
    request = uapi.DMA_BUF_IOCTL_SYNC
    ioctl = fcntl.ioctl
    best = float("inf")
    try:
        ioctl(fd, request, start)  # the first START may build an sg table (udmabuf)
        ioctl(fd, request, end)
        for _ in range(blocks):
            t0 = time.perf_counter_ns()
            for _ in range(SYNC_PAIRS):
                ioctl(fd, request, start)
                ioctl(fd, request, end)
            best = min(best, (time.perf_counter_ns() - t0) / SYNC_PAIRS)
    except OSError as exc:
        raise _SyncError(exc) from None
    return best


def _touch(addr: int, size: int, writable: bool) -> float:
    """One byte per page of a fresh mapping, written (or read); ns per page."""
    pages = size // PAGE_SIZE
    view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
    strided = view[::PAGE_SIZE]
    try:
        if writable:
            src = bytes((_TOUCH_BYTE,)) * pages
            t0 = time.perf_counter_ns()
            strided[:] = src
        else:
            t0 = time.perf_counter_ns()
            strided.tobytes()
        return (time.perf_counter_ns() - t0) / pages
    finally:
        strided.release()
        view.release()


def _bandwidth(addr: int, size: int, blocks: int, writable: bool) -> tuple[float | None, float]:
    lib = _lib()
    passes = passes_for(size)
    write = None
    if writable:
        write = 0.0
        for _ in range(blocks):
            t0 = time.perf_counter_ns()
            for _ in range(passes):
                lib.memset(addr, WRITE_BYTE, size)
            write = max(write, _mib_s(size * passes, time.perf_counter_ns() - t0))
    read = 0.0
    for _ in range(blocks):
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            if lib.memchr(addr, _ABSENT_BYTE, size) is not None:
                raise DmabufInspectError("memchr found a byte nobody wrote: the buffer changed under us")
        read = max(read, _mib_s(size * passes, time.perf_counter_ns() - t0))
    return write, read


def measure(fd: int, size_bytes: int, *, anon: bool, writable: bool, sync: bool, warm_up: bool = False) -> Sample:
    """One turn on FD (ignored for ANON): mmap calls, fresh mappings for the first touch, then
    write, read and SYNC blocks on the last mapping; each figure the best of its timings. A warm-up
    turn takes one timing of each. A failed SYNC is the Sample's error, beside the other figures;
    a failed mmap raises OSError."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if anon else mmap.MAP_SHARED
    map_fd = -1 if anon else fd
    lib = _lib()
    mmap_ns = float("inf")
    for _ in range(1 if warm_up else MMAP_CALLS):
        addr, ns = _map(map_fd, size_bytes, prot, flags)  # untouched: munmap has no pages to free
        lib.munmap(addr, size_bytes)
        mmap_ns = min(mmap_ns, ns)
    maps = 1 if warm_up else touch_maps(size_bytes)
    blocks = 1 if warm_up else best_of(size_bytes)
    touch = float("inf")
    write: float | None = None
    read = 0.0
    sync_ns: float | None = None
    sync_error = None
    for i in range(maps):
        with _mapped(map_fd, size_bytes, prot, flags) as addr:
            touch = min(touch, _touch(addr, size_bytes, writable))
            if i < maps - 1:
                continue
            write, read = _bandwidth(addr, size_bytes, blocks, writable)
            if sync:
                try:
                    sync_ns = _sync_pairs(fd, writable, 1 if warm_up else SYNC_BLOCKS)
                except _SyncError as exc:
                    sync_error = describe_oserror("DMA_BUF_IOCTL_SYNC", exc.cause)
    return Sample(size_bytes, Figures(mmap_ns, touch, write, read, sync_ns), sync_error)
