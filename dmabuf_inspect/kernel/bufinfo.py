"""debugfs `dma_buf/bufinfo`, in every format dma_buf_debug_show() has printed.

A 6.12 file, tabs shown as `\\t`:

    (a blank line)
    Dma-buf Objects:
    size    \\tflags   \\tmode    \\tcount   \\texp_name\\tino     \\tname
    00004096\\t00000002\\t00080007\\t00000003\\tudmabuf\\t00001033\\tframe
    \\twrite fence:vgem unbound seq 1 unsignalled
    \\tAttached Devices:
    \\t0000:00:02.0
    Total 1 devices attached
    (two blank lines)
    Total 1 objects, 4096 bytes

The header and the object line changed over time:
  3.10-3.14  `\\texp_name\\tsize\\tflags\\tmode\\tcount`, objects `\\t\\tEXP\\tSIZE\\tFLAGS\\tMODE\\tCOUNT`,
             `\\t\\tAttached Devices:`, `\\n\\t\\tTotal N devices attached`
  3.15-4.11  `size\\tflags\\tmode\\tcount\\texp_name`, objects `SIZE\\tFLAGS\\tMODE\\tCOUNT\\tEXP`
  4.12-5.2   the same, header columns padded to 8 (`%-8s`)
  5.3-5.18   `... exp_name\\tino`; objects add `\\tINO\\tNAME`, NAME empty when unset
  5.19-      `... exp_name\\tino\\tname`; an unset NAME prints `<none>`
Fence lines, one per fence of the buffer's reservation object (none before 4.12):
  4.12-~5.16  `\\tExclusive fence: DRIVER TIMELINE [un]signalled` and `\\tShared fence: ...`
  ~5.17-5.18  `\\tExclusive fence:DRIVER TIMELINE seq N [un]signalled` ('dma-buf: add
              dma_fence_describe and dma_resv_describe', no space after the colon)
  5.19-       `\\tUSAGE fence:DRIVER TIMELINE seq N [un]signalled`, USAGE kernel|write|read|bookkeep
  7.3 (lab)   `\\tUSAGE fence:CTX:SEQ TIMELINE DRIVER [un]signalled` ('dma-buf: cleanup
              dma_fence_describe v3', Nov 2025); a signalled fence prints TIMELINE and DRIVER empty

The kernel prints names raw: a buffer name (any 31 bytes, DMA_BUF_SET_NAME) or a sw_sync
timeline name (the creator's comm) may hold tabs and newlines. A name's extra lines are put back
onto it, but a name may still imitate a fence line; /proc/PID/fdinfo prints names exactly.
"""

from __future__ import annotations

import re
from itertools import repeat

from dmabuf_inspect.kernel.lazyre import lazy
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.model import BufInfo, BufInfoEntry, BufInfoTable, Fence
from dmabuf_inspect.textsafe import as_bytes as _as_bytes

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable


_c_plain: Callable[[bytes], _fdwalk.PlainColumns | None] | None
try:
    from dmabuf_inspect.kernel import _fdwalk

    _c_plain = _fdwalk.bufinfo_plain
except (ImportError, AttributeError):  # built only where a C compiler was at install time
    _c_plain = None


class BufinfoParseError(ValueError):
    """The text is not a dma_buf/bufinfo at all: empty, or nothing in it is recognisable.

    The only exception parse_bufinfo() raises. Lines it does not recognise are skipped.
    """


_N = rb"(\d{1,20})"  # %zu, %lu, %llu: at most 20 digits; longer is garbage, not a number
_X = rb"([0-9a-fA-F]{1,16})"
_ROW = lazy(_N + rb"\t" + _X + rb"\t" + _X + rb"\t(-?\d{1,20})\t(.*)", re.S)
# 3.10-3.14: dma_buf_describe() printed "\t" then "\t%s\t%08zu\t%08x\t%08x\t%08ld\n".
_ROW_3_10 = lazy(rb"\t\t(.*)\t" + _N + rb"\t" + _X + rb"\t" + _X + rb"\t(-?\d{1,20})", re.S)
_TOTAL_OBJECTS = lazy(rb"Total " + _N + rb" objects, " + _N + rb" bytes")
_TOTAL_DEVICES = lazy(rb"\s*Total \d{1,20} devices attached")
_MARKER = b"Attached Devices:"
_FENCE_HEAD = lazy(rb"\t([A-Za-z]{1,16}) fence:(.*)", re.S)
_FENCE_OLD = lazy(rb" (.*) (un)?signalled", re.S)
_FENCE_SEQ = lazy(rb"(.*) seq " + _N + rb" (un)?signalled", re.S)
_FENCE_CTX = lazy(_N + rb":" + _N + rb" (.*) (un)?signalled", re.S)
_ROW_START = frozenset(b"0123456789")
_MAX_FENCE_LINES = 16  # a timeline name is at most a 16-byte comm, so at most 15 newlines
_MAX_NAME_LINES = 32  # DMA_BUF_NAME_LEN: at most 31 newlines
_MAX_DEVICES = 4096  # attachments kept per object; more is no kernel's output
_MAX_TAIL = 1 << 16  # lines from an object's first marker to its total: fences, devices


