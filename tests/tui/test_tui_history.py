"""The TUI's history (issue 13): the sparkline line, the Age column, the creator in the buffer
detail, and the trace instance removed when the app exits (by a key or by a signal).

The app feeds its Timeline from a fake collector; tracing runs against FakeTracefs, a tracefs
tree under tmp_path where the instance directory is made and removed for real.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static
from tui_fakes import PROCS, TAKEN_AT, FakeCollector, FakeTracefs, MiB, Proc, buf, scene_after, scene_before, snapshot
from tui_helpers import main_screen, open_buffer, rescan, screen_text, settle

from dmabuf_inspect.history.chart import sparkline
from dmabuf_inspect.history.timeline import Creator, Timeline
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.diff import KERNEL_PID
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.historyview import HistoryFrame, age_text, frame_of
from dmabuf_inspect.tui.screens import HelpScreen, ProcessScreen
from dmabuf_inspect.tui.state import Source
from dmabuf_inspect.tui.table import arrange
from dmabuf_inspect.tui.viewdata import BUFFERS, prepare

SIZE = (160, 40)
LEAKER = Proc(500, "leaker", "/usr/bin/leaker")


def make_app(*snaps: Snapshot, **kw: Any) -> DmabufInspectApp:
    return DmabufInspectApp(FakeCollector(*snaps), interval_s=3600, cursor_blink=False, **kw)


def scene_later() -> Snapshot:
    """A minute after scene_after: a new process holds a new buffer."""
    later = [*scene_after().buffers, buf(1008, 4 * MiB, name="leak-0", holders=[(500, [3], 0)])]
    return snapshot(later, (*PROCS, LEAKER), taken_at=TAKEN_AT + 65)


def history_text(app: DmabufInspectApp) -> str:
    return str(main_screen(app).query_one("#history", Static).render())


def help_text(app: DmabufInspectApp) -> str:
    """The whole help, also what is below the fold."""
    assert isinstance(app.screen, HelpScreen)
    return str(app.screen.query_one("#help-text", Static).render())


# -- the sparkline -----------------------------------------------------------------------------


async def test_sparkline_grows_with_each_refresh_and_follows_the_selected_process() -> None:
    app = make_app(scene_before(), scene_after(), scene_later())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.view is not None and app.view.history is not None
        assert app.view.history.total_bytes == (scene_before().totals.bytes,)
        line = history_text(app)
        assert line.startswith("History: 1 refresh over 0s · total ▄ 19.1 MiB")
        assert "· 100 gnome-shell ▄ 12.1 MiB" in line  # the highlighted process: the largest

        await rescan(pilot)
        totals = [scene_before().totals.bytes, scene_after().totals.bytes]
        assert list(app.view.history.total_bytes) == totals
        assert f"History: 2 refreshes over 2s · total {sparkline(totals)} 21.1 MiB" in history_text(app)
        assert sparkline(totals) == "▁█"

        screen = main_screen(app)
        assert screen.processes.move_cursor_to_key(300)  # the pipeline that grew: the line follows it
        await pilot.pause()
        assert "· 300 gst-launch-1.0 ▁█ 12.0 MiB" in history_text(app)

        await rescan(pilot)
        assert app.view.history.refreshes == 3 and len(app.view.history.total_bytes) == 3
        assert screen.processes.move_cursor_to_key(500)
        await pilot.pause()
        # seen at the last refresh only: one block, under the newest one of the total
        assert "· 500 leaker   ▄ 4.0 MiB" in history_text(app)
        assert "History: 3 refreshes over 1m05s" in screen_text(app)

        assert screen.processes.move_cursor_to_key(KERNEL_PID)  # the kernel-only bytes: 1.0 MiB all along
        await pilot.pause()
        assert "· [held only by the kernel] ▄▄▄ 1.0 MiB" in history_text(app)

        screen.processes.focus()
        assert screen.processes.move_cursor_to_key(300)
        await pilot.press("i")
        await settle(pilot)
        assert isinstance(app.screen, ProcessScreen)
        assert re.search(r"History +▁██ 12\.0 MiB now, over 3 refreshes", screen_text(app))


async def test_history_keeps_only_the_last_points() -> None:
    app = make_app(scene_before(), scene_after(), scene_later(), history_points=2)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await rescan(pilot)
        await rescan(pilot)
        assert app.view is not None and app.view.history is not None
        assert app.view.history.total_bytes == (scene_after().totals.bytes, scene_later().totals.bytes)
        assert history_text(app).startswith("History: 2 refreshes over 1m03s")


# -- the age column ----------------------------------------------------------------------------


async def test_age_column_counts_from_the_first_sighting_and_sorts_by_its_key() -> None:
    app = make_app(scene_before(), scene_after(), scene_later())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert screen.processes.move_cursor_to_key(300)
        await pilot.pause()
        ages = {r.key: BUFFERS.cell(r, "age") for r in screen.buffers.all_rows}
        assert ages == {1002: "≥0s", 1003: "≥0s"}  # there before the session: at least that old

        await rescan(pilot)
        ages = {r.key: BUFFERS.cell(r, "age") for r in screen.buffers.all_rows}
        assert ages == {1002: "≥2s", 1003: "≥2s", 1007: "0s"}
        await rescan(pilot)
        ages = {r.key: BUFFERS.cell(r, "age") for r in screen.buffers.all_rows}
        assert ages == {1002: "≥1m05s", 1003: "≥1m05s", 1007: "1m03s"}
        assert re.search(r"^ *1007 +4\.0 MiB +1m03s system", screen_text(app), re.M)

        screen.buffers.sort_by("age")  # oldest first; ties by inode
        assert [r.key for r in screen.buffers.rows] == [1002, 1003, 1007]
        screen.buffers.sort_by("age")
        assert [r.key for r in screen.buffers.rows] == [1007, 1002, 1003]


def test_age_is_a_dash_when_unknown_and_sorts_last() -> None:
    frame = HistoryFrame(live=True, tracing="ok", session_start=TAKEN_AT - 10, first_seen={1002: TAKEN_AT - 5})
    view = prepare(scene_before(), None, frame)
    rows = view.buffers_of[300].rows
    assert {r.key: BUFFERS.cell(r, "age") for r in rows} == {1002: "5s", 1003: "-"}
    assert [r.key for r in arrange(BUFFERS, rows, "age", True, "")] == [1002, 1003]
    no_history = prepare(scene_before(), None)
    assert {BUFFERS.cell(r, "age") for r in no_history.buffers_of[100].rows} == {"-"}


def test_a_gone_buffer_keeps_its_age_and_creator_for_its_last_refresh() -> None:
    tl = Timeline()
    before, after = scene_before(), scene_after()
    tl.add(before)
    first = frame_of(tl, before, None, live=True)
    tl.creators[1005] = Creator(400, None, "firefox", TAKEN_AT - 1)
    first = frame_of(tl, before, None, live=True)
    tl.add(after)
    second = frame_of(tl, after, first, live=True)
    assert 1005 not in tl.seen and second.seen_at(1005) == TAKEN_AT
    assert second.creator_of(1005) == Creator(400, None, "firefox", TAKEN_AT - 1)
    assert second.series_of(400) == (2 * MiB,)  # firefox, gone: its last line
    view = prepare(after, before, second)
    (gone,) = view.buffers_of[400].rows
    assert gone.key == 1005 and BUFFERS.cell(gone, "age") == "≥2s"
    assert first.seen_at(1007) is None  # a frame is a copy: later refreshes do not change it
    assert frame_of(tl, after, second, live=True).gone_first_seen == {}  # gone for one refresh only


def test_age_text() -> None:
    assert [age_text(s) for s in (0, 59.9, 60, 3599, 3600, 86399, 86400 * 3 + 7200)] == [
        "0s",
        "59s",
        "1m00s",
        "59m59s",
        "1h00m",
        "23h59m",
        "3d02h",
    ]
    assert age_text(-1) == "0s" and age_text(5, at_least=True) == "≥5s"


# -- the creator -------------------------------------------------------------------------------


async def test_creator_from_the_trace_in_the_buffer_detail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTracefs(tmp_path / "tracing", monkeypatch)
    app = make_app(scene_before(), scene_after(), trace_root=str(fake.root), export_dir=str(tmp_path))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.tracing == "ok" and fake.instances == [f"dmabuf-inspect-{os.getpid()}"]
            fake.emit_export(300, "gst-launch-1.0", 1007, 4 * MiB, 101.5)  # made between the refreshes
            await rescan(pilot)
            text = await open_buffer(pilot, 300, 1007)
            assert re.search(r"^ Creator +300 gst-launch-1\.0 at 22:13:21 \(its dma_buf_export, traced\)$", text, re.M)
            assert re.search(r"^ First seen +22:13:22 \(0s ago\)$", text, re.M)
            await pilot.press("e")  # the export carries it too
            await settle(pilot)
            assert app.last_export is not None
            exported = json.loads(Path(app.last_export).read_text())["view"]["buffer"]
            assert exported["first_seen"] == TAKEN_AT + 2 and exported["tracing"] == "ok"
            creator = {"pid": 300, "start_ticks": None, "comm": "gst-launch-1.0", "time": TAKEN_AT + 1.5}
            assert exported["creator"] == creator
            await pilot.press("escape")
            text = await open_buffer(pilot, 300, 1002)
            assert re.search(r"^ Creator +unknown: made before this session's trace began$", text, re.M)
            assert re.search(r"^ First seen +22:13:20 or earlier: there at this session's first refresh", text, re.M)
            await pilot.press("escape")
            await pilot.press("question_mark")
            assert "Creators now  traced: the dma_buf tracepoints" in help_text(app)
        assert fake.instances == [] and app.timeline.trace is None  # removed on exit
    finally:
        fake.close()


async def test_without_tracing_the_detail_says_why_once_and_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_kernel = tmp_path / "tracing"  # tracefs of a kernel before 7.0: no events/dma_buf
    (old_kernel / "events").mkdir(parents=True)
    (old_kernel / "instances").mkdir()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "lab", "6.12.0", "#1", "x86_64")))
    app = make_app(scene_before(), scene_after(), trace_root=str(old_kernel))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await rescan(pilot)
        why = "unavailable: this kernel (6.12.0) has no dma_buf tracepoints (they came with Linux 7.0)"
        assert app.tracing == why
        assert len(app._notifications) == 0  # no toast, no banner: the TUI works as before
        assert "tracepoints" not in screen_text(app)
        text = await open_buffer(pilot, 300, 1007)
        assert re.search(rf"^ Creator +unknown: tracing {re.escape(why)}$", text, re.M)
        await pilot.press("escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert f"Creators now  not known: tracing {why}" in help_text(app)
    assert os.listdir(old_kernel / "instances") == []

    untraced = make_app(scene_before())  # tracing not asked for (the default for a library user)
    async with untraced.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = await open_buffer(pilot, 300, 1002)
        assert re.search(r"^ Creator +unknown: tracing unavailable: not asked for$", text, re.M)


async def test_not_root_means_no_trace_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTracefs(tmp_path / "tracing", monkeypatch)
    real_access = os.access

    def access(path: Any, mode: int, **kw: Any) -> bool:  # instances/ is root's to write, and we are not root
        return False if str(path).startswith(str(fake.root)) and mode & os.W_OK else real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    app = make_app(scene_before(), trace_root=str(fake.root))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.view is not None and fake.made == [] and fake.instances == []
        why = f"permission denied creating a trace instance in {fake.root}/instances (run as root)"
        assert app.tracing == f"unavailable: {why}"
        assert len(app._notifications) == 0
        text = await open_buffer(pilot, 300, 1002)
        assert re.search(r"^ Creator +unknown: tracing unavailable: permission denied creating a trace", text, re.M)


async def test_an_unforeseen_tracefs_error_leaves_the_tui_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(self: Timeline, root: str) -> str:  # e.g. an instance of ours left busy by a reader
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(Timeline, "start_tracing", busy)
    app = make_app(scene_before(), trace_root=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.view is not None and app.last_error is None
        assert app.tracing == "unavailable: making the trace instance: Device or resource busy (EBUSY)"
        assert len(app._notifications) == 0


async def test_a_capture_has_no_trace_no_ages_and_a_flat_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTracefs(tmp_path / "tracing", monkeypatch)
    source = Source("capture /captures/pixel-7", live=False)
    app = make_app(scene_before(), trace_root=str(fake.root), source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await rescan(pilot)
        assert fake.made == []  # a capture is never traced, whatever the app was given
        line = history_text(app)
        assert line == "A capture: the same files each refresh, so flat · total ▄▄ 19.1 MiB"
        screen = main_screen(app)
        assert {BUFFERS.cell(r, "age") for r in screen.buffers.all_rows} == {"-"}
        text = await open_buffer(pilot, 300, 1002)
        assert re.search(r"^ First seen +unknown: a capture records no ages$", text, re.M)
        assert re.search(r"^ Creator +unknown: tracing unavailable: a capture has no trace", text, re.M)


# -- the trace instance is removed on exit -----------------------------------------------------


async def test_trace_instance_removed_when_the_app_quits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTracefs(tmp_path / "tracing", monkeypatch)
    app = make_app(scene_before(), trace_root=str(fake.root))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert fake.instances == [f"dmabuf-inspect-{os.getpid()}"]
            await pilot.press("q")
        assert fake.instances == [] and app.timeline.trace is None
        app.close_history()  # twice is harmless (run_tui closes it again after run())
    finally:
        fake.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_trace_instance_removed_when_a_signal_ends_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals
) -> None:
    fake = FakeTracefs(tmp_path / "tracing", monkeypatch)
    received: list[int] = []

    def before(sig: int, frame: object) -> None:  # the handler in place before the app: the app's must win
        received.append(sig)

    old = signal.signal(signum, before)
    app = make_app(scene_before(), trace_root=str(fake.root), handle_signals=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert fake.instances == [f"dmabuf-inspect-{os.getpid()}"]
            os.kill(os.getpid(), signum)
            for _ in range(100):
                if app.return_code is not None:
                    break
                await pilot.pause(0.01)
        assert app.return_code == 128 + signum and received == []
        assert fake.instances == [] and app.timeline.trace is None
        assert signal.getsignal(signum) is before  # the app gave the signal back
    finally:
        signal.signal(signum, old)
        fake.close()
