"""What the iterators print, parsed: pure functions, no I/O.

Android's format (its dmabufIter.c, `dmabuf-inspect bpf pin`), 4 lines per buffer:

    1033                 inode (file->f_inode->i_ino)
    1048576              size in bytes
    frame 1              name, newlines replaced by spaces; an empty line when unset
    system               exporter (exp_name)

Our own binary records (programs.py), in the machine's byte order, for the scan:

    BUFFER  u64 inode, size, file_count; u32 f_flags, f_mode, attachments; u16 device_names,
            fences; char exp_name[64], name[32]                                  (136 bytes)
    DEVICES u64 marker (all ones); char names[4][32]: after a BUFFER with device names, one for
            each 4 of them                                                       (136 bytes)
    FD      u32 pid, fd; u64 inode
    TASK    u32 pid, ppid, uid, pad; u64 start_boottime; char comm[16]
    VMA     u32 pid, pad; u64 start, end, pgoff, inode, vm_flags; char name[32]

parse_android() skips what it can't read and counts it (a line that is no number where one is
due, an empty exporter, a record cut short at the end); a name that still holds newlines (a
program that did not replace them) is put back together when the lines after it make sense.
The binary parsers raise BpfParseError, one line, for anything but whole, consistent records.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from itertools import compress, repeat
from operator import itemgetter, mul, ne

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.kernel.bpf.programs import (
    BUFFER,
    DEVICE_NAME_BYTES,
    DEVICES,
    DEVICES_MARKER,
    DMA_BUF_NAME_LEN,
    EXPORTER_BYTES,
    FD,
    MAX_ATTACHMENTS,
    MAX_DEVICE_NAMES,
    NAMES_PER_RECORD,
    TASK,
    VMA,
)
from dmabuf_inspect.model import BufInfoTable, MapEntry
from dmabuf_inspect.records import NamedTuple

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    _Fields = tuple[
        Sequence[int],
        Sequence[int],
        Sequence[int],
        Sequence[int],
        Sequence[int],
        Sequence[int],
        tuple[str, ...],
        tuple[str | None, ...],
    ]

_c_fd_records: Callable[[bytes], dict[int, dict[int, tuple[int, ...]]] | None] | None
_c_buffer_records: Callable[[bytes, int, int], tuple[tuple[Any, ...], ...] | None] | None
_c_rows: Callable[[type[MapEntry], int, tuple[Iterable[object], ...]], list[MapEntry]] | None
try:
    from dmabuf_inspect.kernel import _fdwalk

    _c_fd_records, _c_buffer_records, _c_rows = _fdwalk.fd_records, _fdwalk.buffer_records, _fdwalk.rows
except (ImportError, AttributeError):  # built only where a C compiler was at install time
    _c_fd_records = _c_buffer_records = _c_rows = None

_MAX_DIGITS = 20  # %lu, %llu
# include/linux/mm.h
VM_READ, VM_WRITE, VM_EXEC, VM_MAYSHARE = 0x1, 0x2, 0x4, 0x80


class BpfParseError(DmabufInspectError, ValueError):
    """Iterator output that is not what the program prints; one line."""


class BpfBuffer(NamedTuple):
    """One dma-buf as an iterator saw it."""

    inode: int
    size_bytes: int
    exp_name: str
    name: str | None  # None when unset (or empty)
    count: int | None  # type: ignore[assignment]  # file references, as bufinfo's; None from Android's format
    attachments: int | None  # attached devices (up to 64); None from Android's format
    devices: tuple[str, ...] = ()  # the first 8 attached devices' names
    flags: int | None = None  # file->f_flags, as bufinfo prints them
    mode: int | None = None  # file->f_mode
    fences: int | None = None  # the reservation list's length (up to 65535); None: not counted


class BpfListing(NamedTuple):
    """Every buffer in bufinfo's columns (fences empty), and what debugfs bufinfo would add to it."""

    table: BufInfoTable
    fenced: int  # buffers with fences in their reservation list: bufinfo prints them
    crowded: int  # buffers with more than MAX_DEVICE_NAMES attachments: bufinfo names them all


