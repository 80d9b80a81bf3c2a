"""Rows for the TUI's tables, built off the UI thread from a snapshot and its diff.

`prepare()` runs in the collector's worker thread: it indexes the snapshot, diffs it against the
one on screen and formats every cell (escaped) once. The UI thread only filters, sorts and
shows. Each table is declared once below (`PROCESSES`, `BUFFERS`, `EXPORTERS`, `HOLDERS`): a
column is a header, a cell and a sort key, and everything else names it by key. The derived
views (per-exporter totals, exporter mix) come from `scan.views`, as the CLI's do. Nothing
here imports textual.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Protocol

from dmabuf_inspect.exporters import is_device_memory
from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.scan.cgroups import CgroupTotal, cgroup_totals
from dmabuf_inspect.scan.diff import KERNEL_PID, PSEUDO_PIDS, UNSEEN_PID, Change, SnapshotDiff, diff_snapshots, holdings
from dmabuf_inspect.scan.views import ExporterTotal, Mix, exporter_mix, exporter_totals, mix_of, mix_text
from dmabuf_inspect.textsafe import escape as _escape_slow
from dmabuf_inspect.tui.historyview import NO_AGE, HistoryFrame
from dmabuf_inspect.tui.table import EMPTY, Column, Row, RowSet, Table, arrange
from dmabuf_inspect.units import human_bytes

__all__ = [
    "BUFFERS",
    "CGROUPS",
    "EMPTY",
    "EXPORTERS",
    "HOLDERS",
    "NO_AGE",
    "PROCESSES",
    "PROCESSES_DEVICE",
    "Row",
    "RowSet",
    "ViewData",
    "arrange",
    "escape",
    "holder_rows",
    "prepare",
]


def escape(text: str | None, *, none: str = "-") -> str:
    """textsafe.escape, with a fast path for the common case: printable ASCII, no backslash."""
    if text is not None and text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return _escape_slow(text, none=none)


class _Marked(Protocol):
    @property
    def change(self) -> Change: ...


def _mark(item: _Marked) -> str:
    return item.change.mark


def _mark_order(item: _Marked) -> int:
    return item.change.order


def inode_text(inode: int) -> str:
    """An inode as shown; '?' for the stand-in key of a buffer whose inode no source printed."""
    return str(inode) if inode >= 0 else "?"


def fds_text(fds: Sequence[int]) -> str:
    return ",".join(map(str, fds)) if fds else "-"


# -- processes ---------------------------------------------------------------------------------


PSEUDO_COMMANDS = {
    KERNEL_PID: "[held only by the kernel]",
    UNSEEN_PID: "[holder unknown]",  # fds that could not be tied to a buffer may hold them
}


class ProcessLine(NamedTuple):
    """A row of the process table: a process, or a pseudo-process (PSEUDO_PIDS) of the buffers
    no process was seen holding."""

    pid: int
    comm: str  # escaped, as every text field here
    user: str
    buffers: int
    rss_bytes: int
    pss_bytes: int | None  # None for a pseudo-process
    mix: str  # the exporter mix, as text
    cmdline: str
    change: Change
    unjoined: int = 0  # dma-buf fds not tied to a buffer: buffers and bytes are lower bounds
    device_rss_bytes: int = 0  # of rss_bytes: device memory (class vfio), never RAM
    device_pss_bytes: int = 0


def _buffers_cell(p: ProcessLine) -> str:
    """'3', or '0+2?' when 2 more fds hold buffers nobody could name."""
    return f"{p.buffers}+{p.unjoined}?" if p.unjoined else str(p.buffers)


def _bytes_cell(n: int | None, unjoined: int) -> str:
    """A size; with fds not tied to a buffer, a lower bound ('≥4.0 MiB'), or '?' when nothing is known."""
    if not unjoined:
        return human_bytes(n)
    return "?" if not n else f"≥{human_bytes(n)}"


def _process_columns(*, device: bool) -> tuple[Column[ProcessLine], ...]:
    """The process table's columns; with DEVICE, Rss and Pss are RAM only (sorted so) and Dev
    the device memory (class vfio: a PCI BAR), as `list` shows them."""
    rss: Callable[[ProcessLine], int] = (
        (lambda p: p.rss_bytes - p.device_rss_bytes) if device else attrgetter("rss_bytes")
    )
    pss: Callable[[ProcessLine], int] = (
        (lambda p: (p.pss_bytes or 0) - p.device_pss_bytes) if device else (lambda p: p.pss_bytes or 0)
    )
    pss_cell: Callable[[ProcessLine], str] = (
        (lambda p: _bytes_cell(None if p.pss_bytes is None else pss(p), p.unjoined))
        if device
        else (lambda p: _bytes_cell(p.pss_bytes, p.unjoined))
    )
    dev = Column(
        "device_rss_bytes",
        "Dev",
        lambda p: _bytes_cell(p.device_rss_bytes, p.unjoined),
        attrgetter("device_rss_bytes"),
        "right",
        11,
        True,
    )
    return (
        Column("change", "", _mark, _mark_order, max_width=1),
        Column("pid", "PID", lambda p: str(p.pid) if p.pid >= 0 else "-", attrgetter("pid"), "right", 8),
        Column("comm", "Command", attrgetter("comm"), lambda p: p.comm.lower(), max_width=26),
        Column("user", "User", attrgetter("user"), attrgetter("user"), max_width=12),
        Column("buffers", "Bufs", _buffers_cell, attrgetter("buffers"), "right", 7, True),
        Column("rss_bytes", "Rss", lambda p: _bytes_cell(rss(p), p.unjoined), rss, "right", 11, True),
        Column("pss_bytes", "Pss", pss_cell, pss, "right", 11, True),
        *((dev,) if device else ()),
        Column("exporters", "Exporters", attrgetter("mix"), attrgetter("mix"), max_width=32),
        Column("cmdline", "Cmdline", attrgetter("cmdline"), attrgetter("cmdline"), max_width=60),
    )


PROCESSES: Table[ProcessLine] = Table("processes", _process_columns(device=False), default_sort="rss_bytes")
# When some buffers are device memory (issue 16): Rss and Pss of RAM, and Dev apart.
PROCESSES_DEVICE: Table[ProcessLine] = Table("processes", _process_columns(device=True), default_sort="rss_bytes")


def cmdline_text(p: Process) -> str:
    """The escaped command line; kernel threads have none and show [comm], as ps does."""
    return escape(p.cmdline) if p.cmdline else f"[{escape(p.comm)}]"


def _process_row(p: Process, mix: Mix, change: Change, table: Table[ProcessLine] = PROCESSES) -> Row:
    comm = escape(p.comm)
    user = escape(p.user)
    cmdline = cmdline_text(p)
    mix_s = mix_text(mix)
    n = len(p.unjoined_fds)
    line = ProcessLine(
        p.pid,
        comm,
        user,
        p.buffers,
        p.rss_bytes,
        p.pss_bytes,
        mix_s,
        cmdline,
        change,
        n,
        p.device_rss_bytes,
        p.device_pss_bytes,
    )
    return table.row(p.pid, line, change, f"{p.pid} {comm} {user} {mix_s} {cmdline}".lower())


def _pseudo_row(
    pid: int,
    held: Mapping[int, tuple[Buffer, Holder | None]],
    mix: Mix,
    change: Change,
    table: Table[ProcessLine] = PROCESSES,
) -> Row:
    command = PSEUDO_COMMANDS[pid]
    mix_s = mix_text(mix)
    size = sum(b.size_bytes for b, _ in held.values())
    device = (
        sum(b.size_bytes for b, _ in held.values() if is_device_memory(b.exporter)) if table is not PROCESSES else 0
    )
    line = ProcessLine(pid, command, "-", len(held), size, None, mix_s, "", change, 0, device)
    return table.row(pid, line, change, f"{command} {mix_s}".lower())


# -- buffers (of one process) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BufferCells:
    """The cells of a buffer that do not depend on the holder, formatted once per buffer."""

    inode: str
    size: str
    exporter: str
    name: str
    search: str
    age: str = NO_AGE[0]  # since first seen this session ('≥' when already there at its start)
    age_s: int = NO_AGE[1]

    @classmethod
    def of(cls, b: Buffer, age: tuple[str, int] = NO_AGE) -> _BufferCells:
        name = escape(b.name)
        exporter = escape(b.exporter)
        inode = inode_text(b.inode)
        return cls(
            inode,
            human_bytes(b.size_bytes),
            exporter,
            name,
            f"{inode} {exporter} {b.exporter_class} {name}".lower(),
            age[0],
            age[1],
        )


class BufferLine(NamedTuple):
    """A buffer as one process holds it (holder None: no process does)."""

    buffer: Buffer
    holder: Holder | None
    change: Change
    text: _BufferCells


def _shared(x: BufferLine) -> int:
    return len(x.buffer.holders) - 1 if x.holder is not None else 0


BUFFERS: Table[BufferLine] = Table(
    "buffers",
    (
        Column("change", "", _mark, _mark_order, max_width=1),
        Column("inode", "Inode", lambda x: x.text.inode, lambda x: x.buffer.inode, "right", 10),
        Column("size_bytes", "Size", lambda x: x.text.size, lambda x: x.buffer.size_bytes, "right", 11, True),
        Column("age", "Age", lambda x: x.text.age, lambda x: x.text.age_s, "right", 8, True),
        Column("exporter", "Exporter", lambda x: x.text.exporter, lambda x: x.text.exporter, max_width=16),
        Column("class", "Class", lambda x: x.buffer.exporter_class, lambda x: x.buffer.exporter_class, max_width=10),
        Column("name", "Name", lambda x: x.text.name, lambda x: x.text.name, max_width=32),
        Column(
            "fds",
            "Fds",
            lambda x: fds_text(x.holder.fds) if x.holder is not None else "-",
            lambda x: len(x.holder.fds) if x.holder is not None else 0,
            max_width=16,
        ),
        Column(
            "maps",
            "Maps",
            lambda x: str(x.holder.maps if x.holder is not None else 0),
            lambda x: x.holder.maps if x.holder is not None else 0,
            "right",
            5,
            True,
        ),
        Column("shared_with", "Shared", lambda x: str(_shared(x)), _shared, "right", 6, True),
    ),
    default_sort="size_bytes",
)


def buffer_row(b: Buffer, h: Holder | None, change: Change, cells: _BufferCells | None = None) -> Row:
    """A buffer as one process (h) holds it; h None: held by no process."""
    c = cells if cells is not None else _BufferCells.of(b)
    return BUFFERS.row(b.inode, BufferLine(b, h, change, c), change, c.search)


# -- exporters ---------------------------------------------------------------------------------


def _kernel_only_text(t: ExporterTotal) -> str:
    return "?" if t.kernel_only_bytes is None else human_bytes(t.kernel_only_bytes)


EXPORTERS: Table[ExporterTotal] = Table(
    "exporters",
    (
        Column("exporter", "Exporter", lambda t: escape(t.exporter), lambda t: escape(t.exporter), max_width=14),
        Column("class", "Class", attrgetter("exporter_class"), attrgetter("exporter_class"), max_width=10),
        Column("buffers", "Bufs", lambda t: str(t.buffers), attrgetter("buffers"), "right", 6, True),
        Column("bytes", "Bytes", lambda t: human_bytes(t.bytes), attrgetter("bytes"), "right", 11, True),
        Column(
            "kernel_only_bytes",
            "Kernel",
            _kernel_only_text,
            lambda t: -1 if t.kernel_only_bytes is None else t.kernel_only_bytes,
            "right",
            11,
            True,
        ),
    ),
    default_sort="bytes",
)


def _exporter_rows(snap: Snapshot) -> RowSet:
    """scan.views.exporter_totals, in its order (largest first, ties by name): the row keys keep
    that order for ties under any sort."""
    rows = (
        EXPORTERS.row(i, t, search=f"{escape(t.exporter)} {t.exporter_class}".lower())
        for i, t in enumerate(exporter_totals(snap))
    )
    return RowSet.build(EXPORTERS, rows)


# -- cgroups ------------------------------------------------------------------------------------

UNKNOWN_CGROUP = "(unknown)"


def _cgroup_path(t: CgroupTotal) -> str:
    return UNKNOWN_CGROUP if t.path is None else escape(t.path)


def _shared_text(t: CgroupTotal) -> str:
    return "-" if not t.shared_buffers else f"{human_bytes(t.shared_bytes)} in {t.shared_buffers}"


CGROUPS: Table[CgroupTotal] = Table(
    "cgroups",
    (
        Column("unit", "Unit", lambda t: escape(t.unit), lambda t: escape(t.unit), max_width=32),
        Column("processes", "Procs", lambda t: str(t.processes), attrgetter("processes"), "right", 6, True),
        Column("buffers", "Bufs", lambda t: str(t.buffers), attrgetter("buffers"), "right", 6, True),
        Column("bytes", "Bytes", lambda t: human_bytes(t.bytes), attrgetter("bytes"), "right", 11, True),
        Column("pss_bytes", "Pss", lambda t: human_bytes(t.pss_bytes), attrgetter("pss_bytes"), "right", 11, True),
        Column("shared_bytes", "Shared", _shared_text, attrgetter("shared_bytes"), "right", 16, True),
        Column("path", "Cgroup", _cgroup_path, _cgroup_path, max_width=120),
    ),
    default_sort="bytes",
)


def cgroup_rows(snap: Snapshot) -> tuple[RowSet, tuple[CgroupTotal, ...]]:
    """scan.cgroups.cgroup_totals of the processes' own cgroups (Process.cgroup), in its order
    (largest first, then by path): the row keys keep that order for ties under any sort. Empty
    when the scan did not read cgroups."""
    if "cgroup" not in snap.sources:
        return EMPTY, ()
    totals = tuple(cgroup_totals(snap, {p.pid: p.cgroup for p in snap.processes}))
    rows = (CGROUPS.row(i, t, search=f"{escape(t.unit)} {_cgroup_path(t)}".lower()) for i, t in enumerate(totals))
    return RowSet.build(CGROUPS, rows), totals


# -- holders (of one buffer) -------------------------------------------------------------------


class HolderLine(NamedTuple):
    holder: Holder
    change: Change
    comm: str  # escaped
    user: str
    cmdline: str


HOLDERS: Table[HolderLine] = Table(
    "holders",
    (
        Column("change", "", _mark, _mark_order, max_width=1),
        Column("pid", "PID", lambda x: str(x.holder.pid), lambda x: x.holder.pid, "right", 8),
        Column("comm", "Command", attrgetter("comm"), lambda x: x.comm.lower(), max_width=26),
        Column("user", "User", attrgetter("user"), attrgetter("user"), max_width=12),
        Column("fds", "Fds", lambda x: fds_text(x.holder.fds), lambda x: len(x.holder.fds), max_width=24),
        Column("maps", "Maps", lambda x: str(x.holder.maps), lambda x: x.holder.maps, "right", 5, True),
        Column(
            "mapped_bytes",
            "Mapped",
            lambda x: human_bytes(x.holder.mapped_bytes),
            lambda x: x.holder.mapped_bytes,
            "right",
            11,
            True,
        ),
        Column("cmdline", "Cmdline", attrgetter("cmdline"), attrgetter("cmdline"), max_width=60),
    ),
    default_sort="pid",
)


# -- the view ----------------------------------------------------------------------------------


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
    exporter_mix: Mapping[int, Mix] = field(default_factory=dict)  # pid -> mix, gone processes included
    prepare_s: float = 0.0  # seconds prepare() took, in the worker
    history: HistoryFrame | None = None  # the session so far; None when prepared without one
    processes_table: Table[ProcessLine] = PROCESSES  # PROCESSES_DEVICE when some buffers are device memory
    cgroups: RowSet = EMPTY  # per-cgroup totals (row key: index into cgroup_totals); empty: not read
    cgroup_totals: tuple[CgroupTotal, ...] = ()  # the same, as scan.cgroups made them

    def command_of(self, pid: int) -> str:
        """The escaped comm of a process (as top shows it), or the name of a pseudo-process."""
        if pid in PSEUDO_COMMANDS:
            return PSEUDO_COMMANDS[pid]
        p = self.process_by_pid.get(pid)
        return "?" if p is None else escape(p.comm)

    def cmdline_of(self, pid: int) -> str:
        p = self.process_by_pid.get(pid)
        return "" if p is None else cmdline_text(p)

    def user_of(self, pid: int) -> str:
        p = self.process_by_pid.get(pid)
        return "-" if p is None else escape(p.user)


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
        if ino == inode and change is Change.GONE and pid not in seen and pid not in PSEUDO_PIDS:
            old = next((h for ob, h in view.diff.gone_holdings.get(pid, ()) if ob.inode == inode), None)
            if old is not None:
                rows.append(_holder_row(view, old, Change.GONE))
    return RowSet.build(HOLDERS, rows)


def _holder_row(view: ViewData, h: Holder, change: Change) -> Row:
    line = HolderLine(h, change, view.command_of(h.pid), view.user_of(h.pid), view.cmdline_of(h.pid))
    return HOLDERS.row(h.pid, line, change, f"{h.pid} {line.comm} {line.user} {line.cmdline}".lower())


def prepare(cur: Snapshot, prev: Snapshot | None, history: HistoryFrame | None = None) -> ViewData:
    """Index `cur`, diff it against `prev` (the snapshot on screen) and format every row; HISTORY
    (the session's frame, made after `cur` was added to it) gives the buffers their age.

    It makes a few tuples per holding and no reference cycle, so the cyclic collector is paused
    meanwhile, as `snapshot.collect` does (with it, a tenth to a fifth of the time went to it).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        return _prepare(cur, prev, history)
    finally:
        if was:
            gc.enable()


def _prepare(cur: Snapshot, prev: Snapshot | None, history: HistoryFrame | None) -> ViewData:
    t0 = time.perf_counter()
    cur_h = holdings(cur)
    diff = diff_snapshots(prev, cur, cur_holdings=cur_h)

    mixes: dict[int, Mix] = exporter_mix(cur)
    table = PROCESSES_DEVICE if cur.totals.device_bytes else PROCESSES
    proc_rows = [_process_row(p, mixes.get(p.pid, ()), diff.process(p.pid), table) for p in cur.processes]
    for pseudo in PSEUDO_PIDS:
        held = cur_h.get(pseudo)
        if held is not None:
            mixes[pseudo] = mix_of(b for b, _ in held.values())
            proc_rows.append(_pseudo_row(pseudo, held, mixes[pseudo], diff.process(pseudo), table))
    process_by_pid = {p.pid: p for p in cur.processes}
    for p in diff.gone_processes:
        if p.pid not in process_by_pid:
            mix = mix_of(b for b, _ in diff.gone_holdings.get(p.pid, ()))
            mixes[p.pid] = mix
            proc_rows.append(_process_row(p, mix, Change.GONE, table))
            process_by_pid[p.pid] = p

    # first seen -> (cell, seconds), one entry per refresh that saw buffers first; None: unknown
    ages: dict[float | None, tuple[str, int]] = {None: NO_AGE}
    seen: Mapping[int, float] = {}
    gone_seen: Mapping[int, float] = {}
    if history is not None and history.live:
        seen, gone_seen = history.first_seen, history.gone_first_seen
        ages = history.age_cells(chain(seen.values(), gone_seen.values()), cur.taken_at)
    cells = {b.inode: _BufferCells.of(b, ages[seen.get(b.inode)]) for b in cur.buffers}
    buffers_of: dict[int, RowSet] = {}
    changed = diff.holdings
    same = Change.SAME
    for pid in set(cur_h) | set(diff.gone_holdings):
        rows = [
            buffer_row(b, h, changed.get((pid, inode), same), cells[inode])
            for inode, (b, h) in cur_h.get(pid, {}).items()
        ]
        rows.extend(
            buffer_row(b, h, Change.GONE, _BufferCells.of(b, ages[seen.get(b.inode, gone_seen.get(b.inode))]))
            for b, h in diff.gone_holdings.get(pid, ())
        )
        buffers_of[pid] = RowSet.build(BUFFERS, rows)

    cgroups, cgroup_list = cgroup_rows(cur)
    buffer_by_inode = {b.inode: b for b in cur.buffers}
    for b in diff.gone_buffers:
        buffer_by_inode.setdefault(b.inode, b)

    return ViewData(
        snapshot=cur,
        diff=diff,
        processes=RowSet.build(table, proc_rows),
        processes_table=table,
        buffers_of=buffers_of,
        exporters=_exporter_rows(cur),
        buffer_by_inode=buffer_by_inode,
        process_by_pid=process_by_pid,
        exporter_mix=mixes,
        prepare_s=time.perf_counter() - t0,
        history=history,
        cgroups=cgroups,
        cgroup_totals=cgroup_list,
    )
