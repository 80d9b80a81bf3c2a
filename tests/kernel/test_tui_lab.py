"""The TUI, headless, against real buffers: the scene's processes and buffers must be on screen.

Runs the real collector (`snapshot.collect`) in the app's worker thread, as `dmabuf-inspect tui`
does, drives it with Pilot and reads the screen as text.
"""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console
from scene import FORK_COMM, NAMED, OWNER_COMM, RECV_COMM, Scene
from textual.pilot import Pilot

from dmabuf_inspect.scan.diff import KERNEL_PID
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen, MainScreen, ProcessScreen

pytestmark = pytest.mark.kernel


async def _settle(pilot: Pilot[int]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def _screen_text(app: DmabufInspectApp) -> str:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


async def test_tui_finds_the_scene_on_screen() -> None:
    with Scene.start() as scene:
        owner = scene.pids[OWNER_COMM]
        expected = scene.expected
        app = DmabufInspectApp(collect, interval_s=3600, cursor_blink=False)
        async with app.run_test(size=(200, 60)) as pilot:
            await _settle(pilot)
            assert app.view is not None, app.last_error
            screen = app.screen
            assert isinstance(screen, MainScreen)
            shown = {r.key for r in screen.processes.rows}
            assert set(scene.pids.values()) | {KERNEL_PID} <= shown
            text = _screen_text(app)
            assert OWNER_COMM in text and RECV_COMM in text
            assert "debugfs" not in text  # root with debugfs: no partial-view banner

            assert screen.processes.move_cursor_to_key(owner)
            await pilot.pause()
            owner_inodes = {b.inode for b in expected.values() if any(h.pid == owner for h in b.holders)}
            assert {r.key for r in screen.buffers.rows} == owner_inodes
            assert NAMED in _screen_text(app)

            signaled = expected["signaled"].inode  # its signalled vgem fence stays attached
            screen.buffers.focus()
            assert screen.buffers.move_cursor_to_key(signaled)
            await pilot.press("enter")
            detail = app.screen
            assert isinstance(detail, BufferScreen) and detail.inode == signaled
            text = _screen_text(app)
            # 7.3 prints no driver or timeline for a signalled fence, 6.12 does (vgem unbound)
            assert "gpu-prime" in text and re.search(r"^ write: .*\bsignalled", text, re.M), text
            await pilot.press("escape")

            assert screen.processes.move_cursor_to_key(KERNEL_PID)
            await pilot.pause()
            imported = expected["imported"].inode
            assert imported in {r.key for r in screen.buffers.rows}
            screen.buffers.focus()
            assert screen.buffers.move_cursor_to_key(imported)
            await pilot.press("enter")
            text = _screen_text(app)
            assert "only the kernel does" in text and "vgem" in text.split("Attachments")[1]

            await pilot.press("escape")

            # the process detail asks psutil about the real process: its memory and its parents
            fork = scene.pids[FORK_COMM]
            assert screen.processes.move_cursor_to_key(fork)
            screen.processes.focus()
            await pilot.press("i")
            await _settle(pilot)
            detail = app.screen
            assert isinstance(detail, ProcessScreen) and detail.pid == fork and detail.look is not None
            assert detail.look.gone is None and detail.look.rss_bytes and detail.look.uss_bytes, detail.look
            text = _screen_text(app)
            assert re.search(r"Memory +RSS \d+\.\d \w+ · USS \d+\.\d \w+", text), text
            chain = f"{fork} {FORK_COMM} ← {owner} {OWNER_COMM} ← {os.getpid()} "
            assert chain in text and re.search(r"← 1 \S+", text), text
