"""The base of every object here that owns a file descriptor: DmaBuf, SyncFile, DmaHeap,
UdmabufDevice.

    with DmaHeap.open("system") as heap:      # a context manager: closed on the way out
        heap.alloc(4096).close()
    heap.close()                              # closing twice does nothing
    heap.fd                                   # ValueError: dma-buf heap ... is closed

`close()` closes the fd once (and whatever `_release()` of a subclass frees: mappings, a
memfd); `detach()` hands the fd to the caller instead. The repr shows the fd, or `closed`.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import TypeVar

_H = TypeVar("_H", bound="OwnedFd")


class OwnedFd:
    """An fd this process owns. A context manager; `close()` may be called twice; `fd` raises
    ValueError once it is closed."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def _label(self) -> str:
        """What the object is, for messages: 'dma-buf heap system (/dev/dma_heap/system)'."""
        return type(self).__name__

    def _repr_fields(self) -> str:
        """', name=value' pairs that follow the fd in the repr."""
        return ""

    def _release(self) -> None:
        """Free what the object owns besides its fd; called by every close(), so it must be
        safe to call again."""

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self._label()} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def detach(self) -> int:
        """Give up ownership of the fd and return it; close() no longer closes it."""
        fd, self._fd = self.fd, None
        return fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        try:
            self._release()
        finally:
            if fd is not None:
                os.close(fd)

    def __enter__(self: _H) -> _H:
        self.fd  # noqa: B018  # entering a closed object is an error, as for files
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        fd = "closed" if self._fd is None else f"fd={self._fd}"
        return f"{type(self).__name__}({fd}{self._repr_fields()})"
