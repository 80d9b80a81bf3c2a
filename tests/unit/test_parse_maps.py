"""/proc/PID/maps lines of dma-buf mappings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_inspect.kernel.maps import _entry, parse_lines, parse_maps
from dmabuf_inspect.model import MapEntry


def line(
    name: bytes,
    ino: int = 1033,
    start: int = 0x7F1C2A000000,
    length: int = 0x100000,
    perms: bytes = b"rw-s",
    offset: int = 0,
) -> bytes:
    head = b"%x-%x %s %08x 00:0c %d " % (start, start + length, perms, offset, ino)
    return head.ljust(72) + b" /dmabuf:" + name + b"\n"


OTHER = (
    b"55d5c3a00000-55d5c3a02000 r--p 00000000 08:01 1311246                    /usr/bin/cat\n"
    b"55d5c3c00000-55d5c3c21000 rw-p 00000000 00:00 0                          [heap]\n"
    b"7f0e4b700000-7f0e4b703000 rw-p 00000000 00:00 0 \n"
    b"7ffc2e5f0000-7ffc2e5f2000 r-xp 00000000 00:00 0                          [vdso]\n"
)


def test_named_and_unnamed() -> None:
    entries = parse_maps(OTHER + line(b"frame") + line(b"", ino=1034, start=0x7F1C2B000000, length=4096))
    assert entries == [
        MapEntry(0x7F1C2A000000, 0x7F1C2A100000, "rw-s", 0, 1033, "frame"),
        MapEntry(0x7F1C2B000000, 0x7F1C2B001000, "rw-s", 0, 1034, None),
    ]
    assert entries[0].length_bytes == 0x100000


def test_offset_and_a_split_mapping() -> None:
    data = line(b"m", ino=7, length=16384) + line(
        b"m", ino=7, start=0x7F1C2A004000, length=49152, perms=b"r--s", offset=16384
    )
    entries = parse_maps(data)
    assert [(e.inode, e.offset_bytes, e.length_bytes, e.perms) for e in entries] == [
        (7, 0, 16384, "rw-s"),
        (7, 16384, 49152, "r--s"),
    ]


def test_escaped_newline_tabs_escapes_bytes_and_trailing_spaces() -> None:
    name = b"\x1b[31mred\x1b[0m\ttab\\012nl\xff  "
    (e,) = parse_maps(line(name))
    assert e.name is not None
    assert e.name.encode("utf-8", "surrogateescape") == b"\x1b[31mred\x1b[0m\ttab\nnl\xff  "


def test_deleted_suffix_is_part_of_a_name() -> None:
    # d_path() of a d_dname() file never appends " (deleted)": here it is the name.
    (e,) = parse_maps(line(b"x (deleted)"))
    assert e.name == "x (deleted)"


def test_4_19_anon_inode_lines_are_not_returned() -> None:
    data = b"7f0e4a000000-7f0e4a096000 rw-s 00000000 00:0d 10357                      anon_inode:dmabuf\n"
    assert parse_maps(OTHER + data) == []


def test_file_whose_path_holds_the_mark_is_not_a_dmabuf() -> None:
    data = b"7f0e4a000000-7f0e4a001000 r--p 00000000 08:01 99                         /home/a /dmabuf:x\n"
    assert parse_maps(data) == []


def test_malformed_lines_are_skipped() -> None:
    bad = [
        b"zz-7f1c2a100000 rw-s 00000000 00:0c 1 /dmabuf:a\n",
        b"7f1c2a100000-7f1c2a000000 rw-s 00000000 00:0c 1 /dmabuf:backwards\n",
        b"7f1c2a000000 rw-s 00000000 00:0c 1 /dmabuf:nodash\n",
        b"7f1c2a000000-7f1c2a100000 rw-s 00000000 00:0c /dmabuf:noinode\n",
        b"7f1c2a000000-7f1c2a100000 rw-s 00000000 00:0c x1 /dmabuf:badinode\n",
        b"7f1c2a000000-7f1c2a100000 rw-s 00000000 00:0c " + b"9" * 5000 + b" /dmabuf:huge\n",
    ]
    good = MapEntry(0x7F1C2A000000, 0x7F1C2A100000, "rw-s", 0, 1033, "good")
    assert parse_maps(b"".join(bad) + line(b"good")) == [good]


def test_empty_and_str_input() -> None:
    assert parse_maps(b"") == []
    assert parse_maps("") == []
    (e,) = parse_maps(line(b"caf\xc3\xa9").decode("utf-8"))
    assert e.name == "café"
    assert parse_maps("\ud800 /dmabuf:x\n") == []


def test_a_malformed_line_among_good_ones_costs_only_itself() -> None:
    bad = b"zzzz-7f1c2a001000 rw-s 00000000 00:0c 1033                         /dmabuf:x\n"
    entries = parse_maps(line(b"a", ino=1) + bad + line(b"b", ino=2, start=0x7F1C2B000000))
    assert [(e.inode, e.name) for e in entries] == [(1, "a"), (2, "b")]


map_lines = st.lists(
    st.one_of(
        st.builds(
            lambda n, i, s, o: line(n, ino=i, start=s, offset=o).rstrip(b"\n"),
            st.binary(max_size=31).filter(lambda b: b"\n" not in b),
            st.integers(0, 2**64),
            st.integers(0, 2**47),
            st.integers(0, 2**40),
        ),
        st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"") + b" /dmabuf:x"),
    ),
    max_size=6,
)


@settings(max_examples=300)
@given(map_lines)
def test_all_lines_at_once_agree_with_line_by_line(lines: list[bytes]) -> None:
    assert parse_lines(lines) == [_entry(x) for x in lines]
