"""A dma-buf fd held by this process: its size, mappings, CPU access, name and fences.

`DmaBuf` owns one fd (and, for a udmabuf made here, its memfd); `SyncFile` owns a fence's fd;
both are `OwnedFd`s. The free functions take any dma-buf fd: `sync()` brackets CPU access
(DMA_BUF_IOCTL_SYNC), `set_name()` names the buffer (DMA_BUF_SET_NAME_B),
`export_sync_file()`/`import_sync_file()` move fences in and out.
Every failure is a `SyscallError` whose message names the step and the likely cause.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap as _mmap
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Literal

from dmabuf_inspect.errors import InvalidArgumentError, syscall_error
from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.ioctl.handle import OwnedFd
from dmabuf_inspect.kernel.reader import LIVE_PROC, Tree
from dmabuf_inspect.textsafe import escape

Access = Literal["read", "write", "rw"]

ACCESS_FLAGS: dict[str, int] = {
    "read": uapi.DMA_BUF_SYNC_READ,
    "write": uapi.DMA_BUF_SYNC_WRITE,
    "rw": uapi.DMA_BUF_SYNC_RW,
}
_ACCESS_WORDS = {"read": "read", "write": "write", "rw": "read/write"}


def access_flags(access: str) -> int:
    try:
        return ACCESS_FLAGS[access]
    except KeyError:
        raise InvalidArgumentError(f"access must be read, write or rw, not {access!r}") from None


def checked_ioctl(
    fd: int,
    request: int,
    arg: bytearray | bytes | ctypes.Structure,
    *,
    step: str,
    causes: dict[int, str] | None = None,
) -> int:
    """fcntl.ioctl with a mutable buffer (the kernel writes back into it); returns its int result.

    On failure, a SyscallError 'STEP: Text (ENAME): cause'.
    """
    try:
        if isinstance(arg, bytes):
            fcntl.ioctl(fd, request, arg)
            return 0
        return int(fcntl.ioctl(fd, request, arg, True))
    except OSError as exc:
        raise syscall_error(step, exc, causes) from None


_PROC = Tree(LIVE_PROC, live=True)  # this process's own fds: always the live /proc


def fd_target(fd: int) -> str:
    """What /proc/self/fd/N points at, escaped for a message ('not open', or '?' if unreadable)."""
    try:
        return escape(_PROC.readlink(f"self/fd/{fd}"))
    except FileNotFoundError:
        return "not open"
    except OSError:
        return "?"


def _not_a_dmabuf(fd: int) -> str:
    return f"fd {fd} ({fd_target(fd)}) is not a dma-buf"


def sync_start(fd: int, access: Access = "rw") -> None:
    """DMA_BUF_IOCTL_SYNC with DMA_BUF_SYNC_START: CPU access to the mapping begins."""
    _sync(fd, access_flags(access) | uapi.DMA_BUF_SYNC_START, access, "start")


def sync_end(fd: int, access: Access = "rw") -> None:
    """DMA_BUF_IOCTL_SYNC with DMA_BUF_SYNC_END: CPU access to the mapping ends."""
    _sync(fd, access_flags(access) | uapi.DMA_BUF_SYNC_END, access, "end")


def sync_flags(fd: int, flags: int) -> None:
    """DMA_BUF_IOCTL_SYNC with raw flags, for callers (and tests) that need exactly those bits."""
    _sync(fd, flags, f"flags 0x{flags:x}", "raw")


def _sync(fd: int, flags: int, access: str, phase: str) -> None:
    arg = uapi.dma_buf_sync(flags=flags)
    word = _ACCESS_WORDS.get(access, access)
    checked_ioctl(
        fd,
        uapi.DMA_BUF_IOCTL_SYNC,
        arg,
        step=f"Syncing dma-buf fd {fd} for CPU {word} ({phase})",
        causes={
            errno.EINVAL: (
                "the flags must ask for read, write or both, with START or END, and nothing else; "
                "some exporters also refuse END without an earlier START"
            ),
            errno.ENOTTY: _not_a_dmabuf(fd),
        },
    )


@contextmanager
def sync(fd: int, access: Access = "rw") -> Iterator[None]:
    """Bracket CPU access to a mapped dma-buf: START on entry, END on exit (even on error)."""
    sync_start(fd, access)
    try:
        yield
    finally:
        sync_end(fd, access)


def encode_name(name: str | bytes) -> bytes:
    """The bytes a name will have in the kernel; refuses what DMA_BUF_SET_NAME would cut or refuse."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise InvalidArgumentError(f"dma-buf name {escape(repr(name))} contains a NUL byte")
    if len(raw) >= uapi.DMA_BUF_NAME_LEN:
        raise InvalidArgumentError(
            f"dma-buf name {escape(raw.decode('utf-8', 'surrogateescape'))!s} is {len(raw)} bytes; "
            f"the kernel takes at most {uapi.DMA_BUF_NAME_LEN - 1} (DMA_BUF_NAME_LEN {uapi.DMA_BUF_NAME_LEN} "
            "with its NUL)"
        )
    return raw


def set_name(fd: int, name: str | bytes) -> None:
    """DMA_BUF_SET_NAME_B. The name shows in fdinfo, /proc/PID/maps and debugfs bufinfo."""
    raw = encode_name(name)
    # The argument is the string's address itself, not a pointer to a u64: ioctl(fd, req, buf).
    checked_ioctl(
        fd,
        uapi.DMA_BUF_SET_NAME_B,
        raw + b"\0",
        step=f"Naming dma-buf fd {fd}",
        causes={
            errno.EINVAL: f"the name must be shorter than {uapi.DMA_BUF_NAME_LEN} bytes",
            errno.EBUSY: "the buffer is attached to a device, and this kernel refuses to rename it then",
            errno.ENOTTY: _not_a_dmabuf(fd),
        },
    )


