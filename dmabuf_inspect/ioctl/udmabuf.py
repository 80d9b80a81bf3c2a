"""udmabuf: dma-bufs made from a memfd's pages, through /dev/udmabuf.

The kernel wants a shmem (or hugetlb) memfd sealed with F_SEAL_SHRINK and without
F_SEAL_WRITE, page-aligned offsets and sizes, at most `size_limit_mb` in all and at most
`list_limit` items per list (both are module parameters under /sys/module/udmabuf/parameters).

    with udmabuf.create_with_memfd(1 << 20) as buf:     # makes and seals the memfd too
        m = buf.mmap()

    with udmabuf.UdmabufDevice.open() as dev:
        buf = dev.create(memfd, offset=0, size=4096)
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass

from dmabuf_inspect.errors import InvalidArgumentError, device_permission_cause, syscall_error
from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.ioctl.buffer import DmaBuf, checked_ioctl, fd_target
from dmabuf_inspect.ioctl.handle import OwnedFd
from dmabuf_inspect.kernel.devices import read_udmabuf_param
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.textsafe import escape

EXPORTER = "udmabuf"
DEVICE_NAME = "udmabuf"
MEMFD_NAME = "dmabuf-inspect"
UDEV_MATCH = 'KERNEL=="udmabuf"'
F_SEAL_FUTURE_WRITE = 0x0010  # include/uapi/linux/fcntl.h; Python's fcntl lacks it before 3.12


@dataclass(frozen=True, slots=True)
class UdmabufItem:
    """One range of a memfd: an entry of `udmabuf_create_list`."""

    memfd: int
    offset_bytes: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class UdmabufLimits:
    size_limit_mb: int | None
    list_limit: int | None


def read_limits(sys_root: str = "/sys") -> UdmabufLimits:
    """The module's size_limit_mb and list_limit on this machine; None where unreadable."""
    sys = Tree(sys_root, live=True)
    return UdmabufLimits(read_udmabuf_param(sys, "size_limit_mb"), read_udmabuf_param(sys, "list_limit"))


def make_memfd(size_bytes: int, *, name: str = MEMFD_NAME, seal_shrink: bool = True, hugetlb: bool = False) -> int:
    """memfd_create(MFD_ALLOW_SEALING | MFD_CLOEXEC), ftruncate to `size_bytes`, seal F_SEAL_SHRINK."""
    flags = os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC | (os.MFD_HUGETLB if hugetlb else 0)
    try:
        fd = os.memfd_create(name, flags)
    except OSError as exc:
        raise syscall_error(
            "Creating memfd",
            exc,
            {
                errno.EINVAL: "this kernel refuses these memfd flags (hugetlb needs CONFIG_HUGETLBFS)",
                errno.ENOSYS: "this kernel has no memfd_create (before 3.17)",
            },
        ) from None
    try:
        try:
            os.ftruncate(fd, size_bytes)
        except OSError as exc:
            raise syscall_error(
                f"Sizing memfd to {size_bytes} bytes",
                exc,
                {
                    errno.EINVAL: "the size must be a non-negative multiple of the (huge) page size",
                    errno.EFBIG: "the size is larger than a file may be",
                },
            ) from None
        if seal_shrink:
            try:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
            except OSError as exc:
                raise syscall_error("Sealing memfd with F_SEAL_SHRINK", exc) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _seal_problem(memfd: int) -> str | None:
    try:
        seals = fcntl.fcntl(memfd, fcntl.F_GET_SEALS)
    except OSError:
        return None
    if not seals & fcntl.F_SEAL_SHRINK:
        return f"memfd {memfd} is not sealed with F_SEAL_SHRINK"
    if seals & fcntl.F_SEAL_WRITE:
        return f"memfd {memfd} has F_SEAL_WRITE, which udmabuf refuses"
    if seals & F_SEAL_FUTURE_WRITE:
        return f"memfd {memfd} has F_SEAL_FUTURE_WRITE, which udmabuf refuses"
    return None


def _range_problem(item: UdmabufItem) -> str | None:
    try:
        size = os.fstat(item.memfd).st_size
    except OSError:
        return None
    if item.offset_bytes + item.size_bytes > size:
        return (
            f"offset {item.offset_bytes} + size {item.size_bytes} runs past the end of memfd "
            f"{item.memfd} ({size} bytes)"
        )
    return None


def _explain_einval(items: list[UdmabufItem], limits: UdmabufLimits) -> str:
    """The one reason the kernel most likely refused these items, or all the rules."""
    page = mmap.PAGESIZE
    total = 0
    for item in items:
        if item.offset_bytes % page:
            return f"offset {item.offset_bytes} is not a multiple of the page size ({page})"
        if item.size_bytes % page:
            return f"size {item.size_bytes} is not a multiple of the page size ({page})"
        total += item.size_bytes
    if total == 0:
        return "the size must not be zero"
    if limits.size_limit_mb is not None and total > limits.size_limit_mb << 20:
        return (
            f"{total} bytes is over the module's size_limit_mb ({limits.size_limit_mb} MiB; "
            "raise /sys/module/udmabuf/parameters/size_limit_mb as root)"
        )
    if limits.list_limit is not None and len(items) > limits.list_limit:
        return (
            f"{len(items)} items is over the module's list_limit ({limits.list_limit}; "
            "raise /sys/module/udmabuf/parameters/list_limit as root)"
        )
    for item in items:
        problem = _seal_problem(item.memfd) or _range_problem(item)
        if problem:
            return problem
    return (
        "the memfd must be sealed with F_SEAL_SHRINK and have no write seal, and offset and size "
        "must be page aligned and within size_limit_mb"
    )


