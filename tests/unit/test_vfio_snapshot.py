"""VFIO dma-bufs in a snapshot: class vfio, device memory counted apart from RAM in the totals and
in each process's Rss/Pss, the device each buffer lives in (from its holders' VFIO device fds, or
"unknown"), the dump JSON and its schema, and bench's refusal.

The tree is written here in the format the 7.3 lab printed (tests/kernel/test_vfio_*.py check the
same on the real kernel).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from vfio_tree import BTIME_STAT, EDU, VFIO_ANON, dmabuf_fdinfo, write_process, write_vfio_tree

from dmabuf_inspect import exporters
from dmabuf_inspect.bench.runner import run_bench
from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import UNKNOWN_DEVICE, Totals, VfioDeviceFd
from dmabuf_inspect.scan import jsonout
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import filter_snapshot


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vfio_tree(tmp_path_factory.mktemp("vfio-tree"))


def test_vfio_pci_core_is_class_vfio_and_device_memory() -> None:
    entry = exporters.lookup("vfio_pci_core")
    assert (entry.key, entry.exporter_class, entry.backing) == ("vfio", "vfio", "mmio")
    assert entry.device_memory and entry.revocable and not entry.cpu_mmap and entry.cpu_cached is False
    assert exporters.is_device_memory("vfio_pci_core")
    assert not any(exporters.is_device_memory(n) for n in ("system", "udmabuf", "drm", "amdgpu", "tee", "nosuch"))


def test_buffers_are_class_vfio(tree: Path) -> None:
    snap = collect(Roots.from_tree(str(tree)))
    classes = {b.inode: b.exporter_class for b in snap.buffers}
    assert classes == {501: "vfio", 502: "vfio", 503: "heap", 504: "vfio", 505: "vfio", 506: "vfio"}


def test_totals_count_device_memory_apart(tree: Path) -> None:
    snap = collect(Roots.from_tree(str(tree)))
    assert snap.totals == Totals(
        buffers=6,
        bytes=98304,
        userspace_bytes=98304,
        kernel_only_bytes=0,
        device_buffers=5,
        device_bytes=4096 + 12288 + 4096 + 4096 + 65536,
    )
    assert snap.totals.ram_bytes == 8192


def test_rss_and_pss_count_device_memory_apart(tree: Path) -> None:
    procs = {p.pid: p for p in collect(Roots.from_tree(str(tree))).processes}
    p100, p200 = procs[100], procs[200]
    assert (p100.rss_bytes, p100.device_rss_bytes, p100.ram_rss_bytes) == (4096 + 12288 + 8192, 4096 + 12288, 8192)
    assert (p100.pss_bytes, p100.device_pss_bytes, p100.ram_pss_bytes) == (2048 + 12288 + 4096, 2048 + 12288, 4096)
    assert (p200.rss_bytes, p200.device_rss_bytes, p200.device_pss_bytes) == (4096 + 8192, 4096, 2048)
    assert (procs[500].device_rss_bytes, procs[500].ram_rss_bytes) == (65536, 0)


def test_the_device_of_each_buffer(tree: Path) -> None:
    found = {d.inode: d for d in collect(Roots.from_tree(str(tree))).device_memory}
    assert sorted(found) == [501, 502, 504, 505, 506]
    edu_fd = VfioDeviceFd(100, 5, VFIO_ANON, EDU, "0000:00:03.0")
    assert (found[501].pci_address, found[501].device_fds) == ("0000:00:03.0", (edu_fd,))
    assert found[501].why.startswith("the only VFIO device its holders hold open (pid 100 fd 5;")
    assert found[502].pci_address == "0000:00:03.0"
    assert found[504].pci_address == UNKNOWN_DEVICE
    assert found[504].why == (
        "its holders hold several VFIO devices open (0000:00:03.0, 0000:00:04.0); nothing tells which exported it"
    )
    assert len(found[504].device_fds) == 2
    assert (found[505].pci_address, found[505].why) == (
        UNKNOWN_DEVICE,
        "its holders' VFIO device fds name no PCI device (fdinfo before 6.15)",
    )
    assert (found[506].pci_address, found[506].why) == (UNKNOWN_DEVICE, "its holders hold no VFIO device open")
    assert all(d.region is None for d in found.values())  # no kernel prints the BAR


def test_no_device_memory_no_device_section(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("7.3.4\n")
    (tmp_path / "proc/stat").write_text(BTIME_STAT)
    write_process(tmp_path, 10, "heap-user", {3: ("/dmabuf:", dmabuf_fdinfo(700, 4096, "system", 1))})
    snap = collect(Roots.from_tree(str(tmp_path)))
    assert (snap.totals.device_buffers, snap.totals.device_bytes, snap.device_memory) == (0, 0, ())
    assert snap.processes[0].device_rss_bytes == 0


def test_dump_json_has_it_and_is_valid(tree: Path) -> None:
    snap = collect(Roots.from_tree(str(tree)))
    out = io.StringIO()
    jsonout.write(snap, out)
    doc = json.loads(out.getvalue())
    jsonschema.validate(doc, jsonout.load_schema())
    assert doc == json.loads(jsonout.dumps(snap))
    assert doc["totals"]["device_bytes"] == 90112 and doc["totals"]["device_buffers"] == 5
    p100 = next(p for p in doc["processes"] if p["pid"] == 100)
    assert (p100["device_rss_bytes"], p100["device_pss_bytes"]) == (16384, 14336)
    by_inode = {d["inode"]: d for d in doc["device_memory"]}
    assert by_inode[501] == {
        "inode": 501,
        "pci_address": "0000:00:03.0",
        "region": None,
        "why": by_inode[501]["why"],
        "device_fds": [{"pid": 100, "fd": 5, "link": VFIO_ANON, "syspath": EDU, "pci_address": "0000:00:03.0"}],
    }
    assert {b["inode"]: b["class"] for b in doc["buffers"]}[502] == "vfio"


def test_bench_refuses_device_memory() -> None:
    with pytest.raises(UsageError, match=r"^exporter vfio_pci_core: a vfio dma-buf .* is device memory, a PCI BAR"):
        run_bench(exporters=["vfio_pci_core"], sizes=[4096], baselines=())


def test_filters_keep_device_memory_apart(tree: Path) -> None:
    snap = collect(Roots.from_tree(str(tree)))
    heap_only = filter_snapshot(snap, None, ["heap"])
    p100 = next(p for p in heap_only.processes if p.pid == 100)
    assert (p100.rss_bytes, p100.device_rss_bytes, p100.ram_rss_bytes, p100.device_pss_bytes) == (8192, 0, 8192, 0)
    assert heap_only.device_memory == ()
    vfio_only = filter_snapshot(snap, [100], ["vfio"])
    [p100] = vfio_only.processes
    assert (p100.rss_bytes, p100.device_rss_bytes, p100.pss_bytes, p100.device_pss_bytes) == (
        16384,
        16384,
        14336,
        14336,
    )
    assert [d.inode for d in vfio_only.device_memory] == [501, 502]