class _Texts(dict[bytes, str]):
    """Decoded strings, shared: a file names few exporters, drivers, timelines and devices."""

    def __missing__(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "surrogateescape")
        if len(self) < 4096:
            self[raw] = text
        return text


def _fence(line: bytes, texts: _Texts) -> Fence | None:
    head = _FENCE_HEAD.fullmatch(line)
    if head is None:
        return None
    usage, rest = texts[head.group(1)].lower(), head.group(2)
    if rest.startswith(b" "):  # up to 5.16: "Exclusive fence: DRIVER TIMELINE [un]signalled"
        old = _FENCE_OLD.fullmatch(rest)
        if old is None:
            return None
        driver, _, timeline = old.group(1).partition(b" ")
        return Fence(usage, texts[driver], texts[timeline], "", None, old.group(2) is None)
    ctx = _FENCE_CTX.fullmatch(rest)
    if ctx is not None:  # 7.3: "CTX:SEQ TIMELINE DRIVER"; the driver name has no spaces
        timeline, _, driver = ctx.group(3).rpartition(b" ")
        return Fence(
            usage,
            texts[driver],
            texts[timeline],
            ctx.group(2).decode(),
            ctx.group(1).decode(),
            ctx.group(4) is None,
        )
    seq = _FENCE_SEQ.fullmatch(rest)
    if seq is not None:  # 5.17-7.2: "DRIVER TIMELINE seq N"
        driver, _, timeline = seq.group(1).partition(b" ")
        return Fence(usage, texts[driver], texts[timeline], seq.group(2).decode(), None, seq.group(3) is None)
    return None


def parse_fence(line: bytes | str) -> Fence | None:
    """One fence line (leading tab included, newline not), or None when it is not one."""
    return _fence(_as_bytes(line), _Texts())


class _Header:
    def __init__(self) -> None:
        self.seen = False
        self.name_column = False  # 5.19+: `<none>` stands for no name
        self.layout_3_10 = False


def _read_header(line: bytes, header: _Header) -> bool:
    fields = [f.strip() for f in line.split(b"\t") if f.strip()]
    if fields[:4] == [b"size", b"flags", b"mode", b"count"] and b"exp_name" in fields:
        header.seen, header.name_column, header.layout_3_10 = True, fields[-1] == b"name", False
        return True
    if fields == [b"exp_name", b"size", b"flags", b"mode", b"count"]:
        header.seen, header.name_column, header.layout_3_10 = True, False, True
        return True
    return False


_Row = tuple[int, int, int, int, bytes, "int | None", "bytes | None"]


def _read_row(line: bytes, header: _Header) -> _Row | None:
    """(size, flags, mode, count, exp_name, inode, name or None when no name column was printed)."""
    if header.layout_3_10:
        old = _ROW_3_10.fullmatch(line)
        if old is None:
            return None
        exp, size, flags, mode, count = old.groups()
        return int(size), int(flags, 16), int(mode, 16), int(count), exp, None, None
    row = _ROW.fullmatch(line)
    if row is None:
        return None
    size, flags, mode, count, rest = row.groups()
    parts = rest.split(b"\t", 2)
    inode: int | None = None
    name: bytes | None = None
    if len(parts) >= 2 and parts[1].isdigit() and len(parts[1]) <= 20:  # 5.3+: `\tINO[\tNAME]`
        rest, inode = parts[0], int(parts[1])
        name = parts[2] if len(parts) == 3 else None
    return int(size), int(flags, 16), int(mode, 16), int(count), rest, inode, name


