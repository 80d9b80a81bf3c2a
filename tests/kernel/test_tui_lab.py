"""The TUI, headless, against real buffers: the scene's processes and buffers must be on screen.

Runs the real collector (`snapshot.collect`) in the app's worker thread, as `dmabuf-inspect tui`
does, drives it with Pilot and reads the screen as text. On 7.x the app traces the dma_buf
events, as `dmabuf-inspect tui` does: a buffer made during the session names its creator.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import vfiolab
from rich.console import Console
from scene import FORK_COMM, NAMED, OWNER_COMM, RECV_COMM, Scene
from textual.pilot import Pilot

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.diff import KERNEL_PID
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.tui import make_app
from dmabuf_inspect.tui.app import DmabufInspectApp
from dmabuf_inspect.tui.screens import BufferScreen, CgroupScreen, MainScreen, ProcessScreen
from dmabuf_inspect.units import human_bytes

pytestmark = pytest.mark.kernel

TRACEFS = "/sys/kernel/tracing"
MAKER_COMM = "tui-maker"
# Says `ready`, waits for a line, then allocates one 64 KiB system-heap buffer, prints its inode
# and holds it until stdin closes: the allocation happens while the app traces.
MAKER = f"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, b"{MAKER_COMM}", 0, 0, 0)
from dmabuf_inspect.ioctl.heaps import heap_alloc
print("ready", flush=True)
sys.stdin.readline()
buf = heap_alloc("system", 65536)
print(os.fstat(buf.fd).st_ino, flush=True)
sys.stdin.read()
"""


