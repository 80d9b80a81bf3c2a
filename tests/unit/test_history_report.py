"""history/report.py and creators.py: `growing`, the report document (schema-checked), creators
matched from trace events, kernel-only buffers, filters; charts and watch lines."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import jsonschema
import pytest
from history_fakes import snapshot

from dmabuf_inspect import schemas
from dmabuf_inspect.history import chart, store
from dmabuf_inspect.history.creators import CreatorLog
from dmabuf_inspect.history.recorder import write_sample
from dmabuf_inspect.history.report import build_report, expand_steps, is_growing
from dmabuf_inspect.history.tracker import ChangeTracker, SampleRow
from dmabuf_inspect.history.watch import WatchSample, format_line, top_growers
from dmabuf_inspect.kernel.tracefs import Task, TraceEvent
from dmabuf_inspect.model import Snapshot

KiB = 1024
LEAKER, STEADY, KONLY = (300, 9000, "leaker"), (200, 8000, "steady"), (400, 9500, "konly")


@pytest.mark.parametrize(
    ("values", "growing"),
    [
        ([64, 128, 192, 256, 320, 384], True),
        ([10] * 10, False),
        ([10, 20, 30, 40, 40, 40, 40, 40, 40, 40], False),  # grew at start-up, then steady
        ([10, 20, 10, 20, 10, 20, 10, 20], False),  # churn
        ([10, 20, 30], False),  # too few samples to say
        ([100, 90, 80, 70], False),
        ([10, 30, 20, 40, 30, 50, 40, 60, 50, 70], True),  # a sawtooth that keeps rising
    ],
)
def test_is_growing(values: list[int], growing: bool) -> None:
    assert is_growing(values) is growing


def test_expand_steps() -> None:
    assert expand_steps([(2, 5), (4, 7)], 2, 6) == [5, 5, 7, 7, 7]
    assert expand_steps([(1, 5)], 1, 1) == [5]


def ev(event: str, inode: int, ts: float, tid: int, comm: str, size: int = 64 * KiB, **kw: Any) -> TraceEvent:
    return TraceEvent(event, tid, tid, comm, 0, ts, "system", size, inode, **kw)


def record_with_trace(path: str, steps: list[tuple[Snapshot, list[TraceEvent]]], tracing: str = "ok") -> None:
    """What the recorder does per sample, with events given instead of read: each sample's
    scan runs from t to t+0.1 (trace clock = Unix time here), its events read before."""
    conn = store.create(path)
    with store.transaction(conn):
        store.set_meta(conn, {"started": steps[0][0].taken_at, "interval_s": 1.0, "tracing": tracing})
    tracker, log = ChangeTracker(), CreatorLog(wall_offset_s=0.0)
    tasks = {LEAKER[0]: Task(*LEAKER), STEADY[0]: Task(*STEADY), KONLY[0]: Task(*KONLY)}
    for i, (snap, events) in enumerate(steps, start=1):
        log.add(events, lambda tid, tgid: tasks.get(tid, Task(tid, None, None)))
        ch = tracker.update(snap, i)
        settled = log.settle(snap.taken_at - 0.1, snap.taken_at, ch, tracker) if tracing == "ok" else None
        t = snap.totals
        ko_n = sum(1 for b in snap.buffers if not b.holders)
        row = SampleRow(
            i,
            snap.taken_at,
            0.1,
            t.buffers,
            t.bytes,
            t.buffers - ko_n,
            t.userspace_bytes,
            ko_n,
            t.kernel_only_bytes,
            log.events_read,
            0,
        )
        write_sample(conn, row, ch, settled)
    with store.transaction(conn):
        store.set_meta(
            conn,
            {
                "ended": steps[-1][0].taken_at,
                "lost_events": 0 if tracing == "ok" else None,
                "kernel": "7.3.0-test",
                "stopped_by": "duration",
            },
        )
    store.finish(conn)


def leak_scenario() -> list[tuple[Snapshot, list[TraceEvent]]]:
    """steady holds 10 buffers all along; leaker adds one per sample from sample 2; konly makes
    one buffer at sample 3 and closes its fd (kernel-only); a short-lived export at sample 4."""
    sizes = {i: 64 * KiB for i in range(1, 100)}
    steps = []
    leaked: list[int] = []
    konly: list[int] = []
    for s in range(1, 11):
        t = 1000.0 + s
        events = []
        if s >= 2:
            inode = 50 + s
            leaked.append(inode)
            events.append(ev("dma_buf_export", inode, t - 0.5, LEAKER[0], "leaker"))
            events.append(ev("dma_buf_fd", inode, t - 0.5, LEAKER[0], "leaker", fd=3 + s))
        if s == 3:
            konly = [90]
            events.append(ev("dma_buf_export", 90, t - 0.4, KONLY[0], "konly"))
            events.append(
                ev("dma_buf_dynamic_attach", 90, t - 0.3, KONLY[0], "konly", dev_name="vgem", is_dynamic=False)
            )
        if s == 4:
            events.append(ev("dma_buf_export", 95, t - 0.6, LEAKER[0], "leaker", size=4096))
        held = {STEADY: range(1, 11), LEAKER: list(leaked)} if leaked else {STEADY: range(1, 11)}
        steps.append((snapshot(held, sizes, taken_at=t, kernel_only=konly), events))
    return steps


@pytest.fixture
def leak_db(tmp_path: Any) -> str:
    path = str(tmp_path / "leak.db")
    record_with_trace(path, leak_scenario())
    return path


def report_of(path: str, **kw: Any) -> dict[str, Any]:
    doc = build_report(store.open_read(path), **kw)
    jsonschema.Draft202012Validator(schemas.load(schemas.REPORT)).validate(json.loads(json.dumps(doc)))
    return doc


def test_report_growth_and_creators(leak_db: str) -> None:
    doc = report_of(leak_db)
    procs = {p["comm"]: p for p in doc["processes"]}
    assert procs["leaker"]["growing"] is True
    assert procs["leaker"]["growth_bytes"] == 8 * 64 * KiB and procs["leaker"]["last_buffers"] == 9
    assert procs["steady"]["growing"] is False and procs["steady"]["growth_bytes"] == 0
    assert doc["processes"][0]["comm"] == "leaker"  # growing first
    leaked = [b for b in doc["buffers"] if LEAKER[0] in b["holders_at_end"]]
    assert len(leaked) == 9
    assert all(b["creator"]["pid"] == LEAKER[0] and b["creator"]["comm"] == "leaker" for b in leaked)
    assert all(b["creator"]["start_ticks"] == LEAKER[1] for b in leaked)
    (ko,) = [b for b in doc["buffers"] if b["kernel_only_at_end"]]
    assert ko["inode"] == 90 and ko["creator"]["pid"] == KONLY[0] and ko["creator"]["comm"] == "konly"
    assert not any(b["inode"] <= 10 for b in doc["buffers"])  # steady's were there from the start
    groups = {(g["creator"]["comm"] if g["creator"] else None, g["exporter"]): g for g in doc["new_alive_by_creator"]}
    assert groups[("leaker", "system")]["buffers"] == 9 and groups[("leaker", "system")]["holders_at_end"] == [300]
    assert groups[("konly", "system")]["kernel_only"] == 1
    assert doc["short_lived"] == [{"pid": 300, "start_ticks": 9000, "comm": "leaker", "exports": 1, "bytes": 4096}]
    assert doc["tracing"] == "ok" and doc["lost_events"] == 0 and doc["samples"] == 10
    assert [t["kernel_only_bytes"] for t in doc["totals"]][:3] == [0, 0, 64 * KiB]


def test_trace_events_kept_for_seen_buffers(leak_db: str) -> None:
    conn = sqlite3.connect(leak_db)
    rows = conn.execute("SELECT event, inode, pid, dev_name FROM trace_events").fetchall()
    assert rows == [("dma_buf_dynamic_attach", 90, KONLY[0], "vgem")]  # the creator's own fds are left out


def test_report_without_trace(tmp_path: Any) -> None:
    path = str(tmp_path / "nt.db")
    record_with_trace(path, leak_scenario(), tracing="unavailable: no dma_buf tracepoints")
    doc = report_of(path)
    assert doc["lost_events"] is None and doc["tracing"].startswith("unavailable:")
    assert all(b["creator"] is None for b in doc["buffers"])
    assert {p["comm"]: p["growing"] for p in doc["processes"]} == {"leaker": True, "steady": False}


def test_report_filters(leak_db: str) -> None:
    doc = report_of(leak_db, pids={STEADY[0]})
    assert [p["comm"] for p in doc["processes"]] == ["steady"]
    assert doc["buffers"] == []
    doc = report_of(leak_db, comms={"konly"})
    assert [b["inode"] for b in doc["buffers"]] == [90]
    doc = report_of(leak_db, all_buffers=True)
    assert len(doc["buffers"]) == 10 + 9 + 1


def test_a_reexported_inode_is_a_new_buffer(tmp_path: Any) -> None:
    """inode 7 freed and exported again between two samples, same size: only the trace tells."""
    sizes = {7: 4096}
    a = snapshot({LEAKER: [7]}, sizes, taken_at=1001.0)
    b = snapshot({LEAKER: [7]}, sizes, taken_at=1002.0)
    c = snapshot({LEAKER: [7]}, sizes, taken_at=1003.0)
    path = str(tmp_path / "re.db")
    record_with_trace(path, [(a, []), (b, [ev("dma_buf_export", 7, 1001.5, LEAKER[0], "leaker", size=4096)]), (c, [])])
    rows = sqlite3.connect(path).execute("SELECT first_sample, last_sample, creator_id FROM buffers ORDER BY id")
    assert rows.fetchall() == [(1, 2, None), (3, None, 1)]


def test_watch_lines() -> None:
    sizes = {1: 4096, 2: 8192, 3: 65536}
    a = WatchSample.of(snapshot({(5, 1, "app"): [1]}, sizes, taken_at=0.0))
    b = WatchSample.of(snapshot({(5, 1, "app"): [1, 2], (6, 2, "b\x1bx"): [3]}, sizes, taken_at=1.0, kernel_only=[]))
    assert top_growers(a, b) == [("b\x1bx", 6, 65536), ("app", 5, 8192)]
    line = format_line(a, b)
    assert "+72.0 KiB" in line and "b\\x1bx[6] +64.0 KiB" in line and "\x1b" not in line
    reused = WatchSample.of(snapshot({(5, 99, "app"): [1]}, sizes, taken_at=2.0))
    assert top_growers(a, reused) == [("app", 5, 4096)]  # a new process under pid 5 starts from 0
    c = WatchSample.of(snapshot({(5, 1, "app"): [1]}, sizes, taken_at=2.0, kernel_only=[3]))
    start = 8 + 2 + 10 + 2 + 11 + 2 + 6 + 2  # TIME TOTAL CHANGE BUFS, then NEW-KONLY
    assert format_line(b, c)[start : start + 10].strip() == "64.0 KiB"


def test_svg_and_png(leak_db: str, tmp_path: Any) -> None:
    series = chart.ChartSeries.of_report(report_of(leak_db))
    assert [line.label for line in series.lines] == ["total", "kernel-only"]
    svg = chart.svg_chart(series)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "kernel-only" in svg
    import xml.dom.minidom

    xml.dom.minidom.parseString(svg)
    png = tmp_path / "c.png"
    chart.write_png(series, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_chart(leak_db: str) -> None:
    text = chart.terminal_chart(chart.ChartSeries.of_report(report_of(leak_db)), width=60, height=12)
    assert text is not None and "total" in text and len(text.splitlines()) >= 10


def test_nice_ticks_and_sparkline() -> None:
    assert chart.nice_ticks(0, 9.3, 5) == [0, 5, 10]
    assert chart.nice_ticks(0, 7, 6) == [0, 2, 4, 6, 8]
    assert chart.sparkline([1, 2, 3, 4]) == "▁▃▆█"
    assert chart.sparkline([5, 5]) == "▄▄"
