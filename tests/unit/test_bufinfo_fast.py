"""The column parser gives exactly what the line parser gives, or steps aside."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES

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
