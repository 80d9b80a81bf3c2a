"""The `e` key: the current view as JSON, with the whole snapshot beside it.

The document is built and written in a worker thread from immutable inputs (the ViewData and
the rows each table shows), so the UI never waits for it. Schema `dmabuf-inspect-view/1`:
`view` holds what was on screen (sort, filter, rows in screen order, changes since the last
refresh; on the buffer screen, `buffer.mmap_cost`, the cost set for that buffer, or else
`buffer.mmap_cost_bench`, the cached `dmabuf-inspect bench` medians of its exporter that the
screen shows, and its history: `buffer.first_seen` (Unix time, null when unknown),
`buffer.creator` ({pid, start_ticks, comm, time} from the trace, or null) and `buffer.tracing`
("ok" or "unavailable: why"); on the process screen, `process` and its `buffers`; on the cgroup
panel, `cgroups`: its rows as the JSON's `cgroups` entries, and `source`, the scan's "cgroup"
source); `snapshot` is the
`dmabuf-inspect/1` document of `jsonout`. Columns are named by their keys (`sort: "rss_bytes"`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dmabuf_inspect.bench.cache import BenchCache, ExporterCost
from dmabuf_inspect.exporters import is_device_memory
from dmabuf_inspect.model import Buffer, Holder
from dmabuf_inspect.scan.cgroups import cgroup_entry
from dmabuf_inspect.scan.diff import KERNEL_PID, PSEUDO_PIDS, UNSEEN_PID, Change
from dmabuf_inspect.scan.jsonout import buffer_to_dict, process_to_dict, snapshot_to_dict
from dmabuf_inspect.textsafe import json_name
from dmabuf_inspect.tui.table import Row, Table
from dmabuf_inspect.tui.viewdata import PROCESSES, ViewData

SCHEMA_ID = "dmabuf-inspect-view/1"


@dataclass(frozen=True, slots=True)
class TableState:
    """One table as the user sees it."""

    table: Table[Any]
    sort: str  # the key of the column sorted by
    descending: bool
    filter: str
    rows: tuple[Row, ...]  # filtered and sorted, as on screen

    def header(self) -> dict[str, Any]:
        return {
            "sort": self.sort,
            "descending": self.descending,
            "filter": self.filter,
        }


@dataclass(frozen=True, slots=True)
class ViewState:
    screen: str  # "processes", "buffer", "process" or "cgroups"
    processes: TableState | None = None
    buffers: TableState | None = None
    selected_pid: int | None = None
    inode: int | None = None  # the buffer screen's buffer
    holders: TableState | None = None
    cgroups: TableState | None = None  # the cgroup panel


def _holder_of(view: ViewData, pid: int, inode: int) -> Holder | None:
    b = view.buffer_by_inode.get(inode)
    if b is not None and view.diff.holding(pid, inode) is not Change.GONE:
        for h in b.holders:
            if h.pid == pid:
                return h
    for ob, old in view.diff.gone_holdings.get(pid, ()):
        if ob.inode == inode:
            return old
    return None


def _pseudo_rss(table: TableState, row: Row) -> int:
    """All the bytes of a pseudo-process's row: with device memory apart (PROCESSES_DEVICE), its
    Rss column is RAM only."""
    t = table.table
    dev = int(t.value(row, "device_rss_bytes")) if "device_rss_bytes" in t.keys else 0
    return int(t.value(row, "rss_bytes")) + dev


def _process_rows(view: ViewData, table: TableState) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in table.rows:
        mix = view.exporter_mix.get(row.key, ())
        if row.key in PSEUDO_PIDS:
            entry: dict[str, Any] = {
                "pid": None,
                "comm": view.command_of(row.key),
                "buffers": PROCESSES.value(row, "buffers"),
                "rss_bytes": _pseudo_rss(table, row),
            }
        else:
            p = view.process_by_pid.get(row.key)
            if p is None:
                continue
            entry = process_to_dict(p)
        entry["exporters"] = {json_name(e)[0]: n for e, n in sorted(mix)}
        entry["change"] = row.change.value
        out.append(entry)
    return out


def _buffer_rows(view: ViewData, table: TableState, pid: int | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in table.rows:
        b = view.buffer_by_inode.get(row.key)
        if b is None:
            continue
        h = _holder_of(view, pid, b.inode) if pid is not None else None
        text, raw_hex = json_name(b.name)
        entry: dict[str, Any] = {
            "inode": b.inode,
            "size_bytes": b.size_bytes,
            "exporter": b.exporter,
            "class": b.exporter_class,
            "name": text,
            "fds": list(h.fds) if h is not None else [],
            "maps": h.maps if h is not None else 0,
            "mapped_bytes": h.mapped_bytes if h is not None else 0,
            "shared_with": max(len(b.holders) - 1, 0) if h is not None else 0,
            "change": row.change.value,
        }
        if raw_hex is not None:
            entry["name_hex"] = raw_hex
        out.append(entry)
    return out


def mmap_cost_of(
    b: Buffer, costs: Mapping[int, str], bench: BenchCache | None
) -> tuple[str | None, ExporterCost | None]:
    """What touching B from the CPU costs, as the detail screen shows it: the cost set for this
    buffer (COSTS), else the cached bench medians of its exporter; neither for device memory,
    which `bench` refuses."""
    if is_device_memory(b.exporter):
        return None, None
    cost = costs.get(b.inode)
    return cost, bench.cost(b.exporter, b.size_bytes) if cost is None and bench is not None else None


def _buffer_detail(
    view: ViewData, inode: int, costs: Mapping[int, str], bench: BenchCache | None
) -> dict[str, Any] | None:
    b: Buffer | None = view.buffer_by_inode.get(inode)
    if b is None:
        return None
    doc = buffer_to_dict(b)
    doc["change"] = view.diff.buffer(inode).value
    doc["mmap_cost"], measured = mmap_cost_of(b, costs, bench)
    doc["mmap_cost_bench"] = None if measured is None else asdict(measured)
    history = view.history
    if history is not None:
        c = history.creator_of(inode)
        doc["first_seen"] = history.seen_at(inode)
        doc["creator"] = (
            None
            if c is None
            else {"pid": c.pid, "start_ticks": c.start_ticks, "comm": json_name(c.comm)[0], "time": c.time}
        )
        doc["tracing"] = history.tracing
    return doc


def export_document(
    view: ViewData, state: ViewState, costs: Mapping[int, str] | None = None, bench: BenchCache | None = None
) -> dict[str, Any]:
    """The JSON document of what is on screen; BENCH: the cached `dmabuf-inspect bench` results."""
    doc: dict[str, Any] = {"screen": state.screen, "first_scan": view.diff.first}
    if state.processes is not None:
        doc["processes"] = {**state.processes.header(), "rows": _process_rows(view, state.processes)}
    if state.buffers is not None:
        doc["buffers"] = {
            "pid": None if state.selected_pid in PSEUDO_PIDS else state.selected_pid,
            "kernel_only": state.selected_pid == KERNEL_PID,  # the buffers only the kernel holds
            "holder_unknown": state.selected_pid == UNSEEN_PID,  # no process seen, one may hold them unseen
            **state.buffers.header(),
            "rows": _buffer_rows(view, state.buffers, state.selected_pid),
        }
    if state.screen == "process" and state.selected_pid is not None:
        p = view.process_by_pid.get(state.selected_pid)
        doc["process"] = None if p is None else {**process_to_dict(p), "change": view.diff.process(p.pid).value}
    if state.cgroups is not None:
        doc["cgroups"] = {
            "source": view.snapshot.sources.get("cgroup"),
            **state.cgroups.header(),
            "rows": [cgroup_entry(view.cgroup_totals[r.key]) for r in state.cgroups.rows],
        }
    if state.inode is not None:
        doc["buffer"] = _buffer_detail(view, state.inode, costs or {}, bench)
        if state.holders is not None:
            doc["holders"] = {
                **state.holders.header(),
                "rows": [{"pid": r.key, "change": r.change.value} for r in state.holders.rows],
            }
    return {
        "schema": SCHEMA_ID,
        "exported_at": time.time(),
        "view": doc,
        "snapshot": snapshot_to_dict(view.snapshot),
    }


def write_export(directory: str, document: dict[str, Any], *, now: float | None = None) -> str:
    """Write `document` to a new file in `directory`; returns its path. Never overwrites."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    base = os.path.join(directory, f"dmabuf-inspect-view-{stamp}")
    text = json.dumps(document, indent=2)
    for n in range(1000):
        path = f"{base}.json" if n == 0 else f"{base}-{n}.json"
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
                f.write("\n")
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{base}.json and 999 more exist")
