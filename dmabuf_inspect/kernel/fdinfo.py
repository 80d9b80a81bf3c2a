"""`/proc/PID/fdinfo/N` of a dma-buf fd.

pos:	0
flags:	02
mnt_id:	15
ino:	1033          (since 5.14)
size:	4096          (dma_buf_show_fdinfo() from here on)
count:	1
exp_name:	udmabuf
name:	anything      (only when set; the last line, so its text may hold newlines)
"""

from __future__ import annotations

from dmabuf_inspect.model import FdInfo
from dmabuf_inspect.textsafe import as_bytes as _as_bytes


class FdinfoParseError(ValueError):
    """The text is not the fdinfo of a dma-buf."""


def _int(value: bytes, base: int = 10) -> int:
    try:
        return int(value.strip(), base)
    except ValueError:
        raise FdinfoParseError(f"not a number: {value[:40]!r}") from None


def parse_fdinfo(data: bytes | str) -> FdInfo:
    """Parse fdinfo text; raise FdinfoParseError when `size`/`count`/`exp_name` are missing.

    Before 5.3 a dma-buf's fdinfo has only pos/flags/mnt_id: that raises too.
    """
    raw = _as_bytes(data)
    fields: dict[bytes, bytes] = {}
    name: bytes | None = None
    rest = raw
    while rest:
        line, sep, rest = rest.partition(b"\n")
        key, colon, value = line.partition(b":")
        if not colon:
            continue
        if key == b"name":
            # dma_buf_show_fdinfo() prints name last; the kernel does not escape it.
            name = (value + sep + rest).removeprefix(b"\t").removesuffix(b"\n")
            break
        fields.setdefault(key, value)
    for required in (b"size", b"count", b"exp_name"):
        if required not in fields:
            raise FdinfoParseError(f"no {required.decode()}: line (not a dma-buf fdinfo?)")
    return FdInfo(
        pos=_int(fields.get(b"pos", b"0")),
        flags=_int(fields.get(b"flags", b"0"), 8),
        mnt_id=_int(fields[b"mnt_id"]) if b"mnt_id" in fields else None,
        inode=_int(fields[b"ino"]) if b"ino" in fields else None,
        size_bytes=_int(fields[b"size"]),
        count=_int(fields[b"count"]),
        exp_name=fields[b"exp_name"].strip().decode("utf-8", "surrogateescape"),
        name=None if name is None else name.decode("utf-8", "surrogateescape"),
    )