class AndroidRead(NamedTuple):
    buffers: list[BpfBuffer]
    skipped_lines: int  # lines that fit no record
    names_rejoined: int  # names whose newlines were put back


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _number(line: bytes) -> int | None:
    return int(line) if line.isdigit() and len(line) <= _MAX_DIGITS else None


def _record_at(lines: list[bytes], i: int) -> tuple[BpfBuffer, int, bool] | None:
    """The record starting at lines[i], the index after it, and whether its name was rejoined."""
    inode = _number(lines[i])
    size = _number(lines[i + 1]) if i + 1 < len(lines) else None
    if inode is None or size is None:
        return None
    # The exporter is the line before the next record (two numbers, or one number ending a cut
    # output) or the end: with a name of one line (k = 0) first, then of more lines, as long as
    # the name fits DMA_BUF_NAME_LEN.
    n = len(lines)
    name_bytes = -1
    for k in range(DMA_BUF_NAME_LEN):
        exporter_at = i + 3 + k
        if exporter_at >= n:
            break
        name_bytes += len(lines[exporter_at - 1]) + 1
        if name_bytes >= DMA_BUF_NAME_LEN:
            break
        after = exporter_at + 1
        # what follows: the end, the next record (two numbers), or one cut short at the end
        if after == n or (
            _number(lines[after]) is not None and (after + 1 == n or _number(lines[after + 1]) is not None)
        ):
            exporter = lines[exporter_at]
            if not exporter:
                return None
            name = b"\n".join(lines[i + 2 : exporter_at])
            record = BpfBuffer(inode, size, _text(exporter), _text(name) if name else None, None, None)
            return record, after, k > 0
    if i + 3 < n and lines[i + 3]:  # nothing after makes sense: take four lines as they are
        name = lines[i + 2]
        return BpfBuffer(inode, size, _text(lines[i + 3]), _text(name) if name else None, None, None), i + 4, False
    return None


