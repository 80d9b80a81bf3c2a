"""The iterators' output, parsed: Android's 4-line text and our binary records, good and bad.

Bad input is a counted skip or one BpfParseError line, never another exception (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmabuf_inspect.kernel import _fdwalk
from dmabuf_inspect.kernel.bpf import records
from dmabuf_inspect.kernel.bpf.programs import BUFFER, DEVICES, DEVICES_MARKER, FD, VMA
from dmabuf_inspect.kernel.bpf.records import (
    BpfBuffer,
    BpfParseError,
    parse_android,
    parse_buffer_listing,
    parse_buffer_records,
    parse_buffer_records_plain,
    parse_fd_records,
    parse_fd_records_plain,
    parse_vma_records,
    parse_vma_records_plain,
    perms,
)
from dmabuf_inspect.model import MapEntry

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def android(*records: tuple[int, int, str, str]) -> bytes:
    return b"".join(f"{i}\n{s}\n{n}\n{e}\n".encode() for i, s, n, e in records)


def test_android_format_four_lines_per_buffer() -> None:
    read = parse_android(android((1033, 4096, "frame 1", "system"), (1034, 8192, "", "udmabuf")))
    assert read.buffers == [
        BpfBuffer(1033, 4096, "system", "frame 1", None, None),
        BpfBuffer(1034, 8192, "udmabuf", None, None, None),
    ]
    assert (read.skipped_lines, read.names_rejoined) == (0, 0)


def test_android_empty_output_is_no_buffers() -> None:
    assert parse_android(b"").buffers == []


def test_android_a_name_with_newlines_is_put_back_together() -> None:
    text = b"1\n4096\nfirst\nsecond\nthird\nsystem\n2\n8192\nplain\nudmabuf\n"
    read = parse_android(text)
    assert [b.name for b in read.buffers] == ["first\nsecond\nthird", "plain"]
    assert [b.exp_name for b in read.buffers] == ["system", "udmabuf"]
    assert read.names_rejoined == 1 and read.skipped_lines == 0


def test_android_a_name_with_newlines_at_the_end() -> None:
    read = parse_android(b"1\n4096\na\nb\nsystem\n")
    assert read.buffers == [BpfBuffer(1, 4096, "system", "a\nb", None, None)]


def test_android_a_cut_last_record_is_dropped_and_counted() -> None:
    read = parse_android(android((1, 4096, "x", "system")) + b"2\n8192\nna")
    assert [b.inode for b in read.buffers] == [1]
    assert read.skipped_lines == 2  # "2" and "8192"; the unterminated "na" was cut


def test_android_non_numbers_and_empty_exporters_are_skipped_and_counted() -> None:
    text = b"x1\n4096\nname\nsystem\n" + android((7, 4096, "ok", "system")) + b"9\n18446744073709551616999\nn\ne\n"
    read = parse_android(text)
    assert [b.inode for b in read.buffers] == [7]
    assert read.skipped_lines == 8


def test_android_garbage_only_is_one_error_line() -> None:
    with pytest.raises(BpfParseError) as caught:
        parse_android(b"\x1b[31mhello\nworld\n")
    assert "\n" not in str(caught.value) and "4 lines per buffer" in str(caught.value)


def test_android_names_keep_undecodable_bytes() -> None:
    read = parse_android(b"1\n4096\n\xff\xfe\nsystem\n")
    assert read.buffers[0].name == b"\xff\xfe".decode("utf-8", "surrogateescape")


def buffer_record(
    inode: int,
    size: int,
    count: int,
    exp: bytes,
    name: bytes,
    devices: tuple[bytes, ...] = (),
    attachments: int | None = None,
    fences: int = 0,
) -> bytes:
    n = len(devices) if attachments is None else attachments
    head = BUFFER.pack(inode, size, count, 0o2, 0x80007, n, min(n, 8), fences, exp, name)
    groups = [devices[k : k + 4] for k in range(0, len(devices), 4)]
    return head + b"".join(DEVICES.pack(DEVICES_MARKER, b"".join(d.ljust(32, b"\0") for d in g)) for g in groups)


def test_buffer_records_take_off_the_iterators_own_reference() -> None:
    data = buffer_record(1033, 4096, 3, b"system", b"") + buffer_record(
        1034, 65536, 5, b"drm", b"frame", (b"vgem", b"0000:00:02.0")
    )
    assert parse_buffer_records(data) == [
        BpfBuffer(1033, 4096, "system", None, 2, 0, (), 2, 0x80007, 0),
        BpfBuffer(1034, 65536, "drm", "frame", 4, 2, ("vgem", "0000:00:02.0"), 2, 0x80007, 0),
    ]
    assert parse_buffer_records(data, own_reference=False)[0].count == 3


def test_buffer_records_more_attachments_than_names() -> None:
    devices = tuple(f"dev{k}".encode() for k in range(8))
    data = buffer_record(1, 4096, 2, b"x", b"", devices, attachments=40) + buffer_record(2, 8192, 1, b"y", b"")
    one, two = parse_buffer_records(data)
    assert one.attachments == 40 and one.devices == tuple(d.decode() for d in devices)
    assert two == BpfBuffer(2, 8192, "y", None, 0, 0, (), 2, 0x80007, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (buffer_record(1, 4096, 2, b"x", b"")[:-1], "cut short"),
        (buffer_record(1, 4096, 2, b"x", b"", (b"a",))[:-136], "device names are missing"),
        (buffer_record(1, 4096, 2, b"x", b"", (b"a", b"b", b"c", b"d", b"e"))[:-136], "device names are missing"),
        (BUFFER.pack(1, 1, 1, 0, 0, 3, 1, 0, b"", b""), "3 attachments, 1 named"),
        (BUFFER.pack(1, 1, 1, 0, 0, 65, 8, 0, b"", b""), "65 attachments"),
        (BUFFER.pack(1, 1, 1, 0, 0, 2, 0, 0, b"", b""), "2 attachments, 0 named"),
        (DEVICES.pack(DEVICES_MARKER, b"a"), "no buffer before them"),
    ],
)
def test_bad_buffer_records_give_one_line(data: bytes, message: str) -> None:
    with pytest.raises(BpfParseError, match=message):
        parse_buffer_records(data)


def test_fd_records_group_by_process_and_inode_with_fds_ascending() -> None:
    data = b"".join(FD.pack(*r) for r in [(10, 3, 100), (10, 4, 101), (10, 9, 100), (12, 5, 100), (10, 2, 102)])
    assert parse_fd_records(data) == {10: {100: (3, 9), 101: (4,), 102: (2,)}, 12: {100: (5,)}}
    assert list(parse_fd_records(data)[10]) == [102, 100, 101]  # first-fd order, as fdwalk gives them


def test_fd_records_cut_short() -> None:
    with pytest.raises(BpfParseError, match="no multiple of 16"):
        parse_fd_records(FD.pack(1, 2, 3)[:-1])


def test_vma_records_become_map_entries_as_proc_maps_prints_them() -> None:
    rw_shared, r_private = 0x1 | 0x2 | 0x80 | 0x8, 0x1
    data = VMA.pack(20, 0, 0x7F0000002000, 0x7F0000003000, 1, 55, r_private, b"") + VMA.pack(
        20, 0, 0x7F0000000000, 0x7F0000001000, 0, 55, rw_shared, b"frame\n2"
    )
    assert parse_vma_records(data, page_bytes=4096) == {
        20: [
            MapEntry(0x7F0000000000, 0x7F0000001000, "rw-s", 0, 55, "frame\n2"),
            MapEntry(0x7F0000002000, 0x7F0000003000, "r--p", 4096, 55, None),
        ]
    }


def test_perms_as_show_map_vma() -> None:
    assert [perms(f) for f in (0, 0x1, 0x3, 0x7, 0x83, 0x80)] == ["---p", "r--p", "rw-p", "rwxp", "rw-s", "---s"]


def test_vma_records_cut_or_backwards() -> None:
    with pytest.raises(BpfParseError, match="no multiple of 80"):
        parse_vma_records(b"\0" * 81)
    with pytest.raises(BpfParseError, match="ends before it starts"):
        parse_vma_records(VMA.pack(1, 0, 0x2000, 0x1000, 0, 1, 0, b""))


# --- hypothesis ------------------------------------------------------------------------------------

name_bytes = st.binary(max_size=31).map(lambda b: b.replace(b"\0", b""))
field_line = st.one_of(
    st.integers(0, 2**64 - 1).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"system", b"\xff", b"-1", b"1e3", b" 12", b"99999999999999999999999", b"\t", b"\r"]),
    name_bytes,
)


@FAST
@given(st.lists(field_line, max_size=40), st.booleans())
def test_android_parser_never_raises_but_its_error(lines: list[bytes], terminated: bool) -> None:
    text = b"\n".join(lines) + (b"\n" if terminated else b"")
    try:
        read = parse_android(text)
    except BpfParseError as exc:
        assert "\n" not in str(exc)
        return
    for buf in read.buffers:
        assert buf.inode >= 0 and buf.size_bytes >= 0 and buf.exp_name


@FAST
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            name_bytes,
            name_bytes.filter(lambda b: b and b"\n" not in b),
        ),
        max_size=20,
    )
)
def test_android_parser_reads_back_what_the_program_prints(records: list[tuple[int, int, bytes, bytes]]) -> None:
    # the program replaces a name's newlines with spaces; exporters have none
    text = b"".join(b"%d\n%d\n%s\n%s\n" % (i, s, n.replace(b"\n", b" "), e) for i, s, n, e in records)
    read = parse_android(text)
    assert [(b.inode, b.size_bytes) for b in read.buffers] == [(i, s) for i, s, _, _ in records]
    assert read.skipped_lines == 0


@FAST
@given(st.binary(max_size=600))
def test_binary_parsers_never_raise_but_their_error(data: bytes) -> None:
    for parse in (parse_buffer_records, parse_fd_records, parse_vma_records):
        try:
            parse(data)
        except BpfParseError as exc:
            assert "\n" not in str(exc)


def _same(fast: object, plain: object, data: bytes) -> None:
    try:
        expected = plain(data)  # type: ignore[operator]
    except BpfParseError:
        with pytest.raises(BpfParseError):
            fast(data)  # type: ignore[operator]
        return
    assert fast(data) == expected  # type: ignore[operator]


buffer_rows = st.lists(
    st.tuples(
        st.integers(0, 2**40),
        st.integers(0, 2**40),
        st.integers(0, 5),
        st.sampled_from([b"system", b"udmabuf", b"drm", b"\xff"]),
        st.sampled_from([b"", b"frame", b"a\nb", b"\x1b[31m"]),
        st.lists(st.sampled_from([b"vgem", b"0000:00:02.0", b"x" * 31]), max_size=9).map(tuple),
        st.sampled_from([0, 0, 1, 3, 0xFFFF]),
    ),
    max_size=30,
)


@FAST
@given(buffer_rows)
def test_fast_buffer_parser_equals_the_plain_one(
    rows: list[tuple[int, int, int, bytes, bytes, tuple[bytes, ...], int]],
) -> None:
    data = b"".join(buffer_record(i, s, c, e, n, d[:8], len(d), f) for i, s, c, e, n, d, f in rows)
    _same(parse_buffer_records, parse_buffer_records_plain, data)
    assert len(parse_buffer_records(data)) == len(rows)


def _python_buffer_fields(data: bytes) -> object:
    saved, records._c_buffer_records = records._c_buffer_records, None
    try:
        fields = records._buffer_fields(data)
    finally:
        records._c_buffer_records = saved
    return None if fields is None else tuple(map(tuple, fields))


@FAST
@given(buffer_rows, st.sampled_from([b"", b"\0" * 5, b"\0ab"]))
def test_c_buffer_columns_are_the_python_columns(
    rows: list[tuple[int, int, int, bytes, bytes, tuple[bytes, ...], int]], tail: bytes
) -> None:
    plain = [(i, s, c, e + tail, n + tail, (), 0, f) for i, s, c, e, n, _, f in rows]  # no devices: C's
    data = b"".join(buffer_record(*r) for r in plain)
    c = records._buffer_fields(data)
    assert c is not None and tuple(map(tuple, c)) == _python_buffer_fields(data)
    with_devices = b"".join(buffer_record(i, s, c, e, n, d[:8], len(d), f) for i, s, c, e, n, d, f in rows)
    found = _fdwalk.buffer_records(with_devices, 64, 32)
    assert (found is None) == any(d for *_, d, _f in rows)
    assert parse_buffer_listing(with_devices) == parse_buffer_listing_python(with_devices)


def parse_buffer_listing_python(data: bytes) -> object:
    saved, records._c_buffer_records = records._c_buffer_records, None
    try:
        return parse_buffer_listing(data)
    finally:
        records._c_buffer_records = saved


def test_c_buffer_columns_refuse_what_is_no_buffer_records() -> None:
    one = buffer_record(7, 4096, 1, b"system", b"", (), 0, 0)
    assert _fdwalk.buffer_records(one, 64, 32) == ((7,), (4096,), (1,), (2,), (0x80007,), (0,), (b"system",), (b"",))
    with pytest.raises(ValueError, match="no multiple of 136"):
        _fdwalk.buffer_records(one[:-1], 64, 32)
    with pytest.raises(ValueError, match="positive"):
        _fdwalk.buffer_records(one, 0, 32)
    marker = DEVICES.pack(DEVICES_MARKER, b"vgem") + b"\0" * (BUFFER.size - DEVICES.size)
    assert _fdwalk.buffer_records(one + marker, 64, 32) is None


@FAST
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 40), st.integers(1, 10)), max_size=60))
def test_fast_fd_parser_equals_the_plain_one(records: list[tuple[int, int, int]]) -> None:
    in_task_order = sorted(dict.fromkeys(records), key=lambda r: (r[0], r[1]))
    _same(parse_fd_records, parse_fd_records_plain, b"".join(FD.pack(*r) for r in in_task_order))
    _same(parse_fd_records, parse_fd_records_plain, b"".join(FD.pack(*r) for r in records))


def _python_fd_records(data: bytes) -> dict[int, dict[int, tuple[int, ...]]]:
    saved, records._c_fd_records = records._c_fd_records, None
    try:
        return parse_fd_records(data)
    finally:
        records._c_fd_records = saved


def _in_order(grouped: dict[int, dict[int, tuple[int, ...]]]) -> list[tuple[int, list[tuple[int, tuple[int, ...]]]]]:
    return [(pid, list(held.items())) for pid, held in grouped.items()]


@FAST
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 40), st.integers(1, 10)), max_size=60))
def test_c_fd_grouping_is_the_python_grouping_in_the_same_order(found: list[tuple[int, int, int]]) -> None:
    one_inode_per_fd = {(pid, fd): inode for pid, fd, inode in found}
    in_task_order = b"".join(FD.pack(pid, fd, inode) for (pid, fd), inode in sorted(one_inode_per_fd.items()))
    c = _fdwalk.fd_records(in_task_order)
    assert c is not None  # the iterator's order: C groups it
    assert _in_order(c) == _in_order(_python_fd_records(in_task_order))
    as_drawn = b"".join(FD.pack(*r) for r in found)
    c = _fdwalk.fd_records(as_drawn)
    if c is not None:  # else records apart or fds out of order: Python sorts them
        assert _in_order(c) == _in_order(_python_fd_records(as_drawn))
    assert parse_fd_records(as_drawn) == _python_fd_records(as_drawn)


def test_c_fd_grouping_steps_aside_for_records_out_of_task_order() -> None:
    apart = [(10, 3, 100), (12, 5, 100), (10, 4, 101)]
    backwards = [(10, 4, 100), (10, 3, 101)]
    for found in (apart, backwards):
        assert _fdwalk.fd_records(b"".join(FD.pack(*r) for r in found)) is None
    assert _fdwalk.fd_records(b"") == {}
    with pytest.raises(ValueError, match="16-byte records"):
        _fdwalk.fd_records(b"x" * 17)


@FAST
@given(
    st.lists(
        st.tuples(
            st.integers(1, 4),
            st.integers(0, 2**20),
            st.integers(0, 2**12),
            st.integers(0, 64),
            st.integers(1, 9),
            st.sampled_from([0x1, 0x3, 0x83, 0xFB]),
            st.sampled_from([b"", b"frame", b"a\nb"]),
        ),
        max_size=40,
    )
)
def test_fast_vma_parser_equals_the_plain_one(records: list[tuple[int, int, int, int, int, int, bytes]]) -> None:
    data = b"".join(VMA.pack(p, 0, s * 4096, (s + ln) * 4096, o, i, f, n) for p, s, ln, o, i, f, n in records)
    _same(parse_vma_records, parse_vma_records_plain, data)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)), max_size=50)
)
def test_fd_records_keep_every_fd(records: list[tuple[int, int, int]]) -> None:
    unique = list(dict.fromkeys(records))
    held = parse_fd_records(b"".join(FD.pack(*r) for r in unique))
    assert sorted((p, f, i) for p, by in held.items() for i, fds in by.items() for f in fds) == sorted(unique)


def test_struct_formats_are_the_machines_byte_order_and_packed() -> None:
    # the programs store native values; memoryview.cast() reads them natively too
    for record in (FD, VMA, BUFFER, DEVICES):
        assert record.format.startswith("=") and record.size % 8 == 0


def test_our_buffers_stand_in_for_bufinfo_column_by_column() -> None:
    from dmabuf_inspect.kernel.bpf.records import bufinfo_table

    data = buffer_record(1033, 4096, 3, b"system", b"") + buffer_record(1034, 65536, 5, b"drm", b"x", (b"vgem",))
    table = bufinfo_table(parse_buffer_records(data))
    assert table.inode == (1033, 1034) and table.size_bytes == (4096, 65536) and table.count == (2, 4)
    assert table.exp_name == ("system", "drm") and table.name == (None, "x")
    assert table.attachments == ((), ("vgem",)) and table.fences == ((), ())
    assert (table.flags, table.mode) == ((2, 2), (0x80007, 0x80007))
    assert (table.total_objects, table.total_bytes) == (2, 69632)
    assert bufinfo_table([]).inode == ()
    with pytest.raises(BpfParseError, match="Android's format"):
        bufinfo_table(parse_android(b"1\n4096\n\nsystem\n").buffers)


@FAST
@given(buffer_rows)
def test_buffer_table_equals_the_records_in_columns(
    rows: list[tuple[int, int, int, bytes, bytes, tuple[bytes, ...], int]],
) -> None:
    from dmabuf_inspect.kernel.bpf.records import bufinfo_table, parse_buffer_listing, parse_buffer_table

    data = b"".join(buffer_record(i, s, c, e, n, d[:8], len(d), f) for i, s, c, e, n, d, f in rows)
    assert parse_buffer_table(data) == bufinfo_table(parse_buffer_records_plain(data))
    listing = parse_buffer_listing(data)
    assert listing.fenced == sum(1 for *_, f in rows if f)
    assert listing.crowded == sum(1 for *_, d, _f in rows if len(d) > 8)


def test_a_listing_counts_what_bufinfo_would_add() -> None:
    from dmabuf_inspect.kernel.bpf.records import parse_buffer_listing

    plain = buffer_record(1, 4096, 2, b"system", b"") + buffer_record(2, 4096, 2, b"system", b"")
    assert parse_buffer_listing(plain)[1:] == (0, 0)  # bufinfo would add nothing: no need to read it
    fenced = plain + buffer_record(3, 16384, 2, b"drm", b"", fences=1)
    assert parse_buffer_listing(fenced)[1:] == (1, 0)
    assert [b.fences for b in parse_buffer_records(fenced)] == [0, 0, 1]
    devices = tuple(f"dev{k}".encode() for k in range(8))
    crowded = plain + buffer_record(4, 4096, 2, b"x", b"", devices, attachments=9)
    assert parse_buffer_listing(crowded)[1:] == (0, 1)
    eight = plain + buffer_record(4, 4096, 2, b"x", b"", devices)
    assert parse_buffer_listing(eight)[1:] == (0, 0)  # all 8 named: bufinfo names no more


def test_android_a_record_cut_after_its_inode_leaves_the_one_before_whole() -> None:
    """The cut record's lone inode is no exporter, and the record before it keeps its own."""
    read = parse_android(b"40004\n262144\n\ndrm\n40005\n10485")
    assert read.buffers == [BpfBuffer(40004, 262144, "drm", None, None, None)]
    assert (read.skipped_lines, read.names_rejoined) == (1, 0)
    read = parse_android(b"1\n4096\na\nb\nsystem\n2\n")  # a name with a newline before it still rejoins
    assert [(b.name, b.exp_name) for b in read.buffers] == [("a\nb", "system")]


def test_task_records_give_who_each_process_is() -> None:
    from dmabuf_inspect.kernel.bpf.programs import TASK
    from dmabuf_inspect.kernel.bpf.records import INVALID_UID, TaskInfo, parse_task_records

    data = TASK.pack(100, 1, 1000, 0, 5 * 10**9, b"weston") + TASK.pack(200, 100, INVALID_UID, 0, 7, b"x" * 16)
    assert parse_task_records(data) == {
        100: TaskInfo(1, 1000, 5 * 10**9, b"weston"),
        200: TaskInfo(100, None, 7, b"x" * 16),
    }
    assert parse_task_records(b"") == {}
    with pytest.raises(BpfParseError, match="task records cut short"):
        parse_task_records(data[:-1])
