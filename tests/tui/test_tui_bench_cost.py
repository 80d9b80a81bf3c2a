"""The buffer detail's mmap cost: the cached `dmabuf-inspect bench` medians of the buffer's exporter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bench_fakes
from bench_fakes import sample
from tui_fakes import FakeCollector, scene_before
from tui_helpers import rescan, screen_text, settle

from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench.model import TargetPass, TargetSpec
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen

SIZE = (160, 40)
KERNEL = scene_before().kernel
MEASURED_AT = 1_795_000_000.0  # 2026-11-18 11:06 UTC


def cached(
    directory: Path,
    exporter: str,
    touch_ns: float,
    read: float,
    anon_touch_ns: float = 20_000.0,
    now: float = MEASURED_AT,
) -> None:
    """Save a bench report in which EXPORTER was measured at 1 MiB, against anon."""
    specs = [TargetSpec(exporter, "dmabuf"), TargetSpec("anon", "baseline")]
    mib = 1 << 20
    one = [
        TargetPass(
            exporter, "heap", None, (sample(mib, touch_ns=touch_ns, read_mib_s=read, write_mib_s=350.0, sync_ns=9e3),)
        ),
        TargetPass(None, None, None, (sample(mib, touch_ns=anon_touch_ns, read_mib_s=1900.0, write_mib_s=350.0),)),
    ]
    benchcache.save(bench_fakes.report(KERNEL, specs, (mib,), [one], processes=2), directory=str(directory), now=now)


def make_app(cache_dir: Path, **kw: Any) -> DmabufInspectApp:
    return DmabufInspectApp(
        FakeCollector(scene_before()), interval_s=3600, cursor_blink=False, bench_cache_dir=str(cache_dir), **kw
    )


async def open_1002(app: DmabufInspectApp, pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("down", "down", "enter", "enter")  # pid 300's largest buffer: 1002, system, 4 MiB
    assert isinstance(app.screen, BufferScreen) and app.screen.inode == 1002


async def test_cached_medians_of_the_buffers_exporter_with_when(tmp_path: Path) -> None:
    cached(tmp_path, "system", touch_ns=600.0, read=1850.0)
    cached(tmp_path, "udmabuf", touch_ns=6000.0, read=1700.0, now=MEASURED_AT + 60)  # another exporter's run
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        text = screen_text(app)
        assert "mmap cost    first touch 600 ns/page (x0.03 anon), system at 1.0 MiB" in text
        assert "read 1850 MiB/s (x0.97 anon) · write 350 MiB/s (x1.00 anon)" in text
        assert f"Measured     2026-11-18 11:06 by `dmabuf-inspect bench` (kernel {KERNEL})" in text
        assert "udmabuf" not in text.split("mmap cost")[1].split("Holders")[0]


async def test_not_measured_says_how_and_a_new_run_shows_on_the_next_scan(tmp_path: Path) -> None:
    cached(tmp_path, "udmabuf", touch_ns=6000.0, read=1700.0)  # nothing for the system heap
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        assert "mmap cost    not measured: run `dmabuf-inspect bench`" in screen_text(app)
        cached(tmp_path, "system", touch_ns=400.0, read=1800.0, now=MEASURED_AT + 120)
        await rescan(pilot)
        text = screen_text(app)
        assert "first touch 400 ns/page (x0.02 anon), system at 1.0 MiB" in text
        assert "Measured     2026-11-18 11:08" in text


async def test_a_cost_given_for_the_buffer_wins_over_the_cache(tmp_path: Path) -> None:
    cached(tmp_path, "system", touch_ns=400.0, read=1800.0)
    app = make_app(tmp_path, mmap_costs={1002: "read 9.1 GB/s (measured for this buffer)"}, export_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        text = screen_text(app)
        assert "mmap cost    read 9.1 GB/s (measured for this buffer)" in text and "Measured" not in text
        await pilot.press("e")
        await settle(pilot)
        assert app.last_export is not None
        hooked = json.loads(Path(app.last_export).read_text())["view"]["buffer"]
    assert hooked["mmap_cost"] == "read 9.1 GB/s (measured for this buffer)" and hooked["mmap_cost_bench"] is None


async def test_an_unreadable_cache_is_said_not_raised(tmp_path: Path) -> None:
    (tmp_path / f"bench-{KERNEL}.json").write_text(json.dumps({"schema": "nope"}))
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        text = screen_text(app)
        assert "mmap cost    not measured: run `dmabuf-inspect bench` (cached result unreadable: " in text
        assert app.last_error is None


async def test_the_default_cache_is_the_users(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached(tmp_path / "dmabuf-inspect", "system", touch_ns=300.0, read=1850.0)
    app = DmabufInspectApp(FakeCollector(scene_before()), interval_s=3600, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        assert "first touch 300 ns/page" in screen_text(app)


async def test_export_carries_the_cached_medians_the_detail_shows(tmp_path: Path) -> None:
    cached(tmp_path, "system", touch_ns=600.0, read=1850.0)
    app = DmabufInspectApp(
        FakeCollector(scene_before()),
        interval_s=3600,
        cursor_blink=False,
        bench_cache_dir=str(tmp_path),
        export_dir=str(tmp_path),
    )
    async with app.run_test(size=SIZE) as pilot:
        await open_1002(app, pilot)
        await pilot.press("e")
        await settle(pilot)
        assert app.last_export is not None
        buffer = json.loads(Path(app.last_export).read_text())["view"]["buffer"]
    assert buffer["inode"] == 1002 and buffer["mmap_cost"] is None
    bench = buffer["mmap_cost_bench"]
    assert (bench["exporter"], bench["size_bytes"], bench["kernel"]) == ("system", 1 << 20, KERNEL)
    assert (bench["first_touch_ns_per_page"], bench["read_mib_s"], bench["write_mib_s"]) == (600.0, 1850.0, 350.0)
    assert round(bench["first_touch_vs_anon"], 2) == 0.03 and bench["measured_at"] == MEASURED_AT
