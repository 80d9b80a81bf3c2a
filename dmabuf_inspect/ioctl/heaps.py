"""Allocating dma-bufs from a dma-buf heap (/dev/dma_heap/NAME, DMA_HEAP_IOCTL_ALLOC).

    with heaps_alloc.heap_alloc("system", 1 << 20) as buf:
        ...

    with heaps_alloc.DmaHeap.open("system") as heap:
        bufs = [heap.alloc(4096) for _ in range(8)]

The kernel rounds the length up to whole pages; `DmaBuf.size_bytes` tells the real size.
"""

from __future__ import annotations

import errno
import os

from dmabuf_inspect.errors import InvalidArgumentError, device_permission_cause, syscall_error
from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.ioctl.buffer import DmaBuf, checked_ioctl, fd_target
from dmabuf_inspect.ioctl.handle import OwnedFd
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.textsafe import escape

HEAP_DIR = "dma_heap"
DEFAULT_FD_FLAGS = os.O_RDWR | os.O_CLOEXEC


def heap_names(dev_root: str = "/dev") -> list[str] | None:
    """Names under DEV_ROOT/dma_heap, sorted; None when the directory does not exist. The nodes
    that `DmaHeap.open` would open: a live tree, whatever DEV_ROOT is (allocations are live)."""
    try:
        return sorted(Tree(dev_root, live=True).listdir(HEAP_DIR))
    except OSError:
        return None


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidArgumentError(f"{escape(name)!s} is not a heap name")


def _missing_heap(name: str, dev_root: str) -> str:
    heap_dir = os.path.join(dev_root, HEAP_DIR)
    names = heap_names(dev_root)
    if names is None:
        return (
            f"no {heap_dir}: this kernel has no dma-buf heaps "
            "(CONFIG_DMABUF_HEAPS with CONFIG_DMABUF_HEAPS_SYSTEM or another heap driver)"
        )
    if not names:
        return f"no heap {escape(name)} in {heap_dir}, which is empty"
    return f"no heap {escape(name)} in {heap_dir} (heaps here: {', '.join(escape(n) for n in names)})"


def _explain_einval(size_bytes: int, fd_flags: int, heap_flags: int) -> str:
    if fd_flags & ~uapi.DMA_HEAP_VALID_FD_FLAGS:
        return (
            f"fd_flags 0x{fd_flags & 0xFFFFFFFF:x} may hold only O_RDONLY/O_WRONLY/O_RDWR and O_CLOEXEC "
            f"(DMA_HEAP_VALID_FD_FLAGS 0x{uapi.DMA_HEAP_VALID_FD_FLAGS:x})"
        )
    if heap_flags & ~uapi.DMA_HEAP_VALID_HEAP_FLAGS:
        return (
            f"heap_flags 0x{heap_flags & 0xFFFFFFFFFFFFFFFF:x} must be 0: "
            "no heap flags are defined (DMA_HEAP_VALID_HEAP_FLAGS)"
        )
    if size_bytes == 0:
        return "the size must not be zero"
    return "fd_flags may hold only the access mode and O_CLOEXEC, heap_flags must be 0, and the size must not be zero"


class DmaHeap(OwnedFd):
    """A dma-buf heap device, open (see OwnedFd: a context manager, closed once)."""

    __slots__ = ("name", "path")

    def __init__(self, fd: int, name: str, path: str) -> None:
        super().__init__(fd)
        self.name = name
        self.path = path

    def _label(self) -> str:
        return f"dma-buf heap {escape(self.name)} ({escape(self.path)})"

    def _repr_fields(self) -> str:
        return f", name={self.name!r}, path={self.path!r}"

    @classmethod
    def open(cls, name: str, dev_root: str = "/dev") -> DmaHeap:
        _check_name(name)
        path = os.path.join(dev_root, HEAP_DIR, name)
        udev_match = f'SUBSYSTEM=="dma_heap", KERNEL=="{name}"'
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise syscall_error(
                f"Opening dma-buf heap {escape(name)} ({path})",
                exc,
                {
                    errno.ENOENT: _missing_heap(name, dev_root),
                    errno.EACCES: device_permission_cause(path, udev_match),
                    errno.EPERM: device_permission_cause(path, udev_match),
                    errno.ENXIO: f"{path} has no heap driver behind it",
                    errno.ENODEV: f"{path} has no heap driver behind it",
                },
            ) from None
        return cls(fd, name, path)

    def alloc(self, size_bytes: int, *, fd_flags: int = DEFAULT_FD_FLAGS, heap_flags: int = 0) -> DmaBuf:
        """DMA_HEAP_IOCTL_ALLOC: a new dma-buf of `size_bytes` (rounded up to pages by the kernel)."""
        arg = uapi.dma_heap_allocation_data(len=size_bytes, fd=0, fd_flags=fd_flags & 0xFFFFFFFF, heap_flags=heap_flags)
        checked_ioctl(
            self.fd,
            uapi.DMA_HEAP_IOCTL_ALLOC,
            arg,
            step=f"Allocating {size_bytes} bytes from dma-buf heap {escape(self.name)}",
            causes={
                errno.EINVAL: _explain_einval(size_bytes, fd_flags, heap_flags),
                errno.ENOTTY: f"{self.path} ({fd_target(self.fd)}) is not a dma-buf heap",
                errno.ENOMEM: (
                    f"heap {escape(self.name)} could not find {size_bytes} bytes; free some memory or ask for less"
                ),
            },
        )
        return DmaBuf(arg.fd, exporter=self.name)


def heap_alloc(
    name: str,
    size_bytes: int,
    *,
    fd_flags: int = DEFAULT_FD_FLAGS,
    heap_flags: int = 0,
    dev_root: str = "/dev",
) -> DmaBuf:
    """Open /dev/dma_heap/NAME, allocate one buffer, close the heap."""
    with DmaHeap.open(name, dev_root) as heap:
        return heap.alloc(size_bytes, fd_flags=fd_flags, heap_flags=heap_flags)