class UdmabufDevice(OwnedFd):
    """/dev/udmabuf, open (see OwnedFd: a context manager, closed once)."""

    __slots__ = ("limits", "path")

    def __init__(self, fd: int, path: str, limits: UdmabufLimits | None = None) -> None:
        super().__init__(fd)
        self.path = path
        self.limits = limits or UdmabufLimits(None, None)

    def _label(self) -> str:
        return f"udmabuf device {escape(self.path)}"

    def _repr_fields(self) -> str:
        return f", path={self.path!r}, size_limit_mb={self.limits.size_limit_mb}, list_limit={self.limits.list_limit}"

    @classmethod
    def open(cls, dev_root: str = "/dev", sys_root: str = "/sys") -> UdmabufDevice:
        path = os.path.join(dev_root, DEVICE_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise syscall_error(
                f"Opening {path}",
                exc,
                {
                    errno.ENOENT: (
                        "the kernel lacks CONFIG_UDMABUF, or the udmabuf module is not loaded (modprobe udmabuf)"
                    ),
                    errno.ENXIO: f"{path} has no driver behind it (modprobe udmabuf)",
                    errno.ENODEV: f"{path} has no driver behind it (modprobe udmabuf)",
                    errno.EACCES: device_permission_cause(path, UDEV_MATCH),
                    errno.EPERM: device_permission_cause(path, UDEV_MATCH),
                },
            ) from None
        return cls(fd, path, read_limits(sys_root))

    def _causes(self, items: list[UdmabufItem]) -> dict[int, str]:
        memfds = sorted({i.memfd for i in items})
        what = ", ".join(f"fd {fd} ({fd_target(fd)})" for fd in memfds)
        return {
            errno.EINVAL: _explain_einval(items, self.limits),
            errno.EBADFD: f"{what}: not a shmem or hugetlb memfd (make one with memfd_create)",
            errno.EBADF: f"{what}: not an open file descriptor",
            errno.ENOTTY: f"{self.path} ({fd_target(self.fd)}) is not the udmabuf device",
            errno.ENOMEM: "the kernel could not pin the memfd's pages; free some memory or ask for less",
        }

    def create(self, memfd: int, offset: int, size: int, *, cloexec: bool = True) -> DmaBuf:
        """UDMABUF_CREATE: a dma-buf over `size` bytes of `memfd` from `offset`."""
        arg = uapi.udmabuf_create(
            memfd=memfd, flags=uapi.UDMABUF_FLAGS_CLOEXEC if cloexec else 0, offset=offset, size=size
        )
        items = [UdmabufItem(memfd, offset, size)]
        fd = checked_ioctl(
            self.fd,
            uapi.UDMABUF_CREATE,
            arg,
            step=f"Creating udmabuf ({size} bytes at offset {offset} of memfd {memfd})",
            causes=self._causes(items),
        )
        return DmaBuf(fd, exporter=EXPORTER)

    def create_list(self, items: Iterable[UdmabufItem | tuple[int, int, int]], *, cloexec: bool = True) -> DmaBuf:
        """UDMABUF_CREATE_LIST: one dma-buf over several memfd ranges, in order."""
        parts = [i if isinstance(i, UdmabufItem) else UdmabufItem(*i) for i in items]
        buf = uapi.udmabuf_create_list_buffer(
            uapi.UDMABUF_FLAGS_CLOEXEC if cloexec else 0,
            [(p.memfd, p.offset_bytes, p.size_bytes) for p in parts],
        )
        total = sum(p.size_bytes for p in parts)
        fd = checked_ioctl(
            self.fd,
            uapi.UDMABUF_CREATE_LIST,
            buf,
            step=f"Creating udmabuf from a list of {len(parts)} items ({total} bytes)",
            causes=self._causes(parts),
        )
        return DmaBuf(fd, exporter=EXPORTER)


def create(
    memfd: int,
    offset: int,
    size: int,
    *,
    cloexec: bool = True,
    dev_root: str = "/dev",
    sys_root: str = "/sys",
) -> DmaBuf:
    """UDMABUF_CREATE through a /dev/udmabuf opened for this call."""
    with UdmabufDevice.open(dev_root, sys_root) as dev:
        return dev.create(memfd, offset, size, cloexec=cloexec)


def create_list(
    items: Iterable[UdmabufItem | tuple[int, int, int]],
    *,
    cloexec: bool = True,
    dev_root: str = "/dev",
    sys_root: str = "/sys",
) -> DmaBuf:
    """UDMABUF_CREATE_LIST through a /dev/udmabuf opened for this call."""
    with UdmabufDevice.open(dev_root, sys_root) as dev:
        return dev.create_list(items, cloexec=cloexec)


def create_with_memfd(
    size_bytes: int,
    *,
    cloexec: bool = True,
    dev_root: str = "/dev",
    sys_root: str = "/sys",
    device: UdmabufDevice | None = None,
    name: str = MEMFD_NAME,
) -> DmaBuf:
    """A new sealed memfd of `size_bytes` and a udmabuf over all of it; the DmaBuf owns both."""
    if size_bytes <= 0:
        raise InvalidArgumentError(f"udmabuf size must be positive, not {size_bytes}")
    memfd = make_memfd(size_bytes, name=name)
    try:
        if device is not None:
            buf = device.create(memfd, 0, size_bytes, cloexec=cloexec)
        else:
            buf = create(memfd, 0, size_bytes, cloexec=cloexec, dev_root=dev_root, sys_root=sys_root)
    except BaseException:
        os.close(memfd)
        raise
    return DmaBuf(buf.detach(), exporter=EXPORTER, memfd=memfd)