async def _settle(pilot: Pilot[int]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def _screen_text(app: DmabufInspectApp) -> str:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


async def _text_when(pilot: Pilot[int], drawn: Callable[[str], bool], timeout_s: float = 30.0) -> str:
    """The screen as text once DRAWN says it is there: a screen just pushed may not have been
    drawn yet (under load in TCG, its first frame came after `press` returned)."""
    app = pilot.app
    assert isinstance(app, DmabufInspectApp)
    deadline = time.monotonic() + timeout_s
    text = _screen_text(app)
    while not drawn(text) and time.monotonic() < deadline:
        await pilot.pause(0.05)
        text = _screen_text(app)
    return text


def _detail_drawn(inode: int) -> Callable[[str], bool]:
    """The buffer detail of INODE is on screen, its facts and holders drawn."""
    return lambda text: re.search(rf"^ Buffer {inode}\b", text, re.M) is not None and "Holders (" in text


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
            text = await _text_when(pilot, _detail_drawn(signaled))
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
            text = await _text_when(pilot, _detail_drawn(imported))
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


def _our_instance() -> str:
    return f"{TRACEFS}/instances/dmabuf-inspect-{os.getpid()}"


async def test_tui_names_the_creator_of_a_buffer_made_during_the_session() -> None:
    """7.x: the detail of a buffer made while the app runs names its creator (pid and comm), and
    the app's tracefs instance is gone once it exits. 6.12: no tracepoints, the detail says so
    and the TUI works as before."""
    traced = int(os.uname().release.split(".")[0]) >= 7  # the dma_buf tracepoints came with 7.0
    assert os.path.isdir(f"{TRACEFS}/events/dma_buf") == traced, os.uname().release
    maker = subprocess.Popen([sys.executable, "-c", MAKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert maker.stdin is not None and maker.stdout is not None
    try:
        assert maker.stdout.readline().strip() == "ready"
        app = make_app(Roots(), 3600)  # as `dmabuf-inspect tui` makes it on the live machine
        async with app.run_test(size=(200, 60)) as pilot:
            await _settle(pilot)
            assert app.view is not None, app.last_error
            if traced:
                assert app.tracing == "ok" and os.path.isdir(_our_instance())
            else:
                assert app.tracing.startswith("unavailable: "), app.tracing
                assert not os.path.exists(_our_instance())
            maker.stdin.write("go\n")
            maker.stdin.flush()
            inode = int(maker.stdout.readline())
            await pilot.press("r")
            await _settle(pilot)

            screen = app.screen
            assert isinstance(screen, MainScreen)
            assert screen.processes.move_cursor_to_key(maker.pid), app.last_error
            await pilot.pause()
            screen.buffers.focus()
            assert screen.buffers.move_cursor_to_key(inode)
            text = _screen_text(app)
            assert f"{maker.pid} {MAKER_COMM}" in text.split("History:")[1].splitlines()[0]  # its sparkline
            await pilot.press("enter")
            text = await _text_when(pilot, _detail_drawn(inode))
            first_seen = re.search(r"^ First seen +(.*)$", text, re.M)
            assert first_seen is not None and "or earlier" not in first_seen[1], text  # seen at the 2nd refresh
            if traced:
                creator = rf"^ Creator +{maker.pid} {MAKER_COMM} at \d\d:\d\d:\d\d \(its dma_buf_export, traced\)"
                assert re.search(creator, text, re.M), text
            else:
                assert re.search(rf"^ Creator +unknown: tracing {re.escape(app.tracing)}", text, re.M), text
                assert "7.0" in app.tracing or "not mounted" in app.tracing, app.tracing
            await pilot.press("escape")
        assert app.timeline.trace is None
        assert not os.path.exists(_our_instance())  # removed on exit
    finally:
        maker.stdin.close()
        maker.wait(timeout=30)


def _cgroup_of(pid: int) -> str:
    """The cgroup v2 path of PID, as /proc prints it (the `0::` line)."""
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line[3:].rstrip("\n") for line in f if line.startswith("0::"))


async def test_tui_cgroup_panel_totals_the_scene_by_cgroup() -> None:
    """Issue 15: `g` shows per-cgroup totals of real processes: the scene's processes are in the
    row of their own cgroup (read here from /proc), with at least their bytes."""
    with Scene.start() as scene:
        app = make_app(Roots(), 3600)  # as `dmabuf-inspect tui` makes it: it reads cgroups
        async with app.run_test(size=(200, 60)) as pilot:
            await _settle(pilot)
            assert app.view is not None, app.last_error
            snap = app.view.snapshot
            assert snap.sources.get("cgroup") == "ok", snap.sources
            await pilot.press("g")
            await _settle(pilot)
            screen = app.screen
            assert isinstance(screen, CgroupScreen)
            rows = {app.view.cgroup_totals[r.key].path: app.view.cgroup_totals[r.key] for r in screen.cgroups.rows}
            procs = {p.pid: p for p in snap.processes}
            for pid in scene.pids.values():
                path = _cgroup_of(pid)
                assert path in rows, (path, list(rows))
                total = rows[path]
                assert pid in total.pids and total.bytes >= procs[pid].rss_bytes
            assert sum(t.pss_bytes for t in rows.values()) == sum(p.pss_bytes for p in snap.processes)
            text = await _text_when(pilot, lambda t: "Cgroups (" in t)
            assert f"Cgroups ({len(rows)})" in text
            assert escape(_cgroup_of(scene.pids[OWNER_COMM])) in text


VFIO_RELEASE = tuple(map(int, re.findall(r"\d+", os.uname().release)[:2]))
ALLOC_HEAD = re.compile(r"^pid (\d+): \d+ buffers? from VFIO device (\S+) \(device fd (\d+)\)")
ALLOC_BUF = re.compile(r"^  fd (\d+)  inode (\d+)  (\d+) bytes  exporter vfio_pci_core$")


@pytest.mark.vfio
async def test_tui_shows_vfio_buffers_as_device_memory(edu: vfiolab.Edu) -> None:
    """Issue 16 (the IOMMU boot): a VFIO dma-buf of qemu's edu device is counted apart from RAM in
    the header, and its detail names the device and refuses an mmap cost. Before 6.19 no such
    buffer can exist: the TUI shows no device memory."""
    argv = [sys.executable, "-m", "dmabuf_inspect", "alloc", "--vfio", edu.address, "--region", "0"]
    argv += ["--range", "0:4K", "--range", "8K:8K", "--hold", "600"]
    if VFIO_RELEASE < (6, 19):
        app = make_app(Roots(), 3600)
        async with app.run_test(size=(200, 60)) as pilot:
            await _settle(pilot)
            assert app.view is not None and app.view.snapshot.totals.device_bytes == 0
            assert "device memory" not in _screen_text(app)
        return
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("holding them"):
                break
        head = ALLOC_HEAD.match(lines[0]) if lines else None
        assert head is not None, lines
        (buf,) = [m for m in map(ALLOC_BUF.match, lines[1:]) if m is not None]
        inode, size = int(buf[2]), int(buf[3])
        assert size == 4096 + 8192  # the sum of its ranges
        app = make_app(Roots(), 3600)
        async with app.run_test(size=(200, 60)) as pilot:
            await _settle(pilot)
            assert app.view is not None, app.last_error
            t = app.view.snapshot.totals
            assert (t.device_buffers, t.device_bytes) == (1, size)
            text = _screen_text(app)
            ram = t.bytes - size
            assert f"RAM + {human_bytes(size)} device memory" in text and f"{human_bytes(ram)} RAM" in text, text
            screen = app.screen
            assert isinstance(screen, MainScreen)
            assert screen.processes.move_cursor_to_key(proc.pid)
            await pilot.pause()
            screen.buffers.focus()
            assert screen.buffers.move_cursor_to_key(inode)
            await pilot.press("enter")
            text = await _text_when(pilot, _detail_drawn(inode))
            assert re.search(r"^ Class +vfio: device memory \(a PCI BAR exported by vfio-pci\), not RAM", text, re.M)
            device = (
                rf"^ Device +{re.escape(edu.address)} "
                rf"\(the only VFIO device its holders hold open \(pid {proc.pid} fd {head[3]};"
            )
            assert re.search(device, text, re.M), text
            assert re.search(r"^ mmap cost +not measured: device memory", text, re.M), text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
