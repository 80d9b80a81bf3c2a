from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dmabuf_inspect.textsafe import escape, json_name


def test_escape_makes_controls_visible() -> None:
    assert escape("a\x1b[31mb") == "a\\x1b[31mb"
    assert escape("x\ny\tz\r") == "x\\ny\\tz\\r"
    assert escape("\x9b2J") == "\\x9b2J"  # C1 CSI
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("line\u2028sep") == "line\\u2028sep"
    assert escape(None) == "-"
    assert escape("frame-é") == "frame-é"


def test_undecodable_bytes_show_as_hex() -> None:
    raw = b"\xff\xfename"
    assert escape(raw.decode("utf-8", "surrogateescape")) == "\\xff\\xfename"


def test_json_name_keeps_exact_bytes() -> None:
    text, raw_hex = json_name(b"ok\xff".decode("utf-8", "surrogateescape"))
    assert text == "ok\ufffd"
    assert raw_hex == b"ok\xff".hex()
    assert json_name("plain") == ("plain", None)


@given(st.binary(max_size=64))
def test_escaped_text_has_no_control_characters(raw: bytes) -> None:
    shown = escape(raw.decode("utf-8", "surrogateescape"))
    assert all(ch.isprintable() for ch in shown)
    assert "\x1b" not in shown
