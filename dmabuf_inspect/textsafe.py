"""Showing text that any process chose (buffer names, comm, cmdline) on a terminal.

A dma-buf name is up to 32 arbitrary bytes (DMA_BUF_SET_NAME); printed raw it could move the
cursor, retitle the terminal or hide lines. Everything shown goes through `escape()`.
"""

from __future__ import annotations

_SAFE = {"\\": "\\\\"}


def escape(text: str | None, *, none: str = "-") -> str:
    """Printable ASCII and printable non-ASCII stay; everything else becomes a visible escape.

    Control characters become `\\n`, `\\t`, `\\xNN` or `\\u2028`; undecodable bytes (kept by
    surrogateescape) become `\\xNN`; a backslash is doubled, so the result is unambiguous.
    """
    if text is None:
        return none
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for ch in text:
        o = ord(ch)
        if ch in _SAFE:
            out.append(_SAFE[ch])
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable() or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


def as_bytes(data: bytes | str) -> bytes:
    """Kernel text given as str back to its bytes; a lone surrogate that no byte made is U+FFFD."""
    if isinstance(data, bytes):
        return data
    try:
        return data.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join(
            "\ufffd" if "\ud800" <= c <= "\udfff" and not "\udc80" <= c <= "\udcff" else c for c in data
        ).encode("utf-8", "surrogateescape")


def to_bytes(text: str) -> bytes:
    """The exact bytes behind a name decoded with surrogateescape."""
    return text.encode("utf-8", "surrogateescape")


def json_name(text: str | None) -> tuple[str | None, str | None]:
    """(valid-UTF-8 name, hex of the exact bytes when they were not valid UTF-8)."""
    if text is None:
        return None, None
    raw = to_bytes(text)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), raw.hex()
