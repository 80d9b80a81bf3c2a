"""sysfs: legacy per-buffer statistics (the udmabuf module's limits: kernel/devices.py).

    /sys/kernel/dmabuf/buffers/INO/exporter_name   "system\\n"
    /sys/kernel/dmabuf/buffers/INO/size            "4096\\n"

The buffers directory (CONFIG_DMABUF_SYSFS_STATS) came in 5.13, was backported to Android's
5.10, deprecated soon after; a 2025 RFC removes it after the 6.18 LTS. A buffer's directory goes
when the buffer is freed, and a read that races with the free returns EIO.
"""

from __future__ import annotations

import errno

from dmabuf_inspect.kernel.reader import GONE, Tree, gap_kind
from dmabuf_inspect.model import SysfsBuffer

BUFFERS_DIR = "kernel/dmabuf/buffers"
# A buffer's directory goes when it is freed: its files then read ENOENT/ENOTDIR, or EIO when
# the read races with the free.
_VANISHED = frozenset({errno.ENOENT, errno.ESRCH, errno.ENOTDIR, errno.EIO})


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


def read_sysfs_buffers(sys: Tree) -> list[SysfsBuffer]:
    """Every `kernel/dmabuf/buffers/INO` under the /sys tree `sys`, by inode.

    A missing buffers directory raises FileNotFoundError (the kernel has no such stats); any
    other error reading it or a buffer's files is raised as it came (reader.gap_kind tells).
    Buffers freed during the walk, and directories that are not a buffer's, are skipped.
    """
    buffers: list[SysfsBuffer] = []
    for entry in sys.listdir(BUFFERS_DIR):
        if not (entry.isascii() and entry.isdigit()) or len(entry) > 20:
            continue
        try:
            exporter = sys.read(f"{BUFFERS_DIR}/{entry}/exporter_name")
            size = sys.read(f"{BUFFERS_DIR}/{entry}/size")
        except OSError as exc:
            if gap_kind(exc, gone=_VANISHED) == GONE:
                continue
            raise
        try:
            buffers.append(parse_sysfs_buffer(int(entry), exporter, size))
        except SysfsParseError:
            continue
    buffers.sort(key=lambda b: b.inode)
    return buffers
