"""Device memory in the TUI (issue 16): VFIO dma-bufs (a PCI BAR) are counted apart from RAM in the
header and the process detail, the exporter panel says which class is not RAM, the buffer detail
names the device (or says "unknown" and why) and never shows an mmap cost for them.

The scan is the real `collect` over tests/support/vfio_tree.py (the format the 7.3 lab printed):

    100 p2p-app      edu (0000:00:03.0) open; 501 (vfio 4 KiB, shared with 200), 502 (vfio 12 KiB), 503 (heap 8 KiB)
    200 importer     501 and 503; no VFIO device
    300 two-devices  two VFIO devices open: 504's device is not told
    400 old-fdinfo   a device fd whose fdinfo names no device: 505
    500 no-device    506 (64 KiB), no VFIO device at all
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import bench_fakes
import pytest
from bench_fakes import sample
from textual.widgets import Static
from tui_fakes import FakeCollector, scene_before
from tui_helpers import main_screen, open_buffer, rescan, screen_text, settle
from vfio_tree import write_vfio_tree

from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench.model import TargetPass, TargetSpec
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import ProcessScreen
from dmabuf_inspect.tui.text import header_lines
from dmabuf_inspect.tui.viewdata import PROCESSES, PROCESSES_DEVICE, arrange, prepare

SIZE = (160, 40)
KIB = 1024


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_vfio_tree(tmp_path_factory.mktemp("vfio-tui")))


def make_app(tree: str, **kw: Any) -> DmabufInspectApp:
    return DmabufInspectApp(
        functools.partial(collect, Roots.from_tree(tree)), interval_s=3600, cursor_blink=False, **kw
    )


def lines(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_header_counts_device_memory_apart_from_ram(tree: str) -> None:
    snap = collect(Roots.from_tree(tree))
    first, _ = header_lines(snap, source="capture", paused=False, interval_s=2, scanning=False)
    # 503 (8 KiB heap) is the only RAM; 501 + 502 + 504 + 505 + 506 = 4 + 12 + 4 + 4 + 64 KiB are a BAR
    assert first.startswith("6 buffers, 8.0 KiB RAM + 88.0 KiB device memory · ")
    without = collect(Roots.from_tree(str(Path(__file__).parents[2] / "fixtures" / "k6.12")))
    assert " total · " in header_lines(without, source="x", paused=False, interval_s=2, scanning=False)[0]
    assert "device memory" not in header_lines(without, source="x", paused=False, interval_s=2, scanning=False)[0]


async def test_main_screen_marks_the_vfio_class_as_device_memory(tree: str) -> None:
    app = make_app(tree)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "6 buffers, 8.0 KiB RAM + 88.0 KiB device memory · 96.0 KiB held by processes" in text
        note = str(main_screen(app).query_one("#device-note", Static).render())
        assert note == "vfio: device memory, not RAM (a PCI BAR): 88.0 KiB in 5 buffers"
        assert re.search(r"vfio_pci_core +vfio +5 +88\.0 KiB", text)

    plain = DmabufInspectApp(FakeCollector(scene_before()), interval_s=3600, cursor_blink=False)
    async with plain.run_test(size=SIZE) as pilot:  # no device memory: no note, the header as before
        await settle(pilot)
        assert not main_screen(plain).query_one("#device-note", Static).display
        assert "device memory" not in screen_text(plain)


async def test_buffer_detail_names_the_device_or_says_unknown_and_why(tree: str) -> None:
    app = make_app(tree)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = await open_buffer(pilot, 100, 501)
        assert re.search(r"^ Class +vfio: device memory \(a PCI BAR exported by vfio-pci\), not RAM$", text, re.M)
        device = re.search(r"^ Device +(.*)$", text, re.M)
        assert device is not None
        assert device[1] == (
            "0000:00:03.0 (the only VFIO device its holders hold open (pid 100 fd 5; fdinfo vfio-device-syspath))"
        )
        assert re.search(r"^ Region +unknown: no kernel \(up to 7\.3\) prints which BAR", text, re.M)
        await pilot.press("escape")

        text = await open_buffer(pilot, 300, 504)
        assert re.search(
            r"^ Device +unknown \(its holders hold several VFIO devices open \(0000:00:03\.0, ", text, re.M
        )
        await pilot.press("escape")
        text = await open_buffer(pilot, 400, 505)
        assert re.search(r"^ Device +unknown \(its holders' VFIO device fds name no PCI device", text, re.M)
        await pilot.press("escape")
        text = await open_buffer(pilot, 500, 506)
        assert re.search(r"^ Device +unknown \(its holders hold no VFIO device open\)$", text, re.M)
        await pilot.press("escape")

        text = await open_buffer(pilot, 100, 503)  # the heap buffer beside them: RAM, no device line
        assert re.search(r"^ Class +heap$", text, re.M) and not re.search(r"^ (Device|Region) ", text, re.M)


def _cache_vfio_bench(directory: Path, kernel: str) -> None:
    """A bench cache that (wrongly) holds medians for vfio_pci_core: the detail must not show them."""
    mib = 1 << 20
    specs = [TargetSpec("vfio_pci_core", "dmabuf"), TargetSpec("anon", "baseline")]
    one = [
        TargetPass("vfio_pci_core", "vfio", None, (sample(mib, touch_ns=500.0, read_mib_s=100.0),)),
        TargetPass(None, None, None, (sample(mib, touch_ns=20_000.0, read_mib_s=1900.0),)),
    ]
    benchcache.save(bench_fakes.report(kernel, specs, (mib,), [one], processes=2), directory=str(directory))


async def test_device_memory_is_never_given_an_mmap_cost(tree: str, tmp_path: Path) -> None:
    kernel = collect(Roots.from_tree(tree)).kernel
    _cache_vfio_bench(tmp_path / "bench", kernel)
    app = make_app(
        tree, mmap_costs={501: "1 ns/page"}, bench_cache_dir=str(tmp_path / "bench"), export_dir=str(tmp_path)
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.state.bench is not None and app.state.bench.cost("vfio_pci_core", 4096) is not None
        for pid, inode in ((100, 501), (100, 502)):
            text = await open_buffer(pilot, pid, inode)
            assert re.search(r"^ mmap cost +not measured: device memory \(a PCI BAR, not RAM", text, re.M), text
            assert "ns/page" not in text and "Measured" not in text
            await pilot.press("escape")
        await open_buffer(pilot, 100, 501)
        await pilot.press("e")
        await settle(pilot)
        assert app.last_export is not None
        exported = json.loads(Path(app.last_export).read_text())["view"]["buffer"]
        assert exported["mmap_cost"] is None and exported["mmap_cost_bench"] is None


async def test_process_detail_splits_ram_and_device_memory(tree: str) -> None:
    app = make_app(tree)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = main_screen(app)
        assert screen.processes.move_cursor_to_key(100)
        await pilot.press("i")
        await settle(pilot)
        assert isinstance(app.screen, ProcessScreen)
        text = lines(screen_text(app))
        # 501 (4 KiB, shared: Pss 2 KiB) + 502 (12 KiB) on the device; 503 (8 KiB, shared: Pss 4 KiB) in RAM
        assert re.search(
            r"^ +8\.0 KiB RAM \(Pss 4\.0 KiB\) \+ 16\.0 KiB device memory \(Pss 14\.0 KiB\), not RAM$", text, re.M
        ), text


def test_process_table_shows_ram_in_rss_and_pss_and_device_memory_apart(tree: str) -> None:
    view = prepare(collect(Roots.from_tree(tree)), None)
    assert view.processes_table is PROCESSES_DEVICE
    rows = {r.key: r for r in view.processes.rows}
    got = {
        pid: [PROCESSES_DEVICE.cell(rows[pid], k) for k in ("rss_bytes", "pss_bytes", "device_rss_bytes")]
        for pid in rows
    }
    # the same figures as `list` (tests/unit/test_cli_device_memory.py)
    assert got[100] == ["8.0 KiB", "4.0 KiB", "16.0 KiB"]
    assert got[200] == ["8.0 KiB", "4.0 KiB", "4.0 KiB"]
    assert got[500] == ["0 B", "0 B", "64.0 KiB"]
    by_rss = arrange(PROCESSES_DEVICE, view.processes.rows, "rss_bytes", True, "")
    assert [r.key for r in by_rss] == [100, 200, 300, 400, 500]  # by RAM, ties by pid
    plain = prepare(scene_before(), None)
    assert plain.processes_table is PROCESSES and "device_rss_bytes" not in PROCESSES.keys


async def test_the_process_table_switches_columns_with_the_scan(tree: str) -> None:
    snaps = [collect(Roots.from_tree(tree)), scene_before()]
    app = DmabufInspectApp(FakeCollector(*snaps), interval_s=3600, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = main_screen(app).processes
        assert table.table is PROCESSES_DEVICE and re.search(r"Rss ▼ +Pss +Dev Exporters", screen_text(app))
        table.sort_by("device_rss_bytes")
        assert table.cursor_key == 100 and table.rows[0].key == 500
        await rescan(pilot)  # no device memory any more: the plain columns, sorted by Rss again
        assert table.table is PROCESSES and table.sort_key == "rss_bytes"
        assert "Dev" not in screen_text(app).split("Exporters")[0]
        assert [r.key for r in table.rows][:3] == [100, 200, 300]
