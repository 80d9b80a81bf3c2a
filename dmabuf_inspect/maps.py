"""`/proc/PID/maps` lines of dma-buf mappings.

    7f1c2a000000-7f1c2a100000 rw-s 00000000 00:0f 1033                       /dmabuf:frame
    ADDRESS-RANGE             PERM OFFSET   DEV   INODE                      PATH

dmabuffs_dname() names the path `/dmabuf:NAME` (NAME empty when unset, since 5.3; before, the
path was `anon_inode:dmabuf` with one inode shared by every anon-inode file, so such lines are
not returned). show_map() escapes `\\n` in the path as `\\012` and nothing else, so a name
holding the four characters `\\012` reads back as a newline. Nothing follows the path: trailing
spaces are the name's, and d_path() never appends ` (deleted)` to a d_dname() path. i915 and
etnaviv swap vm_file to their GEM object, so their mappings never show here.
"""

from __future__ import annotations

from .model import MapEntry
from .textsafe import as_bytes as _as_bytes

_MARK = b" /dmabuf:"


def _unescape(name: bytes) -> bytes:
    return name.replace(b"\\012", b"\n")


def parse_maps(data: bytes | str) -> list[MapEntry]:
    """Every well-formed `/dmabuf:` line; other and malformed lines are skipped. Never raises."""
    raw = _as_bytes(data)
    if _MARK not in raw:
        return []
    entries: list[MapEntry] = []
    for line in raw.split(b"\n"):
        at = line.find(_MARK)
        if at < 0:
            continue
        fields = line[:at].split()
        if len(fields) != 5:
            continue
        addr, perms, offset, _dev, inode = fields
        lo, dash, hi = addr.partition(b"-")
        try:
            start, end = int(lo, 16), int(hi, 16)
            off, ino = int(offset, 16), int(inode)
        except ValueError:
            continue
        if not dash or end < start:
            continue
        name = _unescape(line[at + len(_MARK) :])
        entries.append(
            MapEntry(
                start=start,
                end=end,
                perms=perms.decode("ascii", "replace"),
                offset_bytes=off,
                inode=ino,
                name=name.decode("utf-8", "surrogateescape") or None,
            )
        )
    return entries