def _is_fence_head(line: bytes) -> bool:
    return line.startswith(b"\t") and b" fence:" in line and _FENCE_HEAD.fullmatch(line) is not None


def _take_fence(lines: list[bytes], i: int, texts: _Texts) -> tuple[Fence, int] | None:
    """The fence that starts at lines[i], and the index after it; a timeline name with newlines
    continues on the next lines, up to one that ends the fence."""
    for j in range(i, min(i + _MAX_FENCE_LINES, len(lines))):
        if j > i and _is_fence_head(lines[j]):
            return None
        if lines[j].endswith(b"signalled"):
            fence = _fence(lines[i] if j == i else b"\n".join(lines[i : j + 1]), texts)
            if fence is not None:
                return fence, j + 1
    return None


def _fences_and_name_lines(lines: list[bytes], texts: _Texts) -> tuple[list[Fence], list[bytes]]:
    """Split the lines between an object line and its `Attached Devices:` into fences and the
    extra lines of the object's name (those come first: the name ends the object line)."""
    heads = [k for k, line in enumerate(lines) if b" fence:" in line and _is_fence_head(line)]
    fences: list[Fence] = []
    first = len(lines)
    after = 0
    for k in heads:
        if k < after:
            continue
        taken = _take_fence(lines, k, texts)
        if taken is not None:
            first = min(first, k)
            fences.append(taken[0])
            after = taken[1]
    return fences, lines[: min(first, _MAX_NAME_LINES)]


def _entry(row: _Row, body: list[bytes], header: _Header, texts: _Texts) -> BufInfoEntry:
    size, flags, mode, count, exp, inode, name = row
    # The last marker is the kernel's: a name may hold a fake one, device names hold none.
    mark = len(body) - 1
    while mark >= 0 and not (body[mark].endswith(_MARKER) and body[mark].strip(b"\t") == _MARKER):
        mark -= 1
    before, devices = (body, []) if mark < 0 else (body[:mark], body[mark + 1 :])
    fences, name_lines = _fences_and_name_lines(before, texts) if before else ([], [])
    if name is not None and name_lines:
        name = b"\n".join([name, *name_lines])
    tabs = b"\t\t" if header.layout_3_10 else b"\t"
    attachments = tuple(texts[d.removeprefix(tabs)] for d in devices[:_MAX_DEVICES] if d.strip())
    if name == b"" or (name == b"<none>" and (header.name_column or not header.seen)):
        name = None
    return BufInfoEntry(
        size_bytes=size,
        flags=flags,
        mode=mode,
        count=count,
        exp_name=texts[exp],
        inode=inode,
        name=None if name is None else name.decode("utf-8", "surrogateescape"),
        fences=tuple(fences),
        attachments=attachments,
    )


_FAST_HEAD = lazy(rb"\n?Dma-buf Objects:\nsize *\tflags *\tmode *\tcount *\texp_name\tino *(\tname)?\n")
_FAST_REST = lazy(
    rb"((?:\t[^\n]*\n)*?)"  # fence lines
    rb"\tAttached Devices:\n"
    rb"((?:\t[^\n]*\n)*)"  # device lines
    rb"Total \d{1,20} devices attached"
)
_FAST_TAIL = lazy(rb"Total " + _N + rb" objects, " + _N + rb" bytes\n")
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_PLAIN_END = b"\n\tAttached Devices:\nTotal 0 devices attached\n\n"


def _fast_rest(rest: bytes, texts: _Texts) -> tuple[tuple[Fence, ...], tuple[str, ...]] | None:
    """An object's lines after its object line: fences, then the devices."""
    m = _FAST_REST.fullmatch(rest)
    if m is None:
        return None
    fence_blob, dev_blob = m.groups()
    if _MARKER in dev_blob or _MARKER in fence_blob:
        return None  # a name or device imitating the marker: the line parser takes the last one
    fences: tuple[Fence, ...] = ()
    if fence_blob:
        found = [_fence(line, texts) for line in fence_blob[:-1].split(b"\n")]
        if None in found:
            return None
        fences = tuple(f for f in found if f is not None)
    devices = tuple(texts[d[1:]] for d in dev_blob[:-1].split(b"\n") if d.strip()) if dev_blob else ()
    return fences, devices


