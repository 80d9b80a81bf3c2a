"""Snapshot tests of the main screens (frozen data, UTC clock, no cursor blink).

Update after a deliberate change of the look: `python3 -m pytest tests/tui --snapshot-update`,
then look at the SVGs under __snapshots__ before committing them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_fakes import PROCS, TAKEN_AT, FakeCollector, MiB, Proc, buf, scene_after, scene_before, snapshot
from tui_helpers import rescan, settle

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.proclook import ProcessLook
from dmabuf_inspect.tui.state import Source

FIXTURES = Path(__file__).parents[2] / "fixtures"

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


def test_80x24_paused_capture(snap_compare: SnapCompare) -> None:
    """The smallest usual terminal: the whole footer, and PAUSED first on the status line."""

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("p")

    source = Source("capture /home/user/captures/pixel-7", live=False)
    assert snap_compare(make_app(scene_before(), source=source), terminal_size=(80, 24), run_before=run_before)


def test_process_detail(snap_compare: SnapCompare) -> None:
    def look(pid: int, start_ticks: int | None) -> ProcessLook:
        return ProcessLook(pid, rss_bytes=120 * MiB, uss_bytes=90 * MiB, parents=((250, "bash"), (1, "systemd")))

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("down", "down", "i")
        await settle(pilot)

    assert snap_compare(make_app(scene_before(), look_process=look), terminal_size=(100, 24), run_before=run_before)


def test_history_line_and_ages(snap_compare: SnapCompare) -> None:
    """Three refreshes: the total and the highlighted pipeline as sparklines, its buffers' ages."""
    later = snapshot(list(scene_after().buffers), PROCS, taken_at=TAKEN_AT + 65)

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await rescan(pilot)
        await rescan(pilot)
        await pilot.press("down")  # the pipeline that grew

    app = make_app(scene_before(), scene_after(), later)
    assert snap_compare(app, terminal_size=(120, 20), run_before=run_before)


def test_legacy_kernel_capture(snap_compare: SnapCompare) -> None:
    """4.19: fds that can't be tied to a buffer, shown as that, never as the kernel's."""
    snap = collect(Roots.from_tree(str(FIXTURES / "k4.19-legacy")))._replace(taken_at=TAKEN_AT)
    source = Source("capture fixtures/k4.19-legacy", live=False)
    assert snap_compare(make_app(snap, source=source), terminal_size=(120, 24), run_before=settle)


def test_cgroup_panel_80x24(snap_compare: SnapCompare) -> None:
    """Issue 15: per-cgroup totals of a capture with services, a session and a container."""
    snap = collect(Roots.from_tree(str(FIXTURES / "cgroups-services")), cgroups=True)._replace(taken_at=TAKEN_AT)
    source = Source("capture fixtures/cgroups-services", live=False)

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)

    assert snap_compare(make_app(snap, source=source), terminal_size=(80, 24), run_before=run_before)


def test_device_memory_buffer_detail(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """Issue 16: a VFIO dma-buf (a PCI BAR): device memory apart from RAM, its device, no mmap cost."""
    from vfio_tree import write_vfio_tree

    snap = collect(Roots.from_tree(str(write_vfio_tree(tmp_path))))._replace(taken_at=TAKEN_AT)
    source = Source("capture vfio", live=False)

    async def run_before(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("enter", "enter")  # 100 p2p-app (the most RAM), then its largest buffer: 502 (vfio)
        await settle(pilot)

    assert snap_compare(make_app(snap, source=source), terminal_size=(120, 30), run_before=run_before)


def test_device_memory_main_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """Issue 16: Rss and Pss of RAM, Dev apart, and the exporter panel says which class is not RAM."""
    from vfio_tree import write_vfio_tree

    snap = collect(Roots.from_tree(str(write_vfio_tree(tmp_path))))._replace(taken_at=TAKEN_AT)
    source = Source("capture vfio", live=False)
    assert snap_compare(make_app(snap, source=source), terminal_size=(160, 24), run_before=settle)
