"""sysfs: legacy per-buffer statistics and the udmabuf module's limits.

    /sys/kernel/dmabuf/buffers/INO/exporter_name   "system\\n"
    /sys/kernel/dmabuf/buffers/INO/size            "4096\\n"
    /sys/module/udmabuf/parameters/size_limit_mb   "64\\n"
    /sys/module/udmabuf/parameters/list_limit      "1024\\n"

The buffers directory (CONFIG_DMABUF_SYSFS_STATS) came in 5.13, was backported to Android's
5.10, deprecated soon after; a 2025 RFC removes it after the 6.18 LTS. A buffer's directory goes
when the buffer is freed, and a read that races with the free returns EIO.
"""

from __future__ import annotations

import errno
import os
import re

from dmabuf_inspect.kernel import reader as roots
from dmabuf_inspect.model import SysfsBuffer

BUFFERS_DIR = ("kernel", "dmabuf", "buffers")
UDMABUF_PARAMETERS_DIR = ("module", "udmabuf", "parameters")
_VANISHED = (errno.ENOENT, errno.ENOTDIR, errno.EIO)
_INT = re.compile(r"-?[0-9]{1,19}")


class SysfsParseError(ValueError):
    """A sysfs buffer directory held text that is not an exporter name and a size."""


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


def parse_sysfs_buffer(inode: int, exporter_name_text: bytes | str, size_text: bytes | str) -> SysfsBuffer:
    """One buffer's directory: the two files' contents as read. Raises SysfsParseError."""
    exporter = _text(exporter_name_text).removesuffix("\n")
    size = _text(size_text).strip()
    if not exporter:
        raise SysfsParseError(f"buffer {inode}: empty exporter_name")
    if not (size.isascii() and size.isdigit()) or len(size) > 20:
        raise SysfsParseError(f"buffer {inode}: size is not a number: {size[:40]!r}")
    return SysfsBuffer(inode=inode, exporter_name=exporter, size_bytes=int(size))


def read_sysfs_buffers(sys_root: str, *, live: bool) -> list[SysfsBuffer]:
    """Every `<sys_root>/kernel/dmabuf/buffers/INO`, by inode.

    A missing buffers directory raises FileNotFoundError (the kernel has no such stats).
    Buffers freed during the walk, and directories that are not a buffer's, are skipped.
    """
    top = os.path.join(sys_root, *BUFFERS_DIR)
    buffers: list[SysfsBuffer] = []
    for entry in roots.listdir(sys_root, top, live=live):
        if not (entry.isascii() and entry.isdigit()) or len(entry) > 20:
            continue
        try:
            exporter = roots.read_bytes(sys_root, os.path.join(top, entry, "exporter_name"), live=live)
            size = roots.read_bytes(sys_root, os.path.join(top, entry, "size"), live=live)
        except OSError as exc:
            if exc.errno in _VANISHED:
                continue
            raise
        try:
            buffers.append(parse_sysfs_buffer(int(entry), exporter, size))
        except SysfsParseError:
            continue
    buffers.sort(key=lambda b: b.inode)
    return buffers


def _read_int(sys_root: str, path: str, *, live: bool) -> int | None:
    try:
        text = roots.read_text(sys_root, path, live=live).strip()
    except OSError:
        return None
    return int(text) if _INT.fullmatch(text) else None


def read_udmabuf_params(sys_root: str, *, live: bool) -> tuple[int | None, int | None]:
    """(size_limit_mb, list_limit) of the udmabuf module; None where absent or unreadable."""
    params = os.path.join(sys_root, *UDMABUF_PARAMETERS_DIR)
    return (
        _read_int(sys_root, os.path.join(params, "size_limit_mb"), live=live),
        _read_int(sys_root, os.path.join(params, "list_limit"), live=live),
    )
