"""A known dma-buf load for benchmarks and churn tests: N processes x M system-heap buffers.

Each child allocates its own buffers, maps every `map_every`-th one, and holds them until the
parent's pipe closes. `shared` buffers are made by the parent before the fork, so every child
holds them too. Needs /dev/dma_heap/system (the kernel lab).
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from dmabuf_inspect.ioctl import uapi

HEAP = "/dev/dma_heap/system"


def heap_alloc(heap_fd: int, size: int) -> int:
    data = uapi.dma_heap_allocation_data(len=size, fd=0, fd_flags=os.O_RDWR | os.O_CLOEXEC, heap_flags=0)
    buf = bytearray(bytes(data))
    fcntl.ioctl(heap_fd, uapi.DMA_HEAP_IOCTL_ALLOC, buf)
    return int(uapi.dma_heap_allocation_data.from_buffer(buf).fd)


def _child(heap_fd: int, per_proc: int, size: int, map_every: int, ready_w: int, hold_r: int) -> None:
    fds = [heap_alloc(heap_fd, size) for _ in range(per_proc)]
    maps = [mmap.mmap(fd, size) for i, fd in enumerate(fds) if map_every and i % map_every == 0]
    os.write(ready_w, b"x")
    os.read(hold_r, 1)  # returns when the parent closes its end
    del maps


@contextmanager
def load(
    processes: int, per_proc: int, *, shared: int = 8, size: int = 4096, map_every: int = 4
) -> Iterator[list[int]]:
    """Start the load; yield the child pids; tear it down on exit."""
    heap_fd = os.open(HEAP, os.O_RDWR | os.O_CLOEXEC)
    shared_fds = [heap_alloc(heap_fd, size) for _ in range(shared)]
    for fd in shared_fds:
        os.set_inheritable(fd, True)
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pids: list[int] = []
    try:
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(ready_r)
                    os.close(hold_w)
                    _child(heap_fd, per_proc, size, map_every, ready_w, hold_r)
                except BaseException:
                    code = 1
                os._exit(code)
            pids.append(pid)
        os.close(ready_w)
        got = 0
        while got < processes:
            chunk = os.read(ready_r, processes)
            if not chunk:
                raise RuntimeError(f"only {got} of {processes} load processes became ready")
            got += len(chunk)
        yield pids
    finally:
        os.close(hold_w)
        for pid in pids:
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os.close(hold_r)
        os.close(ready_r)
        for fd in shared_fds:
            os.close(fd)
        os.close(heap_fd)
