"""Issue 12's TUI answers: each one true, each one fitting where it is shown.

fds a legacy kernel can't tie to a buffer are never shown as kernel-held; the header says why
kernel-only bytes are unknown; a capture gets no advice meant for the live machine; enter is
offered only where it does something; an 80x24 terminal shows the whole status line and footer.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
from tui_fakes import PROCS, TAKEN_AT, FakeCollector, MiB, Proc, buf, scene_before, snapshot
from tui_helpers import keys, main_screen, screen_text, settle

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.diff import KERNEL_PID, UNSEEN_PID, holdings
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import exporter_totals
from dmabuf_inspect.tui import make_app as make_tui_app
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen
from dmabuf_inspect.tui.state import Source
from dmabuf_inspect.tui.text import banner_lines, buffer_facts, header_lines
from dmabuf_inspect.tui.viewdata import EXPORTERS, PROCESSES, arrange, prepare
from dmabuf_inspect.tui.widgets.rowtable import RowTable

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "fixtures"
SIZE = (160, 40)


def fixture(name: str) -> Snapshot:
    return collect(Roots.from_tree(str(FIXTURES / name)))._replace(taken_at=TAKEN_AT)


def make_app(*snaps: Snapshot, **kw: Any) -> DmabufInspectApp:
    return DmabufInspectApp(FakeCollector(*snaps), interval_s=3600, cursor_blink=False, **kw)


# -- 4: fds that could not be tied to a buffer -----------------------------------------------------


def test_legacy_buffers_without_a_seen_holder_are_not_the_kernels() -> None:
    snap = fixture("k4.19-legacy")
    assert snap.totals.kernel_only_bytes is None and snap.sources["bufinfo"] == "ok"
    held = holdings(snap)
    assert KERNEL_PID not in held and len(held[UNSEEN_PID]) == 3
    first, _ = header_lines(snap, source="capture", live=False, paused=False, interval_s=2, scanning=False)
    assert first == "3 buffers, 12.6 MiB total · ? held by processes · kernel-only unknown (3 fds not tied to a buffer)"
    v = prepare(snap, None)
    rows = {r.key: r for r in v.processes.rows}
    assert PROCESSES.cell(rows[UNSEEN_PID], "comm") == "[holder unknown]"
    assert [PROCESSES.cell(rows[pid], k) for pid in (900, 1500) for k in ("buffers", "rss_bytes")] == [
        "0+1?",
        "?",
        "0+2?",
        "?",
    ]
    facts = dict(buffer_facts(snap.buffers[0], v.diff.buffer(snap.buffers[0].inode), None, bufinfo_ok=True))
    assert facts["Inode"] == "unknown (no source printed it)"
    assert facts["Kernel-held"].startswith("unknown")


async def test_legacy_capture_on_screen() -> None:
    app = make_tui_app(Roots.from_tree(str(FIXTURES / "k4.19-legacy")), 3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert keys(screen.processes) == [UNSEEN_PID, 900, 1500]
        text = screen_text(app)
        assert "kernel-only unknown (3 fds not tied to a buffer)" in text
        assert "3 dma-buf fds of 2 processes could not be tied to a buffer" in text
        screen.processes.move_cursor_to_key(900)
        await pilot.pause()
        assert "Buffers of 900 Xorg (0 + 1 fd not tied to a buffer)" in screen_text(app)
        screen.processes.move_cursor_to_key(UNSEEN_PID)
        await pilot.press("enter", "enter")
        assert isinstance(app.screen, BufferScreen)
        text += screen_text(app)
        assert "no process was seen holding it, but one may" in text
    for kernel_held in ("held only by the kernel", "only the kernel does", "kernel-only unknown (no debugfs"):
        assert kernel_held not in text, kernel_held


# -- exporters: scan.views, as the CLI -------------------------------------------------------------


def test_exporters_panel_is_scan_views_exporter_totals() -> None:
    snap = snapshot(
        [
            buf(1, 2 * MiB, "udmabuf", holders=[(1, [3], 0)]),
            buf(2, 2 * MiB, "drm", holders=[(1, [4], 0)]),
            buf(3, 1 * MiB, "system", holders=[(1, [5], 0)]),
        ],
        [Proc(1, "p")],
        bufinfo=False,
    )
    v = prepare(snap, None)
    shown = arrange(EXPORTERS, v.exporters.rows, EXPORTERS.default_sort, True, "")
    assert [EXPORTERS.cell(r, "exporter") for r in shown] == [t.exporter for t in exporter_totals(snap)]
    assert [EXPORTERS.cell(r, "exporter") for r in shown] == ["drm", "udmabuf", "system"]  # ties by name
    assert {EXPORTERS.cell(r, "kernel_only_bytes") for r in shown} == {"?"}  # bufinfo unread: unknown
    known = prepare(scene_before(), None)
    assert "1.0 MiB" in {EXPORTERS.cell(r, "kernel_only_bytes") for r in known.exporters.rows}


# -- 9: enter only where it does something; 80x24 ----------------------------------------------------


async def test_enter_is_not_offered_on_the_exporters_panel() -> None:
    app = make_app(scene_before())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "⏎ Open" in screen_text(app).splitlines()[-1]
        exporters = app.screen.query_one("#exporters", RowTable)
        exporters.focus()
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        assert "Open" not in footer and "Sort" in footer
        screen = app.screen
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen


async def test_80x24_shows_the_whole_footer_and_paused() -> None:
    app = make_app(scene_before(), source=Source("capture /home/user/captures/pixel-7", live=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        lines = screen_text(app).splitlines()
        assert lines[0].rstrip().endswith("1.0 MiB kernel-only")
        assert lines[1].startswith(" PAUSED · updated 22:13:20")
        footer = lines[-1]
        for key in (
            "⏎ Open",
            "s Sort",
            "/ Filter",
            "i Process",
            "q Quit",
            "? Help",
            "p Pause",
            "r Refresh",
            "e Export",
        ):
            assert key in footer, key
        await pilot.press("enter", "enter")  # the buffer detail keeps both
        lines = screen_text(app).splitlines()
        assert lines[1].startswith(" PAUSED") and "esc Back" in lines[-1] and "e Export" in lines[-1]


# -- 10: a capture gets no advice for the live machine -----------------------------------------------


async def test_a_capture_gets_no_live_advice() -> None:
    tree = FIXTURES / "hostile-links"  # its bufinfo link leads outside: refused, so bufinfo is missing
    app = make_tui_app(Roots.from_tree(str(tree)), 3600)
    assert not app.state.source.live
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "kernel-only unknown (no debugfs bufinfo in the capture)" in text
        assert "links lead outside the capture" in " ".join(text.split())
        await pilot.press("enter", "enter")
        assert isinstance(app.screen, BufferScreen)
        text += screen_text(app)
        assert "not measured (`dmabuf-inspect bench` measures the live machine, not a capture)" in text
        assert "unknown: the capture has no debugfs bufinfo" in text
    for advice in ("mount -t debugfs", "run as root", "sudo", "run `dmabuf-inspect bench`"):
        assert advice not in text, advice


def test_capture_banner_has_no_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    partial = snapshot(scene_before().buffers, PROCS, bufinfo=False, denied=[1, 2])
    live = "\n".join(banner_lines(partial, live=True))
    assert "run as root" in live and "mount -t debugfs" in live
    capture = "\n".join(banner_lines(partial, live=False))
    assert "2 processes could not be read in the capture (permission denied)" in capture
    assert "debugfs bufinfo unavailable" in capture
    assert "root" not in capture and "mount" not in capture


# -- 11: grammar ---------------------------------------------------------------------------------------


async def test_one_of_each_is_singular() -> None:
    snap = snapshot([buf(7, MiB, holders=[(5, [3], 0)])], [Proc(5, "solo")])
    app = make_app(snap)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "1 buffer, 1.0 MiB total" in text and " 1 process " in text
        await pilot.press("enter", "enter")
        assert "Holders (1 process)" in screen_text(app)


# -- structure ---------------------------------------------------------------------------------------


def test_screens_do_not_import_the_app() -> None:
    tui = ROOT / "dmabuf_inspect" / "tui"
    for path in [*tui.glob("*.py"), *tui.glob("widgets/*.py")]:
        if path.name in ("app.py", "__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "dmabuf_inspect.tui.app", path
                assert not (node.module == "dmabuf_inspect.tui" and any(a.name == "app" for a in node.names)), path


def test_the_source_label_of_a_capture_and_of_live() -> None:
    assert make_tui_app(Roots(), 2).state.source == Source("live", live=True)
    tree = str(FIXTURES / "k6.12")
    assert make_tui_app(Roots.from_tree(tree), 2).state.source == Source(f"capture {tree}", live=False)
