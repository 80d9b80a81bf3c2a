"""Hypothesis against every parser: arbitrary bytes, and kernel-shaped text with hostile parts.

The only exceptions a parser may raise are its documented ones: FdinfoParseError,
BufinfoParseError, SysfsParseError (all ValueError); parse_maps() and parse_fence() never raise.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from paths import FIXTURES as FIXTURES_PATH

from dmabuf_inspect.kernel.bufinfo import BufinfoParseError, parse_bufinfo, parse_fence
from dmabuf_inspect.kernel.fdinfo import FdinfoParseError, parse_fdinfo
from dmabuf_inspect.kernel.maps import parse_maps
from dmabuf_inspect.kernel.sysfs import SysfsParseError, parse_sysfs_buffer
from dmabuf_inspect.model import BufInfo, FdInfo

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What a process may name a buffer (DMA_BUF_SET_NAME: up to 32 bytes here, any but NUL), biased
# towards the bytes that break parsers: newlines, tabs, ESC sequences, invalid UTF-8, look-alikes.
HOSTILE_PARTS = [
    b"\n",
    b"\t",
    b"\x1b[31m",
    b"\x1b]0;x\x07",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b" ",
    b"\r",
    b"<none>",
    b"\tAttached Devices:",
    b"Total 1 devices attached",
    b"Total 1 objects, 1 bytes",
    b"\twrite fence:",
    b" seq 1 signalled",
    b"unsignalled",
    b"\\012",
    b"name:\t",
    b"size:\t9",
    b"/dmabuf:",
    b"00004096\t00000002\t",
    b"1:1 ",
]
name_bytes = (
    st.lists(st.one_of(st.sampled_from(HOSTILE_PARTS), st.binary(min_size=1, max_size=4)), min_size=1, max_size=8)
    .map(lambda parts: b"".join(parts).replace(b"\0", b"")[:32])
    .filter(bool)
)
number = st.one_of(st.integers(0, 2**64 - 1), st.integers(2**64, 10**40))
token = st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_.:[]-", min_size=1, max_size=12).map(str.encode)


FIXTURES = str(FIXTURES_PATH)


def _fixture_files(pattern: str) -> list[bytes]:
    out = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, pattern))):
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as f:
                out.append(f.read())
    return out


REAL_BUFINFO = _fixture_files("k*/sys/kernel/debug/dma_buf/bufinfo")
REAL_FDINFO = _fixture_files("k*/proc/*/fdinfo/*")
REAL_MAPS = _fixture_files("k*/proc/*/maps")


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A real file with a few bytes spliced in, cut out or overwritten."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.one_of(st.sampled_from(HOSTILE_PARTS), st.binary(max_size=6)))
        kind = draw(st.sampled_from(["insert", "delete", "overwrite", "cut"]))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            del data[at : at + len(piece) + 1]
        elif kind == "overwrite":
            data[at : at + len(piece)] = piece
        else:
            del data[at:]
    return bytes(data)


def raw_of(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# -- fdinfo -----------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=400))
def test_fdinfo_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(FdinfoParseError):
        assert isinstance(parse_fdinfo(data), FdInfo)


@FAST
@given(st.text(max_size=200))
def test_fdinfo_arbitrary_text(data: str) -> None:
    with contextlib.suppress(FdinfoParseError):
        parse_fdinfo(data)


@FAST
@given(
    size=number,
    count=number,
    ino=st.one_of(st.none(), number),
    exp=token,
    name=st.one_of(st.none(), name_bytes),
    cut=st.one_of(st.none(), st.integers(0, 300)),
)
def test_fdinfo_kernel_shaped(
    size: int, count: int, ino: int | None, exp: bytes, name: bytes | None, cut: int | None
) -> None:
    data = b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\n"
    if ino is not None:
        data += b"ino:\t%d\n" % ino
    data += b"size:\t%d\ncount:\t%d\nexp_name:\t%s\n" % (size, count, exp)
    if name is not None:
        data += b"name:\t" + name + b"\n"
    if cut is not None:
        data = data[:cut]
    try:
        info = parse_fdinfo(data)
    except FdinfoParseError:
        return
    if cut is None:
        assert (info.size_bytes, info.count, info.inode) == (size, count, ino)
        assert info.name is None if name is None else info.name is not None and raw_of(info.name) == name


# -- maps -------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=600))
def test_maps_arbitrary_bytes(data: bytes) -> None:
    for e in parse_maps(data):
        assert e.end >= e.start


@FAST
@given(st.text(max_size=200))
def test_maps_arbitrary_text(data: str) -> None:
    parse_maps(data)


@FAST
@given(
    name=name_bytes,
    start=st.integers(0, 2**64 - 1),
    length=st.integers(0, 2**32),
    ino=number,
    noise=st.binary(max_size=80),
)
def test_maps_kernel_shaped(name: bytes, start: int, length: int, ino: int, noise: bytes) -> None:
    assume(b"\\012" not in name)  # show_map() does not escape backslashes: that one is ambiguous
    shown = name.replace(b"\n", b"\\012")
    head = b"%x-%x rw-s %08x 00:0c %d " % (start, start + length, 0, ino)
    data = noise.replace(b"\n", b" ") + b"\n" + head.ljust(72) + b" /dmabuf:" + shown + b"\n"
    entries = parse_maps(data)
    assert entries[-1].inode == ino
    assert entries[-1].length_bytes == length
    assert raw_of(entries[-1].name or "") == name


# -- bufinfo ----------------------------------------------------------------------------------

HEADERS = {
    "3.15": b"size\tflags\tmode\tcount\texp_name",
    "4.12": b"size    \tflags   \tmode    \tcount   \texp_name",
    "5.3": b"size    \tflags   \tmode    \tcount   \texp_name\tino     ",
    "5.19": b"size    \tflags   \tmode    \tcount   \texp_name\tino     \tname",
}
# Which fence form goes with which header here (the kernel's pairing is in bufinfo.py's docstring;
# the parser reads each fence line on its own, so any pairing tests it).
FENCE_FORM = {"3.15": "old", "4.12": "old", "5.3": "seq", "5.19": "ctx"}

FenceSpec = tuple[str, bytes, bytes, int, int, bool]
BufferSpec = tuple[int, int, int, bytes, "bytes | None", list[FenceSpec], list[bytes]]

fence_spec = st.tuples(
    st.sampled_from(["kernel", "write", "read", "bookkeep", "exclusive", "shared"]),
    # A driver name is a module's name, never "CTX:SEQ"; one that were would read as 7.3's form.
    token.filter(lambda d: re.fullmatch(rb"[0-9]+:[0-9]+", d) is None),
    token,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
buffer_spec = st.tuples(
    number,
    number,
    st.integers(1, 2**31),
    token,
    st.one_of(st.none(), name_bytes),
    st.lists(fence_spec, max_size=3),
    st.lists(token, max_size=3),
)


def fence_line(form: str, f: FenceSpec) -> bytes:
    usage, driver, timeline, seq, ctx, signalled = f
    state = b"" if signalled else b"un"
    if form == "old":  # up to 5.16
        return b"\t%s fence: %s %s %ssignalled" % (usage.capitalize().encode(), driver, timeline, state)
    if form == "seq":  # 5.17-7.2
        return b"\t%s fence:%s %s seq %d %ssignalled" % (usage.encode(), driver, timeline, seq, state)
    if signalled:  # 7.3
        driver = timeline = b""
    return b"\t%s fence:%d:%d %s %s %ssignalled" % (usage.encode(), ctx, seq, timeline, driver, state)


def header_end(style: str) -> int:
    return len(b"\nDma-buf Objects:\n" + HEADERS[style] + b"\n")


def render(style: str, buffers: list[BufferSpec]) -> bytes:
    lines = [b"", b"Dma-buf Objects:", HEADERS[style]]
    for size, count, ino, exp, name, fences, devices in buffers:
        row = b"%08d\t%08x\t%08x\t%08d\t%s" % (size, 2, 0x80007, count, exp)
        if style == "5.3":
            row += b"\t%08d\t%s" % (ino, name or b"")
        elif style == "5.19":
            row += b"\t%08d\t%s" % (ino, b"<none>" if name is None else name)
        lines += [row, *(fence_line(FENCE_FORM[style], f) for f in fences), b"\tAttached Devices:"]
        lines += [b"\t" + d for d in devices] + [b"Total %d devices attached" % len(devices), b""]
    lines += [b"", b"Total %d objects, %d bytes" % (len(buffers), sum(b[0] for b in buffers))]
    return b"".join(line + b"\n" for line in lines)


FENCE_LIKE = re.compile(rb"\t[A-Za-z]{1,16} fence:")


@FAST
@given(st.binary(max_size=800))
def test_bufinfo_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(BufinfoParseError):
        assert isinstance(parse_bufinfo(data), BufInfo)


@FAST
@given(st.text(max_size=300))
def test_bufinfo_arbitrary_text(data: str) -> None:
    with contextlib.suppress(BufinfoParseError):
        parse_bufinfo(data)


@FAST
@given(style=st.sampled_from(sorted(HEADERS)), buffers=st.lists(buffer_spec, max_size=4))
def test_bufinfo_kernel_shaped(style: str, buffers: list[BufferSpec]) -> None:
    info = parse_bufinfo(render(style, buffers))
    sane = [b for b in buffers if b[0] < 10**20 and b[1] < 10**20]  # longer numbers are garbage rows
    assert len(info.entries) == len(sane)
    if len(sane) == len(buffers) and sum(b[0] for b in buffers) < 10**20:
        assert (info.total_objects, info.total_bytes) == (len(buffers), sum(b[0] for b in buffers))
    for entry, (size, count, ino, exp, name, fences, devices) in zip(info.entries, sane, strict=True):
        assert (entry.size_bytes, entry.count, entry.exp_name.encode()) == (size, count, exp)
        assert entry.inode == (ino if style in ("5.3", "5.19") else None)
        assert entry.attachments == tuple(d.decode() for d in devices)
        if style in ("3.15", "4.12"):
            assert (entry.name, len(entry.fences)) == (None, len(fences))
            continue
        # A name may imitate a fence or the marker on a line of its own; otherwise it is exact.
        extra_lines = (name or b"").split(b"\n")[1:]
        if any(FENCE_LIKE.match(x) or x.strip(b"\t") == b"Attached Devices:" for x in extra_lines):
            continue
        assert len(entry.fences) == len(fences)
        if style == "5.19" and name == b"<none>":
            assert entry.name is None
        else:
            assert raw_of(entry.name or "") == (name or b"")


@FAST
@given(
    style=st.sampled_from(sorted(HEADERS)),
    buffers=st.lists(buffer_spec, min_size=1, max_size=3),
    cut=st.integers(0, 2000),
)
def test_bufinfo_truncated(style: str, buffers: list[BufferSpec], cut: int) -> None:
    data = render(style, buffers)
    try:
        info = parse_bufinfo(data[:cut])
    except BufinfoParseError:
        assert cut < header_end(style)
        return
    assert cut >= header_end(style)
    assert len(info.entries) <= len(buffers)
    if cut < len(data):
        assert info.total_objects is None


@FAST
@given(usage=st.text("abcdefkrwsbEXS", min_size=1, max_size=16).map(str.encode), rest=st.binary(max_size=60))
def test_fence_arbitrary(usage: bytes, rest: bytes) -> None:
    parse_fence(b"\t" + usage + b" fence:" + rest)


@FAST
@given(form=st.sampled_from(["old", "seq", "ctx"]), f=fence_spec, timeline=name_bytes)
def test_fence_hostile_timeline_round_trips(form: str, f: FenceSpec, timeline: bytes) -> None:
    usage, driver, _, seq, ctx, signalled = f
    fence = parse_fence(fence_line(form, (usage, driver, timeline, seq, ctx, signalled)))
    assert fence is not None
    assert (fence.usage, fence.signaled) == (usage, signalled)
    if form == "ctx" and signalled:
        assert (fence.driver, fence.timeline, fence.context) == ("", "", str(ctx))
    else:
        assert (fence.driver.encode(), raw_of(fence.timeline)) == (driver, timeline)
    assert fence.seqno == ("" if form == "old" else str(seq))


@FAST
@given(mutated(REAL_BUFINFO))
def test_bufinfo_mutated_real_files(data: bytes) -> None:
    with contextlib.suppress(BufinfoParseError):
        parse_bufinfo(data)


@FAST
@given(mutated(REAL_FDINFO))
def test_fdinfo_mutated_real_files(data: bytes) -> None:
    with contextlib.suppress(FdinfoParseError):
        parse_fdinfo(data)


@FAST
@given(mutated(REAL_MAPS))
def test_maps_mutated_real_files(data: bytes) -> None:
    parse_maps(data)


# -- sysfs ------------------------------------------------------------------------------------


@FAST
@given(inode=st.integers(0, 2**64), exporter=st.binary(max_size=40), size=st.binary(max_size=30))
def test_sysfs_arbitrary(inode: int, exporter: bytes, size: bytes) -> None:
    try:
        b = parse_sysfs_buffer(inode, exporter, size)
    except SysfsParseError:
        return
    assert b.size_bytes >= 0 and b.exporter_name


@FAST
@given(inode=st.integers(0, 2**64), exporter=token, size=number)
def test_sysfs_kernel_shaped(inode: int, exporter: bytes, size: int) -> None:
    try:
        b = parse_sysfs_buffer(inode, exporter + b"\n", b"%d\n" % size)
    except SysfsParseError:
        assert size >= 10**20
        return
    assert (b.inode, b.exporter_name.encode(), b.size_bytes) == (inode, exporter, size)