def parse_android(data: bytes | str) -> AndroidRead:
    """Android's 4-line format. An unterminated last line is dropped (cut short); so is a record
    with fewer than 4 lines at the end. Raises BpfParseError only when the text is not empty
    and holds no record at all."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    lines = raw.split(b"\n")
    lines.pop()  # "" after the last newline, or a line cut short
    buffers: list[BpfBuffer] = []
    skipped = rejoined = 0
    i = 0
    while i < len(lines):
        found = _record_at(lines, i)
        if found is None:
            skipped += 1
            i += 1
            continue
        record, i, was_rejoined = found
        buffers.append(record)
        rejoined += was_rejoined
    if raw.strip() and not buffers:
        first = raw[:40].decode("ascii", "backslashreplace")
        raise BpfParseError(f"not a dma-buf iterator's output (4 lines per buffer): it starts {first!r}")
    return AndroidRead(buffers, skipped, rejoined)


def _names(column: list[bytes], empty: str | None) -> list[str | None]:
    """C strings of fixed-size fields decoded, each distinct one once (few exporters, few names)."""
    text: dict[bytes, str | None] = {}
    for raw in set(column):
        cut = _cstring(raw)
        text[raw] = _text(cut) if cut else empty
    return list(map(text.__getitem__, column))


def _u64s(data: bytes, record: int, offset: int) -> list[int]:
    """The u64 field at `offset` of every `record`-byte record, in one C call (no tuple per record)."""
    return memoryview(data).cast("Q")[offset // 8 :: record // 8].tolist()


def _u32s(data: bytes, record: int, offset: int) -> list[int]:
    return memoryview(data).cast("I")[offset // 4 :: record // 4].tolist()


def _u16s(data: bytes, record: int, offset: int) -> list[int]:
    return memoryview(data).cast("H")[offset // 2 :: record // 2].tolist()


def _fields(data: bytes, record: int, offset: int, size: int) -> list[bytes]:
    """The `size`-byte field at `offset` of every record, sliced by C calls."""
    span = len(data) // record * record
    return list(
        map(data.__getitem__, map(slice, range(offset, span, record), range(offset + size, span + size, record)))
    )


def _buffer_columns(data: bytes) -> tuple[list[int], ...] | None:
    """(inode, size, count, flags, mode, fences) of BUFFER records without attachments, or None
    when some have them (or it is not BUFFER records at all): parse_buffer_records_plain()
    decides then."""
    if len(data) % BUFFER.size:
        raise BpfParseError(f"dma-buf records cut short: {len(data)} bytes is no multiple of {BUFFER.size}")
    inode = _u64s(data, BUFFER.size, 0)
    if DEVICES_MARKER in inode or any(_u32s(data, BUFFER.size, 32)) or any(_u16s(data, BUFFER.size, 36)):
        return None
    return (
        inode,
        _u64s(data, BUFFER.size, 8),
        _u64s(data, BUFFER.size, 16),
        _u32s(data, BUFFER.size, 24),
        _u32s(data, BUFFER.size, 28),
        _u16s(data, BUFFER.size, 38),
    )


_EXP_AT = 40  # exp_name, then name


# A BUFFER record's exporter and name, as one field: the record's last 96 bytes.
_EXP_AND_NAME = struct.Struct(f"={_EXP_AT}x{EXPORTER_BYTES + DMA_BUF_NAME_LEN}s")
assert _EXP_AND_NAME.size == BUFFER.size


def _exporters_and_names(data: bytes) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """Each BUFFER's exporter and name, both fields read as one and decoded once per distinct
    pair (a few exporters, most buffers unnamed; often one pair for all)."""
    n = len(data) // BUFFER.size
    if not n:
        return (), ()
    text: dict[tuple[bytes], tuple[str, str | None]] = {}
    for key in set(_EXP_AND_NAME.iter_unpack(data)):
        raw_exp, raw_name = _cstring(key[0][:EXPORTER_BYTES]), _cstring(key[0][EXPORTER_BYTES:])
        text[key] = (_text(raw_exp), _text(raw_name) if raw_name else None)
    if len(text) == 1:
        ((exporter, name),) = text.values()
        return (exporter,) * n, (name,) * n
    exporters, names = zip(*map(text.__getitem__, _EXP_AND_NAME.iter_unpack(data)), strict=True)
    return exporters, names


def _buffer_fields(data: bytes) -> _Fields | None:
    """(inode, size, count, flags, mode, fences, exporters, names) of BUFFER records without
    attachments, in one C pass where _fdwalk is built (each distinct name decoded once), else by
    _buffer_columns() and _exporters_and_names(); None when some buffer has attachments."""
    if _c_buffer_records is None or len(data) % BUFFER.size:
        columns = _buffer_columns(data)
        if columns is None:
            return None
        exporters, names = _exporters_and_names(data)
        inode, size, count, flags, mode, fences = columns
        return inode, size, count, flags, mode, fences, exporters, names
    found = _c_buffer_records(data, EXPORTER_BYTES, DMA_BUF_NAME_LEN)
    if found is None:
        return None
    c_inode, c_size, c_count, c_flags, c_mode, c_fences, raw_exporters, raw_names = found
    return c_inode, c_size, c_count, c_flags, c_mode, c_fences, _decoded(raw_exporters, ""), _decoded(raw_names, None)


def _decoded(column: tuple[bytes, ...], empty: str | None) -> tuple[Any, ...]:
    """Each C string decoded once (a few exporters; most buffers unnamed: `empty`)."""
    text = {raw: _text(raw) if raw else empty for raw in set(column)}
    if len(text) == 1:
        return (*text.values(),) * len(column)
    return tuple(map(text.__getitem__, column))


def _less_own_reference(counts: Sequence[int]) -> list[int]:
    """Each count less the iterator's own reference, never below 0."""
    if 0 in counts:
        return [max(c - 1, 0) for c in counts]
    return [c - 1 for c in counts]