def _numbers(column: list[bytes], base: int, longest: int) -> tuple[int, ...] | None:
    """Every field 1..longest digits of `base` (10 or 16), or None. A column holds few
    distinct values but the inodes': each distinct one is checked and converted once."""
    unique = set(column)
    joined = b"".join(unique)
    if not (joined.isdigit() if base == 10 else not joined.translate(None, _HEX_DIGITS)):
        return None
    if max(map(len, unique)) > longest or b"" in unique:
        return None
    if len(unique) * 4 < len(column):
        value = {b: int(b, base) for b in unique}
        return tuple(map(value.__getitem__, column))
    return tuple(map(int, column, repeat(base)))


_Objects = tuple[list[bytes], tuple[tuple[Fence, ...], ...], tuple[tuple[str, ...], ...]]


def _plain_objects(body: bytes) -> _Objects | None:
    """Every object without fences and devices: their object lines, split apart in one call.
    The caller checks that none holds a newline (a name's, or an object of another kind)."""
    rows = body.split(_PLAIN_END)
    if rows.pop() != b"\n" or not rows:
        return None
    return rows, ((),) * len(rows), ((),) * len(rows)


def _objects(body: bytes, texts: _Texts) -> _Objects | None:
    """Any objects: each block, up to a blank line, is an object line and the lines after it."""
    if not body.endswith(b"\n\n\n"):
        return None
    blocks = body[:-3].split(b"\n\n")
    rows, _, rests = zip(*map(bytes.partition, blocks, repeat(b"\n")), strict=True)
    rest_of = {r: _fast_rest(r, texts) for r in set(rests)}
    if None in rest_of.values():
        return None
    fences, devices = zip(*map(rest_of.__getitem__, rests), strict=True)
    return list(rows), fences, devices


_Columns = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    list[bytes],
    tuple[int, ...],
    list[bytes],
    tuple[tuple[Fence, ...], ...],
    tuple[tuple[str, ...], ...],
]


def _columns(body: bytes, texts: _Texts) -> _Columns | None:
    """The objects' fields column by column, with C calls per column (what _fdwalk.bufinfo_plain
    does in one pass for the plain file), or None."""
    objects = _plain_objects(body)
    if objects is None or b"\n" in (joined := b"\t".join(objects[0])):
        objects = _objects(body, texts)
        if objects is None:
            return None
        joined = b"\t".join(objects[0])
    rows, fences, devices = objects
    if set(map(bytes.count, rows, repeat(b"\t"))) != {6}:
        return None
    fields = joined.split(b"\t")
    sizes, flags, modes, counts, inodes = (
        _numbers(fields[k::7], base, longest)
        for k, base, longest in ((0, 10, 20), (1, 16, 16), (2, 16, 16), (3, 10, 20), (5, 10, 20))
    )
    if sizes is None or flags is None or modes is None or counts is None or inodes is None:
        return None
    return sizes, flags, modes, counts, fields[4::7], inodes, fields[6::7], tuple(fences), tuple(devices)


def _table_fast(raw: bytes) -> BufInfoTable | None:
    """The common case of 5.3+, column by column in C, with no Python code per object: every
    object well-formed, the kernel's blank lines exactly, no tab or newline in a name, every
    fence line a fence, counts not negative. None when anything is unusual: the line parser
    decides then."""
    head = _FAST_HEAD.match(raw)
    if head is None:
        return None
    end = raw.rfind(b"Total ")
    tail = _FAST_TAIL.fullmatch(raw, end) if end >= 0 else None
    if tail is None:
        return None
    totals = int(tail.group(1)), int(tail.group(2))
    # dma_buf_debug_show(): each object ends "Total N devices attached\n\n", the list "\n".
    body = raw[head.end() : end]
    if body == b"\n":
        return BufInfoTable((), (), (), (), (), (), (), (), (), *totals)
    texts = _Texts()
    plain = _c_plain(body) if _c_plain is not None else None
    if plain is not None:  # no fence, no device: the columns in one C pass
        sizes, flags, modes, counts, exps, inodes, names = plain
        fences: tuple[tuple[Fence, ...], ...] = ((),) * len(inodes)
        devices: tuple[tuple[str, ...], ...] = ((),) * len(inodes)
    else:
        columns = _columns(body, texts)
        if columns is None:
            return None
        sizes, flags, modes, counts, exps, inodes, names, fences, devices = columns
    none = b"<none>" if head.group(1) is not None else b""
    name_of = {b: None if b in (b"", none) else b.decode("utf-8", "surrogateescape") for b in set(names)}
    return BufInfoTable(
        sizes,
        flags,
        modes,
        counts,
        tuple(map(texts.__getitem__, exps)),
        inodes,
        tuple(map(name_of.__getitem__, names)),
        fences,
        devices,
        *totals,
    )


