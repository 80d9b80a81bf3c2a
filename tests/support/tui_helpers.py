"""Driving the app in tests: wait for scans, read the screen as text, reach the tables."""

from __future__ import annotations

import io

from rich.console import Console
from textual.pilot import Pilot

from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen, MainScreen
from dmabuf_inspect.tui.widgets.rowtable import RowTable


async def settle(pilot: Pilot[int]) -> None:
    """Wait until every scan/export worker finished and its messages were handled."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def rescan(pilot: Pilot[int]) -> None:
    await pilot.press("r")
    await settle(pilot)


def screen_text(app: DmabufInspectApp) -> str:
    """The screen as plain text, as a user would read it."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


def main_screen(app: DmabufInspectApp) -> MainScreen:
    screen = app.screen
    assert isinstance(screen, MainScreen), type(screen)
    return screen


def keys(table: RowTable) -> list[int]:
    return [r.key for r in table.rows]


def marks(table: RowTable) -> dict[int, str]:
    return {r.key: r.change.value for r in table.rows}


async def open_buffer(pilot: Pilot[int], pid: int, inode: int) -> str:
    """The detail of buffer INODE of process PID, as text (lines without trailing blanks), once
    the screen has drawn it."""
    app = pilot.app
    assert isinstance(app, DmabufInspectApp)
    screen = main_screen(app)
    assert screen.processes.move_cursor_to_key(pid)
    await pilot.pause()
    screen.buffers.focus()
    assert screen.buffers.move_cursor_to_key(inode)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, BufferScreen) and app.screen.inode == inode
    return "\n".join(line.rstrip() for line in screen_text(app).splitlines())
