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

from itertools import repeat
from operator import itemgetter, lt

from dmabuf_inspect.model import MapEntry
from dmabuf_inspect.textsafe import as_bytes as _as_bytes

_MARK = b" /dmabuf:"
_PATH = b"/dmabuf:"


def _unescape(name: bytes) -> bytes:
    return name.replace(b"\\012", b"\n")


def parse_maps(data: bytes | str) -> list[MapEntry]:
    """Every well-formed `/dmabuf:` line; other and malformed lines are skipped. Never raises."""
    return [e for e in parse_lines(dmabuf_lines(_as_bytes(data))) if e is not None]


def dmabuf_lines(raw: bytes) -> list[bytes]:
    """The lines that hold ` /dmabuf:`: most of a process's maps are not dma-bufs, and are not
    even split apart."""
    lines = []
    at = raw.find(_MARK)
    while at >= 0:
        stop = raw.find(b"\n", at)
        if stop < 0:
            stop = len(raw)
        lines.append(raw[raw.rfind(b"\n", 0, at) + 1 : stop])
        at = raw.find(_MARK, stop)
    return lines


def parse_lines(lines: list[bytes]) -> list[MapEntry | None]:
    """One entry per line, None for a malformed one. Field by field in C for all lines at once;
    line by line when one of them is malformed."""
    if not lines:
        return []
    parts = list(map(bytes.split, lines, repeat(None), repeat(5)))
    if set(map(len, parts)) != {6}:
        return list(map(_entry, lines))
    addrs, perms, offsets, _devs, inodes, paths = zip(*parts, strict=True)
    if not all(map(bytes.startswith, paths, repeat(_PATH))):
        return list(map(_entry, lines))
    lows, dashes, highs = zip(*map(bytes.partition, addrs, repeat(b"-")), strict=True)
    try:
        starts = list(map(int, lows, repeat(16)))
        ends = list(map(int, highs, repeat(16)))
        offs = list(map(int, offsets, repeat(16)))
        inos = list(map(int, inodes, repeat(10)))
    except ValueError:
        return list(map(_entry, lines))
    if b"" in dashes or any(map(lt, ends, starts)):
        return list(map(_entry, lines))
    names = list(map(itemgetter(slice(len(_PATH), None)), paths))
    name_of = {n: _unescape(n).decode("utf-8", "surrogateescape") or None for n in set(names)}
    perm_of = {p: p.decode("ascii", "replace") for p in set(perms)}
    return list(
        map(
            tuple.__new__,
            repeat(MapEntry),
            zip(
                starts,
                ends,
                map(perm_of.__getitem__, perms),
                offs,
                inos,
                map(name_of.__getitem__, names),
                strict=True,
            ),
        )
    )


def _entry(line: bytes) -> MapEntry | None:
    at = line.find(_MARK)
    fields = line[:at].split()
    if len(fields) != 5:
        return None
    addr, perms, offset, _dev, inode = fields
    lo, dash, hi = addr.partition(b"-")
    try:
        start, end = int(lo, 16), int(hi, 16)
        off, ino = int(offset, 16), int(inode)
    except ValueError:
        return None
    if not dash or end < start:
        return None
    text = _unescape(line[at + len(_MARK) :]).decode("utf-8", "surrogateescape") or None
    return MapEntry(start, end, perms.decode("ascii", "replace"), off, ino, text)
