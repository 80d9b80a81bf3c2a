"""The column parser gives exactly what the line parser gives, or steps aside."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES

from dmabuf_inspect.kernel import _fdwalk, bufinfo
from dmabuf_inspect.kernel.bufinfo import _parse_lines, _table_fast, parse_bufinfo, parse_bufinfo_table
from dmabuf_inspect.model import BufInfo, BufInfoTable


def _parse_fast(raw: bytes) -> BufInfo | None:
    table = _table_fast(raw)
    return None if table is None else table.bufinfo()


FIXTURES = FIXTURES
HEADER_612 = b"\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
HEADER_510 = b"\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \n"

names = st.one_of(st.just(b"<none>"), st.just(b""), st.binary(max_size=31))
fences = st.lists(
    st.sampled_from(
        [
            b"\twrite fence:vgem unbound seq 1 unsignalled",
            b"\tread fence:i915 0000:00:02.0 seq 77 signalled",
            b"\twrite fence:1:1 unbound vgem unsignalled",
            b"\tkernel fence:5:3   signalled",
            b"\tExclusive fence: drm_sched gfx signalled",
            b"\tnot a fence",
        ]
    ),
    max_size=3,
)
devices = st.lists(st.sampled_from([b"vgem", b"0000:00:02.0", b"Attached Devices:", b""]), max_size=3)


@st.composite
def bufinfo_text(draw: st.DrawFn) -> bytes:
    out = [draw(st.sampled_from([HEADER_612, HEADER_510]))]
    n = draw(st.integers(0, 6))
    for ino in range(1, n + 1):
        out.append(draw(st.sampled_from([b"", b"", b"", b"\tERROR locking buffer object: skipping\n", b"junk\n"])))
        size = draw(st.sampled_from([4096, 1 << 20, 12345]))
        out.append(
            b"%08d\t%08x\t%08x\t%08d\t%s\t%08d\t%s\n"
            % (
                size,
                2,
                0x80007,
                draw(st.integers(1, 9)),
                draw(st.sampled_from([b"system", b"udmabuf", b"drm"])),
                ino,
                draw(names),
            )
        )
        out.extend(f + b"\n" for f in draw(fences))
        devs = draw(devices)
        out.append(b"\tAttached Devices:\n" + b"".join(b"\t" + d + b"\n" for d in devs))
        out.append(b"Total %d devices attached\n\n" % len(devs))
    out.append(b"\nTotal %d objects, %d bytes\n" % (n, 4096 * n))
    return b"".join(out)


@settings(max_examples=300)
@given(bufinfo_text())
def test_fast_path_agrees_with_the_line_parser(text: bytes) -> None:
    fast = _parse_fast(text)
    if fast is not None:
        assert fast == _parse_lines(text)
    assert parse_bufinfo(text) == _parse_lines(text)
    assert parse_bufinfo_table(text) == BufInfoTable.of(_parse_lines(text))


def test_fast_path_takes_plain_files_and_leaves_odd_names() -> None:
    plain = (
        HEADER_612 + b"00004096\t00000002\t00080007\t00000002\tsystem\t00000007\t<none>\n"
        b"\twrite fence:vgem unbound seq 1 unsignalled\n\tAttached Devices:\n\tvgem\n"
        b"Total 1 devices attached\n\n\nTotal 1 objects, 4096 bytes\n"
    )
    parsed = _parse_fast(plain)
    assert parsed is not None and parsed == _parse_lines(plain)
    assert parsed.entries[0].attachments == ("vgem",) and parsed.entries[0].fences[0].driver == "vgem"
    odd = plain.replace(b"<none>", b"a\tb")
    assert _parse_fast(odd) is None
    assert parse_bufinfo(odd).entries[0].name == "a\tb"


def test_fixture_files_parse_the_same_either_way() -> None:
    for path in FIXTURES.glob("*/sys/kernel/debug/dma_buf/bufinfo"):
        raw = path.read_bytes()
        fast = _parse_fast(raw)
        assert fast is None or fast == _parse_lines(raw), path


def test_fast_path_steps_aside_for_a_line_between_objects() -> None:
    one = (
        b"00004096\t00000002\t00080007\t00000002\tsystem\t%08d\t<none>\n"
        b"\tAttached Devices:\nTotal 0 devices attached\n\n"
    )
    tail = b"\nTotal 2 objects, 8192 bytes\n"
    clean = HEADER_612 + one % 1 + one % 2 + tail
    parsed = _parse_fast(clean)
    assert parsed is not None and [e.inode for e in parsed.entries] == [1, 2]
    junk = HEADER_612 + one % 1 + b"junk\n" + one % 2 + tail
    assert _parse_fast(junk) is None
    assert [e.inode for e in parse_bufinfo(junk).entries] == [1, 2]


def test_real_kernel_captures_take_the_column_path() -> None:
    for name in ("lab-6.12", "lab-7.3", "k6.12", "k5.10-sysfs"):
        raw = (FIXTURES / name / "sys/kernel/debug/dma_buf/bufinfo").read_bytes()
        assert _table_fast(raw) is not None, name


# The plain file (no fence, no device) in one C pass: _fdwalk.bufinfo_plain() must give what the
# Python columns give, or step aside (None) so that they decide.
PLAIN_END = b"\n\tAttached Devices:\nTotal 0 devices attached\n\n"


def mostly(valid: st.SearchStrategy[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """`valid` 19 times in 20, else one of `odd`: most bodies must reach the C columns."""
    return st.integers(0, 19).flatmap(lambda k: valid if k else st.sampled_from(odd))


decimal = mostly(
    st.integers(0, 99999999).map(lambda n: b"%08d" % n),
    [b"", b"-1", b"1" * 20, b"1" * 21, b"18446744073709551615", b"18446744073709551616", b"0x10"],
)
hexadecimal = mostly(
    st.integers(0, 0xFFFFFFFF).map(lambda n: b"%08x" % n), [b"", b"0008000F", b"f" * 16, b"f" * 17, b"g", b"-1"]
)
plain_names = mostly(
    st.sampled_from([b"<none>", b"", b"frame", b"\xff\xfe"]) | st.binary(max_size=8).filter(lambda b: b"\t" not in b),
    [b"a\tb", b"a\nb", b"a\n\tAttached Devices:\n"],
)
exporters = mostly(st.sampled_from([b"system", b"udmabuf", b"drm"]), [b"sys\ttem", b"", b"sys\n"])


@st.composite
def plain_body(draw: st.DrawFn) -> bytes:
    rows = []
    for ino in range(draw(st.integers(0, 4))):
        fields = [draw(decimal), draw(hexadecimal), draw(hexadecimal), draw(decimal)]
        fields += [draw(exporters), b"%08d" % ino]
        rows.append(b"\t".join([*fields, draw(plain_names)]))
    body = b"".join(row + PLAIN_END for row in rows) + b"\n"
    return draw(mostly(st.just(body), [body[:-1], body + b"\n", body.replace(b"Total 0", b"Total 1", 1)]))


def _python_columns(body: bytes) -> tuple[object, ...] | None:
    columns = bufinfo._columns(body, bufinfo._Texts())
    return None if columns is None else tuple(tuple(c) for c in columns[:7])


@settings(max_examples=500)
@given(plain_body())
def test_the_c_columns_are_the_python_columns_or_none(body: bytes) -> None:
    c = _fdwalk.bufinfo_plain(body)
    if c is not None:
        assert tuple(tuple(col) for col in c) == _python_columns(body)
    whole = HEADER_612 + body + b"Total 0 objects, 0 bytes\n"
    with_c = bufinfo.parse_bufinfo_table(whole) if body.strip() else None
    saved, bufinfo._c_plain = bufinfo._c_plain, None
    try:
        without_c = bufinfo.parse_bufinfo_table(whole) if body.strip() else None
    finally:
        bufinfo._c_plain = saved
    assert with_c == without_c


def test_the_c_columns_take_the_plain_file_and_share_equal_fields() -> None:
    one = b"00004096\t00000002\t0008000F\t00000002\tsystem\t%08d\t<none>" + PLAIN_END
    body = b"".join(one % i for i in range(1, 4)) + b"\n"
    c = _fdwalk.bufinfo_plain(body)
    assert c is not None
    assert c == ((4096,) * 3, (2,) * 3, (0x8000F,) * 3, (2,) * 3, [b"system"] * 3, (1, 2, 3), [b"<none>"] * 3)
    assert c[4][0] is c[4][2] and c[0][0] is c[0][2]
    for odd in (b"\t".join([b"1"] * 8), b"1\t2\t3\t4\tsystem\t5", b"1\t2\t3\t4\tsystem\t18446744073709551616\tx"):
        assert _fdwalk.bufinfo_plain(odd + PLAIN_END + b"\n") is None
    assert _fdwalk.bufinfo_plain(b"\n") is None  # no object: the caller's empty table


ODD_FIELDS = [b"", b"-1", b"+1", b" 1", b"1" * 20, b"1" * 21, b"18446744073709551615", b"18446744073709551616"]
ODD_FIELDS += [b"f" * 16, b"F" * 17, b"0x10", b"g", b"\xff", b"1\t2", b"1\n2", b"Attached Devices:"]


@pytest.mark.parametrize("column", range(7))
@pytest.mark.parametrize("field", ODD_FIELDS)
def test_every_odd_field_in_every_column_is_what_python_makes_of_it(column: int, field: bytes) -> None:
    fields = [b"00004096", b"00000002", b"00080007", b"00000002", b"system", b"00000009", b"<none>"]
    fields[column] = field
    body = b"00001024\t00000002\t00080007\t00000001\tsystem\t00000001\t<none>" + PLAIN_END
    body += b"\t".join(fields) + PLAIN_END + b"\n"
    c, python = _fdwalk.bufinfo_plain(body), _python_columns(body)
    if c is not None:
        assert tuple(tuple(col) for col in c) == python
    elif python is not None:  # C steps aside only past 64 bits, where Python's int goes on
        assert field == b"18446744073709551616" and column in (0, 3, 5)


def test_a_plain_file_is_parsed_in_c_and_a_fenced_one_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(body: bytes) -> _fdwalk.PlainColumns | None:
        found = _fdwalk.bufinfo_plain(body)
        calls.append(-1 if found is None else len(found[5]))
        return found

    monkeypatch.setattr(bufinfo, "_c_plain", counted)
    one = b"00004096\t00000002\t00080007\t00000002\tsystem\t%08d\tbuf%d" + PLAIN_END
    raw = HEADER_612 + b"".join(one % (i, i) for i in range(1, 101)) + b"\nTotal 100 objects, 409600 bytes\n"
    table = parse_bufinfo_table(raw)
    assert calls == [100]
    assert table.inode == tuple(range(1, 101)) and table.name[41] == "buf42" and table.exp_name[0] == "system"
    assert table == BufInfoTable.of(_parse_lines(raw))
    fenced = (FIXTURES / "lab-6.12" / "sys/kernel/debug/dma_buf/bufinfo").read_bytes()
    assert parse_bufinfo_table(fenced) == BufInfoTable.of(_parse_lines(fenced))
    assert calls[1:] == [-1]
