"""Where the kernel files are read from: the live system, or a captured tree.

A captured tree mirrors the live layout under one directory per root (`proc/`, `sys/`,
`sys/kernel/debug/`, `dev/`). Its fd links are plain symlinks whose targets are only ever
read as text; no path in it is followed outside its root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LIVE_PROC = "/proc"


class OutsideRootError(PermissionError):
    """A captured tree tried to lead a read outside its root."""


@dataclass(frozen=True, slots=True)
class Roots:
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    debugfs_root: str = "/sys/kernel/debug"
    dev_root: str = "/dev"

    @classmethod
    def from_tree(cls, tree: str) -> Roots:
        """Roots of a capture made by `dmabuf-inspect capture` (or laid out the same way)."""
        return cls(
            proc_root=os.path.join(tree, "proc"),
            sys_root=os.path.join(tree, "sys"),
            debugfs_root=os.path.join(tree, "sys", "kernel", "debug"),
            dev_root=os.path.join(tree, "dev"),
        )

    @property
    def live(self) -> bool:
        """True when /proc is the real one, so fd links may be followed (stat)."""
        return os.path.realpath(self.proc_root) == LIVE_PROC


def _contained(root: str, path: str) -> str:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise OutsideRootError(f"{path} leads outside {root}")
    return real


def read_bytes(root: str, path: str, *, live: bool, limit: int = 1 << 24) -> bytes:
    """Read a whole file under `root`; in a capture, refuse what resolves outside it."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    if not live:
        path = _contained(root, path)
        flags |= os.O_NONBLOCK  # a FIFO in a capture must not hang the scan
    fd = os.open(path, flags)
    try:
        chunks = []
        total = 0
        while total < limit:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(root: str, path: str, *, live: bool) -> str:
    return read_bytes(root, path, live=live).decode("utf-8", "surrogateescape")


def listdir(root: str, path: str, *, live: bool) -> list[str]:
    if not live:
        path = _contained(root, path)
    return os.listdir(path)
