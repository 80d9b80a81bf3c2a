"""The process detail: the scan's dma-bufs beside psutil's RSS/USS and parent chain (live only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from tui_fakes import FakeCollector, scene_before
from tui_helpers import main_screen, screen_text, settle

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.diff import KERNEL_PID
from dmabuf_inspect.tui import make_app as make_tui_app
from dmabuf_inspect.tui import proclook
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.proclook import ProcessLook
from dmabuf_inspect.tui.screens import BufferScreen, ProcessScreen
from dmabuf_inspect.tui.text import process_facts

SIZE = (160, 40)
MiB = 1 << 20


def _stat_start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


# -- proclook, against real processes ----------------------------------------------------------


def test_look_at_this_process() -> None:
    look = proclook.look(os.getpid(), _stat_start_ticks(os.getpid()))
    assert look.gone is None and look.memory_problem is None
    assert look.rss_bytes is not None and look.rss_bytes > MiB
    assert look.uss_bytes is not None and 0 < look.uss_bytes <= look.rss_bytes
    pids = [pid for pid, _ in look.parents]
    assert pids[0] == os.getppid() and pids[-1] == 1 and look.parents_problem is None
    assert all(name for _, name in look.parents)


def test_look_at_an_exited_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    look = proclook.look(child.pid)
    assert look.gone == "exited" and look.rss_bytes is None


def test_a_reused_pid_is_not_the_scanned_process() -> None:
    ticks = _stat_start_ticks(os.getpid())
    look = proclook.look(os.getpid(), ticks - 1000)  # started 10 s earlier: another process
    assert look.gone is not None and "another process" in look.gone


def test_uss_denied_keeps_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: psutil.Process) -> object:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    look = proclook.look(os.getpid())
    assert look.gone is None and look.rss_bytes is not None and look.uss_bytes is None
    assert look.memory_problem == "USS needs root for another user's process"
    assert look.parents  # the chain is still there


def test_process_facts_say_what_is_known() -> None:
    p = next(p for p in scene_before().processes if p.pid == 300)
    look = ProcessLook(
        300,
        rss_bytes=40 * MiB,
        uss_bytes=None,
        memory_problem="USS needs root for another user's process",
        parents=((250, "bash"), (1, "init")),
    )
    facts = dict(process_facts(p, (("system", 2),), look, live=True))
    assert (
        facts["Memory"] == "RSS 40.0 MiB · USS unknown (its own memory, now); USS needs root for another user's process"
    )
    assert facts["Parents"] == "300 gst-launch-1.0 ← 250 bash ← 1 init"
    assert facts["Dma-bufs"] == "2 buffers, 8.0 MiB (Pss 6.0 MiB)"
    gone = dict(process_facts(p, (), ProcessLook(300, gone="exited"), live=True))
    assert gone["Memory"] == "unknown: exited" and "Parents" not in gone
    capture = dict(process_facts(p, (), None, live=False))
    assert capture["Memory"].startswith("not available for a capture")
    assert capture["Parents"] == "not available for a capture (the capture records parent pid 1)"


# -- the screen --------------------------------------------------------------------------------


class FakeLooker:
    def __init__(self) -> None:
        self.asked: list[tuple[int, int | None]] = []

    def __call__(self, pid: int, start_ticks: int | None) -> ProcessLook:
        self.asked.append((pid, start_ticks))
        return ProcessLook(pid, rss_bytes=120 * MiB, uss_bytes=90 * MiB, parents=((250, "bash\x1b[31m"), (1, "init")))


def make_app(looker: FakeLooker) -> DmabufInspectApp:
    return DmabufInspectApp(FakeCollector(scene_before()), interval_s=3600, cursor_blink=False, look_process=looker)


async def test_i_opens_the_process_detail_and_asks_only_about_it() -> None:
    looker = FakeLooker()
    app = make_app(looker)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert looker.asked == []  # nothing is asked until a detail opens
        await pilot.press("down", "down", "i")  # gst-launch-1.0
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ProcessScreen) and screen.pid == 300
        assert looker.asked == [(300, None)]
        text = screen_text(app)
        for expected in (
            "Process 300 gst-launch-1.0",
            "Dma-bufs   2 buffers, 8.0 MiB (Pss 6.0 MiB)",
            "Memory     RSS 120.0 MiB · USS 90.0 MiB (its own memory, now)",
            "Parents    300 gst-launch-1.0 ← 250 bash\\x1b[31m ← 1 init",
            "Buffers (2)",
        ):
            assert expected in text, expected
        assert "\x1b[31m" not in text
        await pilot.press("r")  # a refresh asks again, about the same process only
        await settle(pilot)
        assert looker.asked == [(300, None), (300, None)]
        await pilot.press("enter")  # its largest buffer
        assert isinstance(app.screen, BufferScreen) and app.screen.inode == 1002
        await pilot.press("escape", "escape")
        assert not isinstance(app.screen, ProcessScreen)


async def test_enter_on_a_holder_opens_its_process() -> None:
    looker = FakeLooker()
    app = make_app(looker)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "enter")  # gnome-shell's scanout buffer
        assert isinstance(app.screen, BufferScreen)
        assert "⏎ Open" in screen_text(app).splitlines()[-1]  # the holders table: enter does something
        await pilot.press("down", "enter")  # its second holder, Xwayland
        await settle(pilot)
        assert isinstance(app.screen, ProcessScreen) and app.screen.pid == 200
        assert looker.asked == [(200, None)]


async def test_the_kernel_row_has_no_process_detail() -> None:
    looker = FakeLooker()
    app = make_app(looker)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("end")
        assert main_screen(app).selected_pid == KERNEL_PID
        await pilot.press("i")
        await settle(pilot)
        assert not isinstance(app.screen, ProcessScreen) and looker.asked == []


async def test_a_capture_asks_nobody() -> None:
    tree = Path(__file__).parents[2] / "fixtures" / "k6.12"
    app = make_tui_app(Roots.from_tree(str(tree)), 3600)
    assert app.state.look_process is None
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        main_screen(app).processes.move_cursor_to_key(812)
        await pilot.press("i")
        await settle(pilot)
        assert isinstance(app.screen, ProcessScreen)
        text = screen_text(app)
        assert "Memory     not available for a capture" in text
        assert "Parents    not available for a capture (the capture records parent pid" in text


async def test_export_the_process_view(tmp_path: Path) -> None:
    app = DmabufInspectApp(
        FakeCollector(scene_before()),
        interval_s=3600,
        cursor_blink=False,
        look_process=FakeLooker(),
        export_dir=str(tmp_path),
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "i", "e")
        await settle(pilot)
        assert app.last_export is not None
        doc = json.loads(Path(app.last_export).read_text())
    view = doc["view"]
    assert view["screen"] == "process" and view["process"]["pid"] == 300 and view["process"]["change"] == "same"
    assert view["buffers"]["pid"] == 300 and view["buffers"]["sort"] == "size_bytes"
    assert [r["inode"] for r in view["buffers"]["rows"]] == [1002, 1003]
