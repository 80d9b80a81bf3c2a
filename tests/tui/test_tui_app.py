"""The TUI driven by Pilot against a fake collector: sorting, filter, drill-down, refresh, export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tui_fakes import PROCS, FakeCollector, MiB, Proc, buf, scene_after, scene_before, snapshot
from tui_helpers import keys, main_screen, marks, rescan, screen_text, settle

from dmabuf_inspect.cli.main import main as cli_main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.diff import KERNEL_PID
from dmabuf_inspect.tui import make_app as make_tui_app
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen, HelpScreen
from dmabuf_inspect.tui.widgets.rowtable import RowTable

SIZE = (160, 40)


def make_app(*snaps: Snapshot, tmp_path: Path | None = None, **kw: Any) -> DmabufInspectApp:
    export_dir = str(tmp_path) if tmp_path else None
    return DmabufInspectApp(FakeCollector(*snaps), interval_s=3600, cursor_blink=False, export_dir=export_dir, **kw)


async def test_sorting_by_keys_and_header_clicks() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        procs = main_screen(app).processes
        assert keys(procs) == [100, 200, 300, 400, KERNEL_PID]  # Rss, largest first; ties by pid
        await pilot.press("s")  # next column: Pss
        assert procs.sort_key == "pss_bytes"
        assert keys(procs) == [100, 300, 200, 400, KERNEL_PID]
        await pilot.press("S")  # reverse
        assert keys(procs) == [KERNEL_PID, 400, 200, 300, 100]
        await pilot.click("#processes", offset=(4, 0))  # the PID header
        assert procs.sort_key == "pid" and not procs.sort_descending
        assert keys(procs) == [KERNEL_PID, 100, 200, 300, 400]
        await pilot.click("#processes", offset=(4, 0))  # again: flips
        assert keys(procs) == [400, 300, 200, 100, KERNEL_PID]
        assert "sort PID ▼" in screen_text(app)


async def test_cursor_follows_its_row_through_a_resort() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        await pilot.press("down", "down")
        assert screen.processes.cursor_key == 300 and screen.selected_pid == 300
        assert keys(screen.buffers) == [1002, 1003]  # 4 MiB each: ties by inode
        await pilot.press("S")
        assert screen.processes.cursor_key == 300 and screen.processes.cursor_row == 3
        await pilot.press("up")
        assert screen.selected_pid == 200 and keys(screen.buffers) == [1001]


async def test_filter_processes_then_clear() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        await pilot.press("slash", "g", "s", "t")
        assert keys(screen.processes) == [300]
        assert screen.selected_pid == 300 and keys(screen.buffers) == [1002, 1003]
        await pilot.press("enter")
        assert app.focused is screen.processes
        assert "Processes (1 of 5)" in screen_text(app) and "filter “gst”" in screen_text(app)
        await pilot.press("escape")
        assert len(keys(screen.processes)) == 5 and screen.processes.filter_text == ""


async def test_filter_matches_nothing_says_so() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"zzz")
        assert keys(main_screen(app).processes) == []
        assert "no rows match “zzz”" in screen_text(app)
        await pilot.press("escape")
        assert len(keys(main_screen(app).processes)) == 5


async def test_filter_the_buffer_table() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        await pilot.press("enter")  # into gnome-shell's buffers
        assert app.focused is screen.buffers
        await pilot.press("slash", *"cursor", "enter")
        assert keys(screen.buffers) == [1004] and keys(screen.processes) == [100, 200, 300, 400, KERNEL_PID]


async def test_drill_down_to_a_buffer_and_back() -> None:
    app = make_app(scene_before(), mmap_costs={1001: "write 2.1 GB/s, read 0.3 GB/s (uncached)"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert keys(screen.buffers) == [1001, 1002, 1004]  # gnome-shell's, largest first
        await pilot.press("enter", "enter")
        detail = app.screen
        assert isinstance(detail, BufferScreen) and detail.inode == 1001
        text = screen_text(app)
        for expected in (
            "Kernel-held  1",
            "References   count 5: 3 fd + 1 mapping",
            "Class        gpu-prime",
            "0000:00:02.0",
            "write: vgem unbound seq 1 unsignalled",
            "Holders (2 processes)",
            "/usr/bin/Xwayland :0 -rootless",
            "write 2.1 GB/s, read 0.3 GB/s (uncached)",
        ):
            assert expected in text, expected
        assert keys(detail.query_one("#holders", RowTable)) == [100, 200]
        await pilot.press("escape")
        assert app.screen is screen and app.focused is screen.buffers


async def test_kernel_only_buffers_have_their_own_row() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        await pilot.press("end")
        assert screen.selected_pid == KERNEL_PID and keys(screen.buffers) == [1006]
        await pilot.press("enter", "enter")
        text = screen_text(app)
        assert "no process holds it: only the kernel does" in text and "vgem" in text


async def test_refresh_marks_grew_new_and_gone() -> None:
    app = make_app(scene_before(), scene_after())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert set(marks(screen.processes).values()) == {"same"}
        await rescan(pilot)
        assert app.scans == 2
        assert marks(screen.processes) == {100: "same", 300: "grew", 200: "same", 400: "gone", KERNEL_PID: "same"}
        await pilot.press("down")  # 300, the leaking pipeline
        assert marks(screen.buffers) == {1002: "grew", 1003: "same", 1007: "new"}
        text = screen_text(app)
        assert "^   300 gst-launch-1.0" in text and "-   400 firefox" in text
        assert re.search(r"^\+ +1007 ", text, re.M)
        await pilot.press("end", "up")  # 400, gone
        assert screen.selected_pid == 400 and marks(screen.buffers) == {1005: "gone"}
        await pilot.press("enter", "enter")
        assert "Buffer 1005 · GONE" in screen_text(app)
        await pilot.press("escape")
        await rescan(pilot)  # nothing changed since: the marks clear and gone rows leave
        assert set(marks(screen.processes).values()) == {"same"} and 400 not in keys(screen.processes)


async def test_detail_screen_follows_refreshes() -> None:
    app = make_app(scene_before(), scene_after())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "enter", "enter")  # pid 300's largest buffer: 1002
        detail = app.screen
        assert isinstance(detail, BufferScreen) and detail.inode == 1002
        assert "count 3: 2 fd + 1 mapping" in screen_text(app)
        assert "mmap cost    not measured" in screen_text(app)
        await rescan(pilot)
        assert "Since last   grew" in screen_text(app)
        assert "count 4: 3 fd + 1 mapping" in screen_text(app)


async def test_pause_stops_ticks_but_not_r() -> None:
    collector = FakeCollector(scene_before(), scene_after())
    app = DmabufInspectApp(collector, interval_s=3600, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert collector.calls == 1
        await pilot.press("p")
        assert app.paused and "PAUSED" in screen_text(app)
        app._tick()
        await settle(pilot)
        assert collector.calls == 1
        await rescan(pilot)
        assert collector.calls == 2
        await pilot.press("p")
        app._tick()
        await settle(pilot)
        assert collector.calls == 3 and not app.paused


async def test_slow_scan_never_blocks_the_ui_nor_piles_up() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow() -> Snapshot:
        calls.append(1)
        if len(calls) > 1:
            assert release.wait(10)
        return scene_before() if len(calls) == 1 else scene_after()

    app = DmabufInspectApp(slow, interval_s=3600, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert app.scanning and "scanning…" in screen_text(app)
        for _ in range(3):
            app._tick()  # ticks while a scan runs start nothing
        await pilot.press("S", "down")  # the UI answers while the worker waits
        assert keys(main_screen(app).processes)[0] == KERNEL_PID
        assert len(calls) == 2
        release.set()
        await settle(pilot)
        assert not app.scanning and app.scans == 2 and len(calls) == 2


async def test_a_failing_scan_keeps_the_last_view_and_says_why() -> None:
    state = {"n": 0}

    def flaky() -> Snapshot:
        state["n"] += 1
        if state["n"] == 2:
            raise PermissionError(13, "Permission denied")
        return scene_before()

    app = DmabufInspectApp(flaky, interval_s=3600, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await rescan(pilot)
        text = screen_text(app)
        assert "Last scan failed: scanning: Permission denied (EACCES)" in text
        assert "gnome-shell" in text
        await rescan(pilot)
        assert "Last scan failed" not in screen_text(app)


async def test_partial_view_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    partial = snapshot(scene_before().buffers, PROCS, bufinfo=False, denied=[1, 2, 3])
    app = make_app(partial)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = " ".join(screen_text(app).split())  # the banner wraps
        assert "3 processes could not be read (permission denied)" in text
        assert "run as root to see them (with debugfs mounted: mount -t debugfs none" in text
        assert "kernel-only unknown (no debugfs bufinfo)" in text
    full = make_app(scene_before())
    async with full.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not full.screen.query_one("#banner").has_class("shown")


async def test_export_the_processes_view(tmp_path: Path) -> None:
    app = make_app(scene_before(), scene_after(), tmp_path=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await rescan(pilot)
        await pilot.press("slash", *"usr", "enter", "e")
        await settle(pilot)
        assert app.last_export is not None
        doc = json.loads(Path(app.last_export).read_text())
        assert Path(app.last_export).parent == tmp_path
    view = doc["view"]
    assert view["screen"] == "processes" and view["processes"]["filter"] == "usr"
    assert [r["pid"] for r in view["processes"]["rows"]] == [100, 200, 400]
    assert [r["change"] for r in view["processes"]["rows"]] == ["same", "same", "gone"]
    assert view["buffers"]["pid"] == 100 and [r["inode"] for r in view["buffers"]["rows"]] == [1001, 1002, 1004]
    assert len(doc["snapshot"]["buffers"]) == 6


async def test_export_the_buffer_view(tmp_path: Path) -> None:
    app = make_app(scene_before(), tmp_path=tmp_path, mmap_costs={1001: "2 GB/s"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "enter", "e")
        await settle(pilot)
        doc = json.loads(Path(app.last_export or "").read_text())
    assert doc["view"]["screen"] == "buffer"
    assert doc["view"]["buffer"]["inode"] == 1001 and doc["view"]["buffer"]["mmap_cost"] == "2 GB/s"
    assert [r["pid"] for r in doc["view"]["holders"]["rows"]] == [100, 200]


async def test_export_failure_is_one_notification(tmp_path: Path) -> None:
    app = make_app(scene_before(), tmp_path=tmp_path / "missing")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert app.last_export is None
        assert app.last_export_error == f"writing to {tmp_path / 'missing'}: No such file or directory (ENOENT)"


async def test_names_with_escape_sequences_are_shown_escaped() -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07"
    snap = snapshot(
        [buf(1, 4 * MiB, "system", name=evil, holders=[(66, [3], 1)])],
        [Proc(66, "bad\x1b[31m", f"/bin/bad {evil}", user="mallory")],
    )
    app = make_app(snap)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "/bin/bad \\x1b[2J\\x1b]0;pwned\\x07" in text
        assert "\\x1b[2J\\x1b]0;pwned\\x07" in text.split("Buffers of")[1]
        await pilot.press("enter", "enter")
        text += screen_text(app)
    assert "\x1b" not in text and "\x07" not in text


async def test_help_screen_lists_keys() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for expected in (
            "Write the current view to a JSON file",
            "Pause or resume",
            "Filter the focused table",
            "+ new",
            "^ grew",
            "- gone",
        ):
            assert expected in text, expected
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_footer_shows_the_keys() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        footer = screen_text(app).rstrip("\n").splitlines()[-1]
        for key in ("Sort", "Filter", "Quit", "Help", "Pause", "Refresh", "Export"):
            assert key in footer, key


async def test_side_panel_toggles_and_starts_hidden_on_narrow_screens() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        side = app.screen.query_one("#side")
        assert not side.display or side.has_class("hidden")
        await pilot.press("x")
        await pilot.pause()
        assert not side.has_class("hidden")
        assert "udmabuf  /dev/udmabuf" in screen_text(app)


def test_tui_command_needs_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["tui"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a terminal" in err


def test_tui_command_rejects_a_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["tui", "--interval", "0"])
    assert exc.value.code == 2
    assert "at least 0.2 seconds" in capsys.readouterr().err


def test_importing_the_command_or_package_does_not_import_textual() -> None:
    code = (
        "import sys, dmabuf_inspect.cli.commands.tui, dmabuf_inspect.tui, dmabuf_inspect.tui.viewdata\n"
        "print(any(m == 'textual' or m.startswith('textual.') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert out.stdout.strip() == "False"


async def test_browse_a_capture_with_the_real_collector() -> None:
    tree = Path(__file__).parents[2] / "fixtures" / "k6.12"
    app = make_tui_app(Roots.from_tree(str(tree)), 3600)
    assert app.source == f"capture {tree}"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert keys(screen.processes) == [KERNEL_PID, 1204, 812, 1350]  # 16 MiB only the kernel holds
        text = screen_text(app)
        assert f"capture {tree}" in text and "5 buffers, 23.1 MiB total" in text
        assert "16.0 MiB kernel-only" in text and "camera-app" in text
        screen.processes.move_cursor_to_key(812)
        await pilot.press("enter", "enter")  # weston's one buffer, shared with camera-app
        text = screen_text(app)
        for expected in (
            "Name         camera-preview",
            "Kernel-held  1",
            "0000:00:02.0",
            "read: ",
            "signalled",
            "Holders (2 processes)",
        ):
            assert expected in text, expected