def parse_buffer_records(data: bytes, *, own_reference: bool = True) -> list[BpfBuffer]:
    """Our BUFFER records (and the DEVICES records after those with attachments).
    `own_reference`: the iterator held a reference to each buffer's file while the program read
    its count (dma_buf_iter_begin/next, 6.16+), which is taken off. Each field of every record is
    read in one C call; parse_buffer_records_plain() is the same, record by record, and decides
    where any buffer has attached devices."""
    fields = _buffer_fields(data)
    if fields is None:
        return parse_buffer_records_plain(data, own_reference=own_reference)
    inode, size, count, flags, mode, fences, exporters, names = fields
    counts = _less_own_reference(count) if own_reference else count
    rows = zip(
        inode, size, exporters, names, counts, repeat(0), repeat(()), flags, mode, fences, strict=False
    )  # ends with inode
    return list(map(tuple.__new__, repeat(BpfBuffer), rows))


def parse_buffer_table(data: bytes, *, own_reference: bool = True) -> BufInfoTable:
    """Our BUFFER records straight into bufinfo's columns (bufinfo_table(parse_buffer_records())
    without a record per buffer): what a scan joins on when debugfs is missing."""
    return parse_buffer_listing(data, own_reference=own_reference).table


def parse_buffer_listing(data: bytes, *, own_reference: bool = True) -> BpfListing:
    """parse_buffer_table(), and how many buffers debugfs bufinfo would say more of (fences, or
    devices past the first MAX_DEVICE_NAMES)."""
    fields = _buffer_fields(data)
    if fields is None:
        return listing_of(parse_buffer_records_plain(data, own_reference=own_reference))
    inode, size, count, flags, mode, fences, exporters, names = fields
    counts = tuple(_less_own_reference(count) if own_reference else count)
    n = len(inode)
    table = BufInfoTable(
        tuple(size),
        tuple(flags),
        tuple(mode),
        counts,
        exporters,
        tuple(inode),
        names,
        ((),) * n,
        ((),) * n,
        n,
        sum(size),
    )
    return BpfListing(table, n - fences.count(0), 0)


def listing_of(buffers: list[BpfBuffer]) -> BpfListing:
    """Our iterator's buffers as a BpfListing (fences None counts as fenced: not counted)."""
    fenced = sum(1 for b in buffers if b.fences != 0)
    crowded = sum(1 for b in buffers if b.attachments is not None and b.attachments > MAX_DEVICE_NAMES)
    return BpfListing(bufinfo_table(buffers), fenced, crowded)