def _parse(data: bytes | str) -> BufInfoTable | BufInfo:
    """Columns when the file is plain, else the line parser's records."""
    raw = _as_bytes(data)
    if not raw.strip():
        raise BufinfoParseError("empty dma_buf/bufinfo")
    return _table_fast(raw) or _parse_lines(raw)


def parse_bufinfo_table(data: bytes | str) -> BufInfoTable:
    """parse_bufinfo(), column by column: what a scan of 10 000 buffers wants."""
    parsed = _parse(data)
    return parsed if isinstance(parsed, BufInfoTable) else BufInfoTable.of(parsed)


def parse_bufinfo(data: bytes | str) -> BufInfo:
    """Parse bufinfo text of any kernel since 3.10.

    Unrecognised lines are skipped. An unterminated last line is dropped (seq_file ends every
    line, so it was cut short), and so a truncated file gives the objects read so far and
    `total_objects` None. Raises BufinfoParseError only for text with no header, no object and
    no totals line.
    """
    parsed = _parse(data)
    return parsed.bufinfo() if isinstance(parsed, BufInfoTable) else parsed


def _parse_lines(raw: bytes) -> BufInfo:
    """parse_bufinfo() line by line: every format, names with newlines, garbage skipped."""
    lines = raw.split(b"\n")
    lines.pop()  # "" after the last newline, or an unterminated (cut) line
    n = len(lines)
    header = _Header()
    texts = _Texts()
    entries: list[BufInfoEntry] = []
    total_objects: int | None = None
    total_bytes: int | None = None
    i = 0
    while i < n:
        line = lines[i]
        i += 1
        if not line:
            continue
        row = _read_row(line, header) if line[0] in _ROW_START or header.layout_3_10 else None
        if row is None:
            if line.startswith(b"Total "):
                totals = _TOTAL_OBJECTS.fullmatch(line)
                if totals is not None:
                    total_objects, total_bytes = int(totals.group(1)), int(totals.group(2))
            elif line.startswith((b"size", b"\texp_name")):
                _read_header(line, header)
            continue  # also "Dma-buf Objects:", "\tERROR locking buffer object: skipping"
        start = i
        # Up to the first marker, then the first "Total N devices attached" after it: a name is
        # too short to hold both, so it can not end its object early. A run of non-fence lines
        # longer than a name, or no total within _MAX_TAIL lines, is no kernel's: the object ends
        # there, and garbage does not swallow the objects after it.
        gap = 0
        while i < n and not (lines[i].endswith(_MARKER) and lines[i].strip(b"\t") == _MARKER):
            gap = 0 if b" fence:" in lines[i] else gap + 1
            if gap > _MAX_NAME_LINES + _MAX_FENCE_LINES:
                break
            i += 1
        end = i
        if i < n and gap <= _MAX_NAME_LINES + _MAX_FENCE_LINES:
            j, limit = i + 1, min(n, i + 1 + _MAX_TAIL)
            while j < limit and not (lines[j].endswith(b" devices attached") and _TOTAL_DEVICES.fullmatch(lines[j])):
                j += 1
            if j < limit or limit == n:  # the total, or the end of a truncated file
                end, i = j, j + 1
            else:
                end = i = i + 1
        entries.append(_entry(row, lines[start:end], header, texts))
    if not header.seen and not entries and total_objects is None:
        raise BufinfoParseError("not a dma_buf/bufinfo: no header, no object and no totals line")
    return BufInfo(entries=tuple(entries), total_objects=total_objects, total_bytes=total_bytes)


BUFINFO = "dma_buf/bufinfo"


def read_bufinfo(debugfs: Tree) -> BufInfo:
    """Read and parse `dma_buf/bufinfo` under the debugfs tree (OSError, BufinfoParseError)."""
    return parse_bufinfo(debugfs.read(BUFINFO))