class SyncFile(OwnedFd):
    """A sync_file fd (a fence) this process owns."""

    __slots__ = ()

    def _label(self) -> str:
        return "sync_file"


def export_sync_file(fd: int, access: Access = "rw") -> SyncFile:
    """DMA_BUF_IOCTL_EXPORT_SYNC_FILE: the buffer's current fences for `access`, as a sync_file."""
    arg = uapi.dma_buf_export_sync_file(flags=access_flags(access), fd=-1)
    checked_ioctl(
        fd,
        uapi.DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
        arg,
        step=f"Exporting a sync_file from dma-buf fd {fd}",
        causes={
            errno.EINVAL: "the flags must be DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE or both",
            errno.ENOTTY: f"{_not_a_dmabuf(fd)}, or the kernel predates 6.0 or lacks CONFIG_SYNC_FILE",
        },
    )
    return SyncFile(arg.fd)


def import_sync_file(fd: int, sync_file: int | SyncFile, access: Access = "write") -> None:
    """DMA_BUF_IOCTL_IMPORT_SYNC_FILE: add the sync_file's fence to the buffer for `access`."""
    sync_fd = sync_file.fd if isinstance(sync_file, SyncFile) else sync_file
    arg = uapi.dma_buf_import_sync_file(flags=access_flags(access), fd=sync_fd)
    checked_ioctl(
        fd,
        uapi.DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
        arg,
        step=f"Importing sync_file fd {sync_fd} into dma-buf fd {fd}",
        causes={
            errno.EINVAL: (
                f"the flags must be DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE or both, and fd {sync_fd} "
                f"({fd_target(sync_fd)}) must be a sync_file"
            ),
            errno.ENOTTY: f"{_not_a_dmabuf(fd)}, or the kernel predates 6.0 or lacks CONFIG_SYNC_FILE",
        },
    )


def map_fd(fd: int, length: int, offset: int = 0, *, access: Access = "rw") -> _mmap.mmap:
    """A shared mapping of a dma-buf (Python's mmap dup()s the fd: one more fd while it lives)."""
    prot = {"read": _mmap.PROT_READ, "write": _mmap.PROT_WRITE, "rw": _mmap.PROT_READ | _mmap.PROT_WRITE}
    if access not in prot:
        raise InvalidArgumentError(f"access must be read, write or rw, not {access!r}")
    try:
        return _mmap.mmap(fd, length, _mmap.MAP_SHARED, prot[access], offset=offset)
    except OSError as exc:
        raise syscall_error(
            f"Mapping {length} bytes at offset {offset} of dma-buf fd {fd}",
            exc,
            {
                errno.EINVAL: (
                    "the offset must be page aligned and the range inside the buffer, "
                    "and the exporter must support mmap"
                ),
                errno.EACCES: "the fd's access mode does not allow this mapping (e.g. O_RDONLY and write)",
                errno.ENODEV: f"{_not_a_dmabuf(fd)}, or its exporter cannot be mapped",
            },
        ) from None


class DmaBuf(OwnedFd):
    """A dma-buf fd this process owns (see OwnedFd: a context manager, closed once).

    `size_bytes` and `inode` come from fstat(), which reports the buffer's own size and inode
    (the `ino:` of fdinfo). Mappings made with `mmap()`, and the memfd behind a udmabuf made by
    `udmabuf.create_with_memfd()`, are closed with the buffer; `detach()` hands over the fd
    alone (they stay).
    """

    __slots__ = ("_maps", "_memfd", "exporter", "inode", "size_bytes")

    def __init__(self, fd: int, *, exporter: str, memfd: int | None = None) -> None:
        st = os.fstat(fd)
        super().__init__(fd)
        self._memfd = memfd
        self._maps: list[_mmap.mmap] = []
        self.exporter = exporter
        self.size_bytes = st.st_size
        self.inode = st.st_ino

    def _label(self) -> str:
        return f"dma-buf {self.inode} ({escape(self.exporter)}, {self.size_bytes} bytes)"

    def _repr_fields(self) -> str:
        memfd = "" if self._memfd is None else f", memfd={self._memfd}"
        return f", exporter={self.exporter!r}, size_bytes={self.size_bytes}, inode={self.inode}{memfd}"

    @property
    def memfd(self) -> int | None:
        """The memfd behind a udmabuf made by `udmabuf.create_with_memfd()`; None otherwise."""
        return self._memfd

    def mmap(self, length: int | None = None, offset: int = 0, *, access: Access = "rw") -> _mmap.mmap:
        """Map the buffer (all of it by default); the mapping is closed with the buffer."""
        m = map_fd(self.fd, self.size_bytes - offset if length is None else length, offset, access=access)
        self._maps.append(m)
        return m

    def sync(self, access: Access = "rw") -> AbstractContextManager[None]:
        """`with buf.sync("write"):` brackets CPU access to its mappings."""
        return sync(self.fd, access)

    def set_name(self, name: str | bytes) -> None:
        set_name(self.fd, name)

    def export_sync_file(self, access: Access = "rw") -> SyncFile:
        return export_sync_file(self.fd, access)

    def import_sync_file(self, sync_file: int | SyncFile, access: Access = "write") -> None:
        import_sync_file(self.fd, sync_file, access)

    def _release(self) -> None:
        maps, self._maps = self._maps, []
        for m in maps:
            with suppress(BufferError):  # a memoryview still points into it; the GC unmaps it
                m.close()
        memfd, self._memfd = self._memfd, None
        if memfd is not None:
            os.close(memfd)