def parse_buffer_records_plain(data: bytes, *, own_reference: bool = True) -> list[BpfBuffer]:
    """parse_buffer_records(), record by record."""
    if len(data) % BUFFER.size:
        raise BpfParseError(f"dma-buf records cut short: {len(data)} bytes is no multiple of {BUFFER.size}")
    out: list[BpfBuffer] = []
    records = list(BUFFER.iter_unpack(data))
    at = 0
    while at < len(records):
        inode, size, count, flags, mode, attachments, named, fences, exp, name = records[at]
        if inode == DEVICES_MARKER:
            raise BpfParseError(f"device names with no buffer before them at byte {at * BUFFER.size}")
        if attachments > MAX_ATTACHMENTS or named != min(attachments, MAX_DEVICE_NAMES):
            raise BpfParseError(
                f"not a dma-buf record at byte {at * BUFFER.size}: {attachments} attachments, {named} named"
            )
        devices: list[str] = []
        for k in range(-(-named // NAMES_PER_RECORD)):
            follow = at + 1 + k
            raw = data[follow * BUFFER.size : (follow + 1) * BUFFER.size]
            if len(raw) < BUFFER.size or DEVICES.unpack(raw)[0] != DEVICES_MARKER:
                raise BpfParseError(f"dma-buf record at byte {at * BUFFER.size}: its device names are missing")
            names = DEVICES.unpack(raw)[1]
            for j in range(min(NAMES_PER_RECORD, named - len(devices))):
                devices.append(_text(_cstring(names[j * DEVICE_NAME_BYTES : (j + 1) * DEVICE_NAME_BYTES])))
        name_raw = _cstring(name)
        out.append(
            BpfBuffer(
                inode,
                size,
                _text(_cstring(exp)),
                _text(name_raw) if name_raw else None,
                max(count - 1, 0) if own_reference else count,
                attachments,
                tuple(devices),
                flags,
                mode,
                fences,
            )
        )
        at += 1 + -(-named // NAMES_PER_RECORD)
    return out


def _runs(pids: list[int]) -> list[tuple[int, int, int]]:
    """(pid, start, stop) of each run of equal pids: the iterators give each task's records together."""
    n = len(pids)
    starts = [0, *compress(range(1, n), map(ne, pids[1:], pids[:-1]))]
    return [(pids[a], a, b) for a, b in zip(starts, [*starts[1:], n], strict=True)]


def parse_fd_records(data: bytes) -> dict[int, dict[int, tuple[int, ...]]]:
    """FD records: pid -> {inode: fds}, fds ascending and inodes in first-fd order, the shape
    kernel.fdwalk.fds_by_inode() gives for one process. Grouped in one C pass where _fdwalk is
    built, else a process's records are split and grouped by C calls; parse_fd_records_plain()
    is the same, record by record."""
    if len(data) % FD.size:
        raise BpfParseError(f"fd records cut short: {len(data)} bytes is no multiple of {FD.size}")
    if not data:
        return {}
    if _c_fd_records is not None and (grouped := _c_fd_records(data)) is not None:
        return grouped
    pids, fds, inodes = _u32s(data, FD.size, 0), _u32s(data, FD.size, 4), _u64s(data, FD.size, 8)
    runs = _runs(pids)
    if len({pid for pid, _, _ in runs}) != len(runs):
        return parse_fd_records_plain(data)
    out: dict[int, dict[int, tuple[int, ...]]] = {}
    for pid, a, b in runs:
        its_fds, its_inodes = fds[a:b], inodes[a:b]
        if list(its_fds) != sorted(its_fds):  # the iterator walks a task's fds in order
            return parse_fd_records_plain(data)
        held: dict[int, tuple[int, ...]] = dict(zip(its_inodes, zip(its_fds), strict=True))
        if len(held) != b - a:  # buffers under several fds (Python's mmap dup()s one)
            counts = Counter(its_inodes)
            if max(counts.values()) == 2:  # the first fd and the last are all of them
                first = dict(zip(reversed(its_inodes), reversed(its_fds), strict=True))
                held.update((i, (first[i], held[i][0])) for i, n in counts.items() if n == 2)
            else:
                shared: dict[int, list[int]] = {i: [] for i, n in counts.items() if n > 1}
                for fd, inode in zip(its_fds, its_inodes, strict=True):
                    if inode in shared:
                        shared[inode].append(fd)
                held.update((inode, tuple(f)) for inode, f in shared.items())
        out[pid] = held
    return out


def parse_fd_records_plain(data: bytes) -> dict[int, dict[int, tuple[int, ...]]]:
    """parse_fd_records(), record by record."""
    if len(data) % FD.size:
        raise BpfParseError(f"fd records cut short: {len(data)} bytes is no multiple of {FD.size}")
    out: dict[int, dict[int, list[int]]] = {}
    for pid, fd, inode in sorted(FD.iter_unpack(data), key=itemgetter(0, 1)):
        out.setdefault(pid, {}).setdefault(inode, []).append(fd)
    return {pid: {inode: tuple(fds) for inode, fds in held.items()} for pid, held in out.items()}


def perms(vm_flags: int) -> str:
    """The permissions column of /proc/PID/maps (show_map_vma())."""
    return (
        ("r" if vm_flags & VM_READ else "-")
        + ("w" if vm_flags & VM_WRITE else "-")
        + ("x" if vm_flags & VM_EXEC else "-")
        + ("s" if vm_flags & VM_MAYSHARE else "p")
    )


def parse_vma_records(data: bytes, page_bytes: int | None = None) -> dict[int, list[MapEntry]]:
    """VMA records: pid -> its dma-buf mappings as parse_maps() reads them from /proc/PID/maps,
    in address order. Split and converted column by column in C calls;
    parse_vma_records_plain() is the same, record by record."""
    if len(data) % VMA.size:
        raise BpfParseError(f"mapping records cut short: {len(data)} bytes is no multiple of {VMA.size}")
    if not data:
        return {}
    page = page_bytes or os.sysconf("SC_PAGE_SIZE")
    pids = _u32s(data, VMA.size, 0)
    starts, ends, pgoffs, inodes, vm_flags = (_u64s(data, VMA.size, at) for at in (8, 16, 24, 32, 40))
    raw_names = _fields(data, VMA.size, 48, DMA_BUF_NAME_LEN)
    runs = _runs(pids)
    if any(map(int.__lt__, ends, starts)) or len({pid for pid, _, _ in runs}) != len(runs):
        return parse_vma_records_plain(data, page)
    perms_of = {f: perms(f) for f in set(vm_flags)}
    columns = (
        starts,
        ends,
        map(perms_of.__getitem__, vm_flags),
        map(mul, pgoffs, repeat(page)),
        inodes,
        _names(raw_names, None),
    )
    if _c_rows is not None:
        entries = _c_rows(MapEntry, len(pids), columns)
    else:
        entries = list(map(tuple.__new__, repeat(MapEntry), zip(*columns, strict=False)))  # map()s end with them
    out = {pid: entries[a:b] for pid, a, b in runs}
    for pid, a, b in runs:
        if list(starts[a:b]) != sorted(starts[a:b]):  # the iterator walks them in address order
            out[pid].sort(key=itemgetter(0))
    return out


def parse_vma_records_plain(data: bytes, page_bytes: int | None = None) -> dict[int, list[MapEntry]]:
    """parse_vma_records(), record by record."""
    if len(data) % VMA.size:
        raise BpfParseError(f"mapping records cut short: {len(data)} bytes is no multiple of {VMA.size}")
    page = page_bytes or os.sysconf("SC_PAGE_SIZE")
    out: dict[int, list[MapEntry]] = {}
    for pid, _pad, start, end, pgoff, inode, vm_flags, name in VMA.iter_unpack(data):
        if end < start:
            raise BpfParseError(f"a mapping record ends before it starts ({start:x}-{end:x})")
        raw = _cstring(name)
        out.setdefault(pid, []).append(MapEntry(start, end, perms(vm_flags), pgoff * page, inode, _text(raw) or None))
    for maps in out.values():
        maps.sort(key=itemgetter(0))
    return out


def bufinfo_table(buffers: list[BpfBuffer]) -> BufInfoTable:
    """Our iterator's buffers in the columns debugfs bufinfo gives a scan, to stand in for it:
    no fences (the iterator does not read them), attachments by the names of the first 8 devices.
    BpfParseError for buffers from Android's format, which has no counts, flags nor modes."""
    if any(b.count is None or b.flags is None or b.mode is None for b in buffers):
        raise BpfParseError("Android's format has no file counts, flags nor modes: it can't stand in for bufinfo")
    if not buffers:
        return BufInfoTable((), (), (), (), (), (), (), (), (), 0, 0)
    inode, size, exp_name, name, count, _attachments, devices, flags, mode, _fences = zip(*buffers, strict=True)
    return BufInfoTable(
        size, flags, mode, count, exp_name, inode, name, ((),) * len(buffers), devices, len(buffers), sum(size)
    )


INVALID_UID = 0xFFFFFFFF  # (uid_t)-1: the program found no cred


class TaskInfo(NamedTuple):
    """Who a process is, as iter/task read it from its task_struct."""

    ppid: int
    uid: int | None
    start_boottime_ns: int  # /proc/PID/stat's starttime, before its division into clock ticks
    comm: bytes


def parse_task_records(data: bytes) -> dict[int, TaskInfo]:
    """TASK records: pid -> TaskInfo."""
    if len(data) % TASK.size:
        raise BpfParseError(f"task records cut short: {len(data)} bytes is no multiple of {TASK.size}")
    return {
        pid: TaskInfo(ppid, None if uid == INVALID_UID else uid, start, _cstring(comm))
        for pid, ppid, uid, _pad, start, comm in TASK.iter_unpack(data)
    }
