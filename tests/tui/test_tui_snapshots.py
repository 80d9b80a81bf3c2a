"""Snapshot tests of the main screens (frozen data, UTC clock, no cursor blink).

Update after a deliberate change of the look: `python3 -m pytest tests/tui --snapshot-update`,
then look at the SVGs under __snapshots__ before committing them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_fakes import PROCS, FakeCollector, MiB, Proc, buf, scene_after, scene_before, snapshot
from tui_helpers import rescan, settle

from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.tui.app import DmabufInspectApp

SnapCompare = Callable[..., bool]


def make_app(*snaps: Snapshot, **kw: Any) -> DmabufInspectApp:
    return DmabufInspectApp(FakeCollector(*snaps), interval_s=3600, cursor_blink=False, **kw)


def test_main_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(scene_before()), terminal_size=(160, 32), run_before=settle)


def test_refresh_marks(snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await rescan(pilot)
        await pilot.press("down")  # the pipeline that grew

    assert snap_compare(make_app(scene_before(), scene_after()), terminal_size=(160, 32), run_before=run_before)


def test_buffer_detail(snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("enter", "enter")

    app = make_app(scene_before(), mmap_costs={1001: "read 0.4 GB/s, write 2.0 GB/s (write-combined)"})
    assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)


def test_partial_view_with_filter_narrow(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the banner's advice depends on it
    partial = snapshot(scene_before().buffers, PROCS, bufinfo=False, denied=[1, 2])

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("slash", *"usr")

    assert snap_compare(make_app(partial), terminal_size=(110, 24), run_before=run_before)


def test_escaped_names(snap_compare: SnapCompare) -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07"
    snap = snapshot([buf(1, 4 * MiB, name=evil, holders=[(66, [3], 1)])], [Proc(66, "bad\x1b[31m", f"/bin/bad {evil}")])
    assert snap_compare(make_app(snap), terminal_size=(150, 16), run_before=settle)


def test_help_screen(snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")

    assert snap_compare(make_app(scene_before()), terminal_size=(110, 40), run_before=run_before)
