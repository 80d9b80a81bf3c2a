"""Driving the app in tests: wait for scans, read the screen as text, reach the tables."""

from __future__ import annotations

import io

from rich.console import Console
from textual.pilot import Pilot

from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import MainScreen
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
