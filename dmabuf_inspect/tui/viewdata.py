"""Rows for the TUI's tables, built off the UI thread from a snapshot and its diff.

`prepare()` runs in the collector's worker thread: it indexes the snapshot, diffs it against the
one on screen and formats every cell (escaped) once. The UI thread only filters, sorts and
shows. Nothing here imports textual.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len

from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot
from dmabuf_inspect.scan.diff import KERNEL_PID, Change, SnapshotDiff, diff_snapshots, holdings
from dmabuf_inspect.textsafe import escape as _escape_slow
from dmabuf_inspect.units import human_bytes

SortValue = int | str


def escape(text: str | None, *, none: str = "-") -> str:
    """textsafe.escape, with a fast path for the common case: printable ASCII, no backslash."""
    if text is not None and text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return _escape_slow(text, none=none)


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    label: str
    key: str  # name used in exports and by --sort style lookups
    justify: Literal["left", "right"] = "left"
    max_width: int = 40
    descending_first: bool = False  # numbers sort largest first when a column is picked


@dataclass(frozen=True, slots=True)
class Row:
    key: int  # pid, inode, or the index of a small table's row
    cells: tuple[str, ...]  # escaped, ready to show
    sort: tuple[SortValue, ...]  # one per column
    change: Change = Change.SAME
    search: str = ""  # lower-case text the `/` filter looks in


@dataclass(frozen=True, slots=True)
class RowSet:
    rows: tuple[Row, ...]
    widths: tuple[int, ...]  # of the widest cell per column, capped by the column's max_width

    @classmethod
    def build(cls, columns: Sequence[ColumnSpec], rows: Iterable[Row]) -> RowSet:
        rows = tuple(rows)
        floor = [len(c.label) + 2 if c.label else 1 for c in columns]  # room for the sort arrow
        widths = list(floor)
        caps = [max(c.max_width, f) for c, f in zip(columns, floor, strict=True)]
        for i in range(len(columns)):
            cells = [r.cells[i] for r in rows]
            if all(map(str.isascii, cells)):
                w = max(map(len, cells), default=0)
            else:
                w = max(map(cell_len, cells), default=0)
            widths[i] = min(max(widths[i], w), caps[i])
        return cls(rows, tuple(widths))


EMPTY = RowSet((), ())

MARK = ColumnSpec("", "change", max_width=1)

PROCESS_COLUMNS = (
    MARK,
    ColumnSpec("PID", "pid", "right", 8),
    ColumnSpec("Command", "comm", max_width=26),
    ColumnSpec("User", "user", max_width=12),
    ColumnSpec("Bufs", "buffers", "right", 7, descending_first=True),
    ColumnSpec("Rss", "rss_bytes", "right", 11, descending_first=True),
    ColumnSpec("Pss", "pss_bytes", "right", 11, descending_first=True),
    ColumnSpec("Exporters", "exporters", max_width=32),
    ColumnSpec("Cmdline", "cmdline", max_width=60),
)
PROCESS_DEFAULT_SORT = 5

BUFFER_COLUMNS = (
    MARK,
    ColumnSpec("Inode", "inode", "right", 10),
    ColumnSpec("Size", "size_bytes", "right", 11, descending_first=True),
    ColumnSpec("Exporter", "exporter", max_width=16),
    ColumnSpec("Class", "class", max_width=10),
    ColumnSpec("Name", "name", max_width=32),
    ColumnSpec("Fds", "fds", max_width=16),
    ColumnSpec("Maps", "maps", "right", 5, descending_first=True),
    ColumnSpec("Shared", "shared_with", "right", 6, descending_first=True),
)
BUFFER_DEFAULT_SORT = 2

EXPORTER_COLUMNS = (
    ColumnSpec("Exporter", "exporter", max_width=14),
    ColumnSpec("Class", "class", max_width=10),
    ColumnSpec("Bufs", "buffers", "right", 6, descending_first=True),
    ColumnSpec("Bytes", "bytes", "right", 11, descending_first=True),
    ColumnSpec("Kernel", "kernel_only_bytes", "right", 11, descending_first=True),
)
EXPORTER_DEFAULT_SORT = 3

HOLDER_COLUMNS = (
    MARK,
    ColumnSpec("PID", "pid", "right", 8),
    ColumnSpec("Command", "comm", max_width=26),
    ColumnSpec("User", "user", max_width=12),
    ColumnSpec("Fds", "fds", max_width=24),
    ColumnSpec("Maps", "maps", "right", 5, descending_first=True),
    ColumnSpec("Mapped", "mapped_bytes", "right", 11, descending_first=True),
    ColumnSpec("Cmdline", "cmdline", max_width=60),
)
HOLDER_DEFAULT_SORT = 1

KERNEL_COMMAND = "[held only by the kernel]"


@dataclass(frozen=True, slots=True)
class ViewData:
    """Everything the screens show for one snapshot; immutable, so any thread may read it."""

    snapshot: Snapshot
    diff: SnapshotDiff
    processes: RowSet
    buffers_of: Mapping[int, RowSet]  # pid (or KERNEL_PID) -> its buffers, gone ones included
    exporters: RowSet
    buffer_by_inode: Mapping[int, Buffer]  # current buffers, then gone ones
    process_by_pid: Mapping[int, Process]  # current processes, then gone ones
    exporter_mix: Mapping[int, Counter[str]] = field(default_factory=dict)
    prepare_s: float = 0.0  # seconds prepare() took, in the worker

    def command_of(self, pid: int) -> str:
        """The escaped comm of a process (as top shows it)."""
        if pid == KERNEL_PID:
            return KERNEL_COMMAND
        p = self.process_by_pid.get(pid)
        return "?" if p is None else escape(p.comm)

    def cmdline_of(self, pid: int) -> str:
        p = self.process_by_pid.get(pid)
        return "" if p is None else cmdline_text(p)

    def user_of(self, pid: int) -> str:
        p = self.process_by_pid.get(pid)
        return "-" if p is None else escape(p.user)


def cmdline_text(p: Process) -> str:
    """The escaped command line; kernel threads have none and show [comm], as ps does."""
    return escape(p.cmdline) if p.cmdline else f"[{escape(p.comm)}]"


def fds_text(fds: Sequence[int]) -> str:
    return ",".join(map(str, fds)) if fds else "-"


def mix_text(mix: Counter[str]) -> str:
    return " ".join(f"{escape(e)}:{n}" for e, n in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])))


def _process_row(p: Process, mix: Counter[str], change: Change) -> Row:
    comm = escape(p.comm)
    cmdline = cmdline_text(p)
    user = escape(p.user)
    mix_s = mix_text(mix)
    return Row(
        key=p.pid,
        cells=(
            change.mark,
            str(p.pid),
            comm,
            user,
            str(p.buffers),
            human_bytes(p.rss_bytes),
            human_bytes(p.pss_bytes),
            mix_s,
            cmdline,
        ),
        sort=(change.order, p.pid, comm.lower(), user, p.buffers, p.rss_bytes, p.pss_bytes, mix_s, cmdline),
        change=change,
        search=f"{p.pid} {comm} {user} {mix_s} {cmdline}".lower(),
    )


def _kernel_row(held: Mapping[int, tuple[Buffer, Holder | None]], change: Change) -> Row:
    mix: Counter[str] = Counter(b.exporter for b, _ in held.values())
    size = sum(b.size_bytes for b, _ in held.values())
    mix_s = mix_text(mix)
    return Row(
        key=KERNEL_PID,
        cells=(change.mark, "-", KERNEL_COMMAND, "-", str(len(held)), human_bytes(size), "-", mix_s, ""),
        sort=(change.order, KERNEL_PID, KERNEL_COMMAND, "", len(held), size, 0, mix_s, ""),
        change=change,
        search=f"kernel {mix_s}".lower(),
    )


@dataclass(frozen=True, slots=True)
class _BufferCells:
    """The cells of a buffer that do not depend on the holder, formatted once per buffer."""

    inode: str
    size: str
    exporter: str
    name: str
    search: str

    @classmethod
    def of(cls, b: Buffer) -> _BufferCells:
        name = escape(b.name)
        exporter = escape(b.exporter)
        return cls(
            str(b.inode),
            human_bytes(b.size_bytes),
            exporter,
            name,
            f"{b.inode} {exporter} {b.exporter_class} {name}".lower(),
        )


def buffer_row(b: Buffer, h: Holder | None, change: Change, cells: _BufferCells | None = None) -> Row:
    """A buffer as one process (h) holds it; h None: held only by the kernel."""
    c = cells if cells is not None else _BufferCells.of(b)
    fds = fds_text(h.fds) if h is not None else "-"
    maps = h.maps if h is not None else 0
    shared = len(b.holders) - 1 if h is not None else 0
    return Row(
        key=b.inode,
        cells=(change.mark, c.inode, c.size, c.exporter, b.exporter_class, c.name, fds, str(maps), str(shared)),
        sort=(
            change.order,
            b.inode,
            b.size_bytes,
            c.exporter,
            b.exporter_class,
            c.name,
            len(h.fds) if h else 0,
            maps,
            shared,
        ),
        change=change,
        search=c.search,
    )


def holder_rows(view: ViewData, inode: int) -> RowSet:
    """Every process holding one buffer, for the detail screen (gone holders marked)."""
    b = view.buffer_by_inode.get(inode)
    rows: list[Row] = []
    seen: set[int] = set()
    holders = b.holders if b is not None and view.diff.buffer(inode) is not Change.GONE else ()
    for h in holders:
        seen.add(h.pid)
        rows.append(_holder_row(view, h, view.diff.holding(h.pid, inode)))
    for (pid, ino), change in view.diff.holdings.items():
        if ino == inode and change is Change.GONE and pid not in seen and pid != KERNEL_PID:
            old = next((h for ob, h in view.diff.gone_holdings.get(pid, ()) if ob.inode == inode), None)
            if old is not None:
                rows.append(_holder_row(view, old, Change.GONE))
    return RowSet.build(HOLDER_COLUMNS, rows)


def _holder_row(view: ViewData, h: Holder, change: Change) -> Row:
    comm = view.command_of(h.pid)
    user = view.user_of(h.pid)
    cmdline = view.cmdline_of(h.pid)
    return Row(
        key=h.pid,
        cells=(change.mark, str(h.pid), comm, user, fds_text(h.fds), str(h.maps), human_bytes(h.mapped_bytes), cmdline),
        sort=(change.order, h.pid, comm.lower(), user, len(h.fds), h.maps, h.mapped_bytes, cmdline),
        change=change,
        search=f"{h.pid} {comm} {user} {cmdline}".lower(),
    )


def _exporter_rows(snap: Snapshot) -> RowSet:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    kernel: Counter[str] = Counter()
    klass: dict[str, str] = {}
    for b in snap.buffers:
        count[b.exporter] += 1
        size[b.exporter] += b.size_bytes
        if not b.holders:
            kernel[b.exporter] += b.size_bytes
        klass[b.exporter] = b.exporter_class
    known = snap.totals.kernel_only_bytes is not None
    rows = []
    for i, e in enumerate(sorted(count)):
        k = kernel[e] if known else None
        rows.append(
            Row(
                key=i,
                cells=(escape(e), klass[e], str(count[e]), human_bytes(size[e]), human_bytes(k)),
                sort=(e, klass[e], count[e], size[e], -1 if k is None else k),
                search=f"{escape(e)} {klass[e]}".lower(),
            )
        )
    return RowSet.build(EXPORTER_COLUMNS, rows)


def prepare(cur: Snapshot, prev: Snapshot | None) -> ViewData:
    """Index `cur`, diff it against `prev` (the snapshot on screen) and format every row."""
    t0 = time.perf_counter()
    cur_h = holdings(cur)
    diff = diff_snapshots(prev, cur, cur_holdings=cur_h)

    mixes: dict[int, Counter[str]] = {pid: Counter(b.exporter for b, _ in held.values()) for pid, held in cur_h.items()}
    proc_rows = [_process_row(p, mixes.get(p.pid, Counter()), diff.process(p.pid)) for p in cur.processes]
    if KERNEL_PID in cur_h:
        proc_rows.append(_kernel_row(cur_h[KERNEL_PID], diff.process(KERNEL_PID)))
    process_by_pid = {p.pid: p for p in cur.processes}
    for p in diff.gone_processes:
        if p.pid not in process_by_pid:
            mix = Counter(b.exporter for b, _ in diff.gone_holdings.get(p.pid, ()))
            proc_rows.append(_process_row(p, mix, Change.GONE))
            process_by_pid[p.pid] = p

    cells = {b.inode: _BufferCells.of(b) for b in cur.buffers}
    buffers_of: dict[int, RowSet] = {}
    changed = diff.holdings
    same = Change.SAME
    for pid in set(cur_h) | set(diff.gone_holdings):
        rows = [
            buffer_row(b, h, changed.get((pid, inode), same), cells[inode])
            for inode, (b, h) in cur_h.get(pid, {}).items()
        ]
        rows.extend(buffer_row(b, h, Change.GONE) for b, h in diff.gone_holdings.get(pid, ()))
        buffers_of[pid] = RowSet.build(BUFFER_COLUMNS, rows)

    buffer_by_inode = {b.inode: b for b in cur.buffers}
    for b in diff.gone_buffers:
        buffer_by_inode.setdefault(b.inode, b)

    return ViewData(
        snapshot=cur,
        diff=diff,
        processes=RowSet.build(PROCESS_COLUMNS, proc_rows),
        buffers_of=buffers_of,
        exporters=_exporter_rows(cur),
        buffer_by_inode=buffer_by_inode,
        process_by_pid=process_by_pid,
        exporter_mix=mixes,
        prepare_s=time.perf_counter() - t0,
    )


def arrange(rows: Sequence[Row], column: int, descending: bool, query: str) -> tuple[Row, ...]:
    """Filter by `query` (case-insensitive substring), then sort by one column.

    Ties keep ascending key order in both directions (Python's sort is stable under reverse).
    """
    q = query.strip().lower()
    picked = [r for r in rows if q in r.search] if q else list(rows)
    if descending:
        picked.sort(key=lambda r: r.key)
        picked.sort(key=lambda r: r.sort[column], reverse=True)
    else:
        picked.sort(key=lambda r: (r.sort[column], r.key))
    return tuple(picked)
