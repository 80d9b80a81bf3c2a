"""The cgroup panel (issue 15, `g`): per-cgroup totals from scan.cgroups, checked against the
figures computed by hand for fixtures/cgroups-* (tests/support/cgroup_expectations.py).

The app scans the trees with the real `collect`, built by `tui.make_app` as `dmabuf-inspect tui`
builds it, so the panel also proves that the TUI reads the processes' cgroups.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cgroup_expectations import HOSTILE, SERVICES, Cg
from textual.widgets import Static
from tui_helpers import screen_text, settle

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.tui import make_app
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import CgroupScreen, HelpScreen
from dmabuf_inspect.tui.viewdata import CGROUPS, prepare
from dmabuf_inspect.units import human_bytes

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SIZE = (160, 40)


def app_on(tree: str, tmp_path: Path | None = None) -> DmabufInspectApp:
    app = make_app(Roots.from_tree(str(FIXTURES / tree)), 3600)
    app.cursor_blink = False
    if tmp_path is not None:
        app.export_dir = str(tmp_path)
    return app


def panel(app: DmabufInspectApp) -> CgroupScreen:
    assert isinstance(app.screen, CgroupScreen), type(app.screen)
    return app.screen


def shown(app: DmabufInspectApp) -> list[Cg]:
    """The panel's rows in screen order, as the hand-computed figures are written."""
    view = app.view
    assert view is not None
    out = []
    for row in panel(app).cgroups.rows:
        t = view.cgroup_totals[row.key]
        out.append(
            Cg(
                t.path,
                t.unit,
                t.processes,
                t.buffers,
                t.bytes,
                t.pss_bytes,
                t.shared_buffers,
                t.shared_bytes,
                t.shared_inodes,
            )
        )
    return out


async def test_the_panel_shows_the_hand_computed_figures_per_cgroup(tmp_path: Path) -> None:
    app = app_on("cgroups-services", tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert shown(app) == SERVICES  # largest Bytes first, as scan.cgroups orders them
        text = screen_text(app)
        assert "Cgroups (4) · sort Bytes ▼" in text
        for cg in SERVICES:  # each row as the user reads it: unit, processes, buffers, bytes, Pss, shared
            shared = f"{human_bytes(cg.shared_bytes)} in {cg.shared_buffers}" if cg.shared_buffers else "-"
            cells = [cg.unit, cg.processes, cg.buffers, human_bytes(cg.bytes), human_bytes(cg.pss_bytes), shared]
            assert re.search(r" +".join(re.escape(str(c)) for c in cells), text), (cells, text)
        # the highlighted cgroup: its whole path, its processes and the buffers it shares
        facts = str(panel(app).query_one("#cgroup-facts", Static).render())
        assert "Cgroup     /user.slice/user-1000.slice/session-2.scope" in facts
        assert "Processes  900 weston" in facts
        assert "Shared     20.0 MiB in 2 buffers: 40001, 40003" in facts

        panel(app).cgroups.sort_by("processes")  # camera-daemon: the only one with 2 processes
        await pilot.pause()
        assert shown(app)[0].unit == "camera-daemon.service"
        await pilot.press("e")
        await settle(pilot)
        assert app.last_export is not None
        doc = json.loads(Path(app.last_export).read_text())
        assert doc["view"]["screen"] == "cgroups"
        exported = doc["view"]["cgroups"]
        assert exported["sort"] == "processes" and exported["source"] == "ok"
        assert exported["rows"][0]["unit"] == "camera-daemon.service"
        assert {r["path"]: r["shared_bytes"] for r in exported["rows"]} == {c.path: c.shared_bytes for c in SERVICES}
        await pilot.press("escape")
        assert not isinstance(app.screen, CgroupScreen)


async def test_hostile_paths_are_escaped_and_unknown_cgroups_are_one_row(tmp_path: Path) -> None:
    app = app_on("cgroups-hostile")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert shown(app) == HOSTILE
        text = screen_text(app)
        assert "\x1b" not in text and "\udcff" not in text
        assert "/system.slice/bad\\n0::\\xff.service" in text  # escaped, on one line
        assert re.search(r"^- +2 +2 +5\.0 MiB +4\.0 MiB +2\.0 MiB in 1 +\(unknown\)", text, re.M), text


async def test_without_cgroup_files_the_panel_says_why() -> None:
    app = app_on("k6.12")  # a capture made before `capture` kept /proc/PID/cgroup
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        (row,) = panel(app).cgroups.all_rows  # every process in one group: unknown
        assert app.view is not None and app.view.cgroup_totals[row.key].path is None
        assert CGROUPS.cell(row, "path") == "(unknown)" and CGROUPS.value(row, "processes") == 3
        facts = str(panel(app).query_one("#cgroup-facts", Static).render())
        assert facts.startswith("cgroups unknown: no process's /proc/PID/cgroup has a cgroup v2 path"), facts


def test_a_scan_without_cgroups_has_no_rows() -> None:
    from dmabuf_inspect.scan.snapshot import collect

    view = prepare(collect(Roots.from_tree(str(FIXTURES / "cgroups-services"))), None)
    assert view.cgroups.rows == () and view.cgroup_totals == ()
    assert CGROUPS.default_sort == "bytes"


async def test_the_help_lists_the_cgroup_key() -> None:
    app = app_on("cgroups-services")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-text", Static).render())
        assert re.search(r"g +processes: Per-cgroup totals", help_text), help_text
