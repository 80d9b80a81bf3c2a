"""The TUI's headless half: diff, rows, prose and the export document, without a screen."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
from tui_fakes import PROCS, TAKEN_AT, MiB, Proc, buf, scene_after, scene_before, snapshot, synthetic

from dmabuf_inspect.model import Fence
from dmabuf_inspect.scan.diff import KERNEL_PID, UNSEEN_PID, Change, diff_snapshots
from dmabuf_inspect.scan.jsonout import load_schema
from dmabuf_inspect.scan.views import plural
from dmabuf_inspect.textsafe import escape as textsafe_escape
from dmabuf_inspect.tui.export import SCHEMA_ID, TableState, ViewState, export_document, write_export
from dmabuf_inspect.tui.table import Table
from dmabuf_inspect.tui.text import banner_lines, buffer_facts, fence_text, header_lines, heap_lines
from dmabuf_inspect.tui.viewdata import (
    BUFFERS,
    EXPORTERS,
    HOLDERS,
    PROCESSES,
    ProcessLine,
    RowSet,
    arrange,
    escape,
    holder_rows,
    prepare,
)


def test_first_snapshot_marks_nothing() -> None:
    d = diff_snapshots(None, scene_before())
    assert d.first and not d.buffers and not d.processes and not d.holdings


def test_diff_new_gone_grew() -> None:
    d = diff_snapshots(scene_before(), scene_after())
    assert d.buffer(1007) is Change.NEW
    assert d.buffer(1005) is Change.GONE
    assert d.buffer(1002) is Change.GREW  # one more fd in pid 300
    assert d.buffer(1001) is Change.SAME
    assert d.process(300) is Change.GREW
    assert d.process(400) is Change.GONE
    assert d.process(100) is Change.SAME
    assert d.holding(300, 1007) is Change.NEW
    assert d.holding(300, 1002) is Change.GREW
    assert d.holding(100, 1002) is Change.SAME  # pid 100's own hold did not change
    assert d.holding(400, 1005) is Change.GONE
    assert [b.inode for b in d.gone_buffers] == [1005]
    assert [b.inode for b, _ in d.gone_holdings[400]] == [1005]


def test_reused_pid_with_another_comm_is_a_new_process() -> None:
    a = snapshot([buf(1, MiB, holders=[(7, [3], 0)])], [Proc(7, "old")])
    b = snapshot([buf(1, MiB, holders=[(7, [3], 0)])], [Proc(7, "new")])
    d = diff_snapshots(a, b)
    assert d.process(7) is Change.NEW
    assert [p.comm for p in d.gone_processes] == ["old"]


def test_kernel_only_buffers_grow_as_a_pseudo_process() -> None:
    a = snapshot([buf(1, MiB, count=1)], [])
    b = snapshot([buf(1, MiB, count=1), buf(2, 2 * MiB, count=1)], [], taken_at=TAKEN_AT + 1)
    d = diff_snapshots(a, b)
    assert d.process(KERNEL_PID) is Change.GREW
    assert d.holding(KERNEL_PID, 2) is Change.NEW


def test_prepare_rows_match_the_snapshot() -> None:
    v = prepare(scene_before(), None)
    rows = {r.key: r for r in v.processes.rows}
    assert set(rows) == {100, 200, 300, 400, KERNEL_PID}
    gnome = rows[100]
    cells = dict(zip(PROCESSES.keys, gnome.cells, strict=True))
    assert cells == {
        "change": " ",
        "pid": "100",
        "comm": "gnome-shell",
        "user": "alice",
        "buffers": "3",
        "rss_bytes": "12.1 MiB",
        "pss_bytes": "6.1 MiB",
        "exporters": "drm:1 system:1 udmabuf:1",
        "cmdline": "/usr/bin/gnome-shell",
    }
    assert PROCESSES.value(gnome, "rss_bytes") == 12 * MiB + 64 * 1024
    assert PROCESSES.cell(rows[KERNEL_PID], "comm") == "[held only by the kernel]"
    by_inode = {r.key: r for r in v.buffers_of[100].rows}
    scanout = dict(zip(BUFFERS.keys, by_inode[1001].cells, strict=True))
    assert scanout == {
        "change": " ",
        "inode": "1001",
        "size_bytes": "8.0 MiB",
        "age": "-",  # prepared without a history
        "exporter": "drm",
        "class": "gpu-prime",
        "name": "scanout",
        "fds": "12,13",
        "maps": "1",
        "shared_with": "1",
    }
    assert [r.key for r in v.buffers_of[KERNEL_PID].rows] == [1006]
    exporters = {EXPORTERS.cell(r, "exporter"): r.cells for r in v.exporters.rows}
    assert exporters["drm"] == ("drm", "gpu-prime", "2", "9.0 MiB", "1.0 MiB")


def test_prepare_keeps_gone_rows_for_one_refresh() -> None:
    v = prepare(scene_after(), scene_before())
    proc = {r.key: r.change for r in v.processes.rows}
    assert proc[400] is Change.GONE and proc[300] is Change.GREW and proc[100] is Change.SAME
    assert {r.key: r.change for r in v.buffers_of[400].rows} == {1005: Change.GONE}
    assert {r.key: r.change for r in v.buffers_of[300].rows} == {
        1002: Change.GREW,
        1003: Change.SAME,
        1007: Change.NEW,
    }
    assert 1005 in v.buffer_by_inode  # a gone buffer can still be opened
    v2 = prepare(scene_after(), scene_after())
    assert 400 not in {r.key for r in v2.processes.rows}


def test_arrange_sorts_filters_and_breaks_ties_by_key() -> None:
    rows = prepare(scene_before(), None).processes.rows
    by_rss = arrange(PROCESSES, rows, "rss_bytes", True, "")
    assert [r.key for r in by_rss] == [100, 200, 300, 400, KERNEL_PID]  # 200 and 300 tie: by pid
    assert [r.key for r in arrange(PROCESSES, rows, "pid", False, "")] == [KERNEL_PID, 100, 200, 300, 400]
    assert [r.key for r in arrange(PROCESSES, rows, "rss_bytes", True, "GST")] == [300]
    assert [r.key for r in arrange(PROCESSES, rows, "rss_bytes", True, "i915")] == [400]  # the mix is searchable
    assert arrange(PROCESSES, rows, "rss_bytes", True, "no such thing") == ()
    with pytest.raises(KeyError):
        arrange(PROCESSES, rows, "no_such_column", True, "")


def test_column_widths_are_capped_and_count_wide_characters() -> None:
    rows = prepare(snapshot([buf(1, MiB, name="名前" * 3, holders=[(1, [3], 0)])], [Proc(1, "x" * 80, "y" * 80)]), None)
    assert rows.processes.widths[PROCESSES.index("comm")] == 26  # Command capped
    assert rows.processes.widths[PROCESSES.index("cmdline")] == 60  # Cmdline capped
    name_width = rows.buffers_of[1].widths[BUFFERS.index("name")]
    assert name_width == 12  # six double-width characters
    assert len(RowSet.build(BUFFERS, []).widths) == len(BUFFERS.columns)
    assert len(PROCESSES.columns) == len(rows.processes.rows[0].cells)


@pytest.mark.parametrize("text", ["abc", "a\\b", "\x1b[31mred", "é", "", None, "tab\there", "\udcff", "\u2028"])
def test_fast_escape_agrees_with_textsafe(text: str | None) -> None:
    assert escape(text) == textsafe_escape(text)


def test_hostile_names_are_escaped_in_every_row() -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07"
    v = prepare(
        snapshot(
            [buf(1, MiB, "sys\x1btem", name=evil, holders=[(9, [3], 0)])],
            [Proc(9, "c\x1bm", f"run {evil}", user="u\x07")],
        ),
        None,
    )
    cells = [c for r in (*v.processes.rows, *v.buffers_of[9].rows, *v.exporters.rows) for c in r.cells]
    assert not any(ch in c for c in cells for ch in "\x1b\x07")
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in cells
    holders = holder_rows(v, 1).rows
    assert HOLDERS.cell(holders[0], "comm") == "c\\x1bm"
    assert HOLDERS.cell(holders[0], "cmdline") == "run \\x1b[2J\\x1b]0;pwned\\x07"


def test_plural() -> None:
    assert [plural(1, "buffer"), plural(2, "buffer"), plural(1, "process"), plural(0, "process")] == [
        "1 buffer",
        "2 buffers",
        "1 process",
        "0 processes",
    ]


def test_header_banner_and_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    snap = scene_before()
    first, second = header_lines(snap, source="live", paused=False, interval_s=2, scanning=True)
    assert "6 buffers" in first and "19.1 MiB total" in first and "1.0 MiB kernel-only" in first
    # the refresh state first: a narrow terminal cuts the end of the line
    assert second == "every 2s · scanning… · updated 22:13:20 · 4 processes · kernel 6.12.107+deb13-amd64 · live"
    _, paused = header_lines(snap, source="live", paused=True, interval_s=2, scanning=False)
    assert paused.startswith("PAUSED · ")
    assert banner_lines(snap) == []
    partial = snapshot(scene_before().buffers, PROCS, bufinfo=False, denied=[1, 2])
    first, _ = header_lines(partial, source="live", paused=False, interval_s=2, scanning=False)
    assert "kernel-only unknown (no debugfs bufinfo)" in first
    text = "\n".join(banner_lines(partial))
    assert "2 processes could not be read (permission denied)" in text and "run as root" in text
    assert "run as root to see them (with debugfs mounted: mount -t debugfs none /sys/kernel/debug)" in text
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "mount debugfs to see them: mount -t debugfs none /sys/kernel/debug" in "\n".join(banner_lines(partial))
    facts = dict(buffer_facts(snap.buffers[0], Change.SAME, "3.1 GB/s", bufinfo_ok=True))
    assert facts["Kernel-held"] == "1" and facts["mmap cost"] == "3.1 GB/s"
    assert facts["References"] == "count 5: 3 fd + 1 mapping"
    assert heap_lines(snap) == [
        "system  /dev/dma_heap/system 253:0",
        "udmabuf  /dev/udmabuf",
        "  size_limit_mb 64 · list_limit 1024",
    ]


def test_fence_text_in_every_kernel_form() -> None:
    assert fence_text(Fence("write", "vgem", "unbound", "1", None, False)) == "write: vgem unbound seq 1 unsignalled"
    assert fence_text(Fence("exclusive", "i915", "ring", "", None, True)) == "exclusive: i915 ring signalled"
    assert fence_text(Fence("kernel", "", "", "12", "7", True)) == "kernel: ctx 7 seq 12 signalled"  # 7.3


def test_export_document_holds_the_view_and_the_snapshot(tmp_path: object) -> None:
    v = prepare(scene_after(), scene_before())
    procs = arrange(PROCESSES, v.processes.rows, "rss_bytes", True, "gst")
    bufs = arrange(BUFFERS, v.buffers_of[300].rows, "size_bytes", True, "")
    state = ViewState(
        screen="processes",
        processes=TableState(PROCESSES, "rss_bytes", True, "gst", procs),
        buffers=TableState(BUFFERS, "size_bytes", True, "", bufs),
        selected_pid=300,
    )
    doc = export_document(v, state)
    assert doc["schema"] == SCHEMA_ID
    assert doc["snapshot"]["schema"] == "dmabuf-inspect/1"
    view = doc["view"]
    assert view["processes"]["sort"] == "rss_bytes" and view["processes"]["filter"] == "gst"
    assert [r["pid"] for r in view["processes"]["rows"]] == [300]
    assert view["processes"]["rows"][0]["change"] == "grew"
    assert view["processes"]["rows"][0]["exporters"] == {"system": 3}
    rows = {r["inode"]: r for r in view["buffers"]["rows"]}
    assert rows[1007]["change"] == "new" and rows[1002]["fds"] == [20, 22] and rows[1002]["shared_with"] == 1
    path = write_export(str(tmp_path), doc, now=TAKEN_AT)
    again = write_export(str(tmp_path), doc, now=TAKEN_AT)
    assert path.endswith("dmabuf-inspect-view-20231114-221320.json") and again.endswith("-1.json")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(doc))
    jsonschema.validate(json.loads(json.dumps(doc["snapshot"])), load_schema())  # as the file holds it


def test_prepare_counts_every_holding() -> None:
    v = prepare(synthetic(2000, 50), None)
    assert sum(1 for _ in v.processes.rows) == 50
    assert sum(len(rs.rows) for rs in v.buffers_of.values()) >= 2000


def test_columns_are_declared_once_and_found_by_key() -> None:
    assert PROCESSES.keys[:2] == ("change", "pid") and PROCESSES.default_sort == "rss_bytes"
    assert PROCESSES.column("rss_bytes").label == "Rss" and PROCESSES.column("rss_bytes").descending_first
    with pytest.raises(KeyError):
        PROCESSES.index("rss")
    col = PROCESSES.columns[1]
    with pytest.raises(ValueError, match="two columns share a key"):
        Table("t", (col, col), default_sort="pid")
    with pytest.raises(ValueError, match="no column 'nope'"):
        Table("t", (col,), default_sort="nope")
    row = Table("t", (col,), default_sort="pid").row(7, PROCESSES_LINE, search="x")
    assert row.cells == ("7",) and row.sort == (7,)


PROCESSES_LINE = ProcessLine(7, "c", "u", 1, 2, 3, "", "", Change.SAME)


def test_buffers_no_process_was_seen_holding_are_not_the_kernels() -> None:
    unjoined = buf(2, 2 * MiB, count=1)._replace(holders_known=False)
    before = snapshot([buf(1, MiB, count=1)], [])
    after = snapshot([buf(1, MiB, count=1), unjoined], [], taken_at=TAKEN_AT + 1)
    d = diff_snapshots(before, after)
    assert d.process(UNSEEN_PID) is Change.NEW and d.process(KERNEL_PID) is Change.SAME
    v = prepare(after, before)
    assert {r.key for r in v.buffers_of[KERNEL_PID].rows} == {1}
    assert {r.key for r in v.buffers_of[UNSEEN_PID].rows} == {2}
    assert v.command_of(UNSEEN_PID) == "[holder unknown]" and v.command_of(KERNEL_PID) == "[held only by the kernel]"
