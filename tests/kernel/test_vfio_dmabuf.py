"""VFIO dma-bufs on a real kernel: qemu's edu device bound to vfio-pci in the lab's IOMMU boot.

Runs in `run_lab.py --profile iommu` (marker `vfio`). On 7.3 (6.19+) `alloc --vfio` exports BAR
ranges of edu in its own process, and `dump`, `buffers`, `classify` and `classify_fd` are checked
against them: inode, size (the sum of the ranges), exporter vfio_pci_core, class vfio, the holder's
pid and fd, device memory counted apart from RAM, and the device (the holder's VFIO device fd
names it in fdinfo). On 6.12 the same command says the kernel is too old, in one line.

A VFIO group has one user at a time: each test that opens edu waits for the last to close it.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import vfiolab

from dmabuf_inspect import classify, classify_fd
from dmabuf_inspect.bench.runner import run_bench
from dmabuf_inspect.errors import SyscallError, UsageError
from dmabuf_inspect.ioctl import vfio
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.kernel.vfio import VFIO_ANON_LINK, read_device_fds

pytestmark = [pytest.mark.kernel, pytest.mark.vfio]
HAS_VFIO_DMABUF = tuple(map(int, re.findall(r"\d+", os.uname().release)[:2])) >= (6, 19)
CLI = [sys.executable, "-m", "dmabuf_inspect"]
UNSAFE = "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"


@dataclass(frozen=True, slots=True)
class Exported:
    fd: int
    inode: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    device_fd: int
    buffers: tuple[Exported, ...]


_HEAD = re.compile(r"^pid (\d+): \d+ buffers? from VFIO device (\S+) \(device fd (\d+)\) BAR (\d+), ranges ")
_BUF = re.compile(r"^  fd (\d+)  inode (\d+)  (\d+) bytes  exporter vfio_pci_core$")


@contextmanager
def alloc_vfio(address: str, *ranges: str, count: int = 1) -> Iterator[Holder]:
    """`dmabuf-inspect alloc --vfio` in its own process, holding its buffers until the block ends."""
    argv = [*CLI, "alloc", "--vfio", address, "--region", "0", "--count", str(count), "--hold", "600"]
    for r in ranges:
        argv += ["--range", r]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("holding them"):
            break
    try:
        head = _HEAD.match(lines[0]) if lines else None
        assert head is not None, f"alloc --vfio printed {lines!r}; stderr {proc.stderr.read() if proc.poll() else ''}"
        assert (int(head.group(1)), head.group(2)) == (proc.pid, address)
        bufs = []
        for line in lines[1:-1]:
            m = _BUF.match(line)
            assert m is not None, line
            bufs.append(Exported(int(m.group(1)), int(m.group(2)), int(m.group(3))))
        assert len(bufs) == count
        yield Holder(proc.pid, int(head.group(3)), tuple(bufs))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def dump() -> dict:  # type: ignore[type-arg]
    out = subprocess.run([*CLI, "dump"], capture_output=True, text=True, check=True).stdout
    doc: dict = json.loads(out)  # type: ignore[type-arg]
    return doc


def check_dump(doc: dict, holder: Holder, size_bytes: int, address: str) -> None:  # type: ignore[type-arg]
    buffers = {b["inode"]: b for b in doc["buffers"]}
    for exported in holder.buffers:
        b = buffers[exported.inode]
        assert (b["size_bytes"], b["exporter"], b["class"]) == (size_bytes, "vfio_pci_core", "vfio")
        assert exported.size_bytes == size_bytes
        assert b["holders"] == [{"pid": holder.pid, "fds": [exported.fd], "maps": 0, "mapped_bytes": 0}]
    vfio_bytes = sum(b["size_bytes"] for b in doc["buffers"] if b["class"] == "vfio")
    vfio_count = sum(1 for b in doc["buffers"] if b["class"] == "vfio")
    assert vfio_count == len(holder.buffers)  # nothing else exports VFIO dma-bufs in the lab
    t = doc["totals"]
    assert (t["device_buffers"], t["device_bytes"]) == (vfio_count, vfio_bytes)
    assert t["bytes"] - t["device_bytes"] == sum(b["size_bytes"] for b in doc["buffers"] if b["class"] != "vfio")
    proc = next(p for p in doc["processes"] if p["pid"] == holder.pid)
    assert (proc["rss_bytes"], proc["device_rss_bytes"]) == (size_bytes * len(holder.buffers),) * 2
    assert proc["device_pss_bytes"] == proc["pss_bytes"]
    devices = {d["inode"]: d for d in doc["device_memory"]}
    assert set(devices) == {e.inode for e in holder.buffers}
    for exported in holder.buffers:
        d = devices[exported.inode]
        assert (d["pci_address"], d["region"]) == (address, None)
        [fd] = d["device_fds"]
        assert (fd["pid"], fd["fd"], fd["link"], fd["pci_address"]) == (
            holder.pid,
            holder.device_fd,
            VFIO_ANON_LINK,
            address,
        )
        assert fd["syspath"].startswith("/sys/devices/pci") and fd["syspath"].endswith("/" + address)


def test_the_device_fd_names_its_device_in_fdinfo(edu: vfiolab.Edu) -> None:
    """What the kernel tells about a VFIO device fd: 6.15+ prints vfio-device-syspath, 6.12 nothing."""
    with vfio.open_device(edu.address) as dev:
        [found] = read_device_fds(Tree("/proc", live=True), os.getpid()) or [None]
        assert found is not None and (found.fd, found.link) == (dev.fd, VFIO_ANON_LINK)
        if HAS_VFIO_DMABUF:
            assert found.syspath == os.path.realpath(f"/sys/bus/pci/devices/{edu.address}")
            assert found.pci_address == edu.address
        else:
            assert (found.syspath, found.pci_address) == (None, None)
        assert dev.region_info(0).size_bytes == vfiolab.EDU_BAR0_BYTES
        assert dev.supports_dma_buf() is HAS_VFIO_DMABUF


def test_alloc_says_the_kernel_is_too_old(edu: vfiolab.Edu) -> None:
    proc = subprocess.run(
        [*CLI, "alloc", "--vfio", edu.address, "--range", "0:4K", "--hold", "0"], capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"dmabuf-inspect: Exporting a dma-buf from VFIO device {edu.address}: this kernel cannot export VFIO "
        "regions as dma-bufs (VFIO_DEVICE_FEATURE_DMA_BUF needs Linux 6.19 or later, built with "
        "CONFIG_VFIO_PCI_DMABUF)\n"
    )


def test_one_range(edu: vfiolab.Edu) -> None:
    with alloc_vfio(edu.address, "0:4K") as holder:
        check_dump(dump(), holder, 4096, edu.address)


def test_two_ranges_two_buffers(edu: vfiolab.Edu) -> None:
    with alloc_vfio(edu.address, "0:4K", "8K:8K", count=2) as holder:
        check_dump(dump(), holder, 4096 + 8192, edu.address)


def test_buffers_table_and_classify(edu: vfiolab.Edu) -> None:
    with alloc_vfio(edu.address, "4K:4K", "64K:60K") as holder:
        [exported] = holder.buffers
        out = subprocess.run([*CLI, "buffers"], capture_output=True, text=True, check=True).stdout
        row = next(line for line in out.splitlines() if line.split()[:1] == [str(exported.inode)])
        assert "vfio_pci_core" in row and " vfio " in row and f"{holder.pid}:{exported.fd}" in row
        assert "64.0 KiB" in row
        info = classify(holder.pid, exported.fd)
        assert (info.exporter, info.exporter_class, info.size_bytes, info.inode) == (
            "vfio_pci_core",
            "vfio",
            65536,
            exported.inode,
        )


def _cells(out: str) -> list[list[str]]:
    """The first table of a CLI output, cell by cell."""
    return [re.split(r" {2,}", line.strip()) for line in out.split("\n\n", 1)[0].splitlines()]


def test_tables_diff_and_metrics_count_device_memory_apart(edu: vfiolab.Edu, tmp_path: Path) -> None:
    """`list` (RSS and PSS are RAM, DEV the device memory), `buffers` (DEVICE: edu; the exporter row
    says it is not RAM), `diff` and `metrics` on one two-range buffer (12 KiB of BAR 0)."""
    from prometheus_client.parser import text_string_to_metric_families

    from dmabuf_inspect.units import human_bytes

    def cli(*args: str) -> str:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, check=True).stdout

    before = tmp_path / "before.json"
    before.write_text(cli("dump"))
    with alloc_vfio(edu.address, "0:4K", "8K:8K") as holder:
        [exported] = holder.buffers
        size = exported.size_bytes
        assert size == 12288
        after = tmp_path / "after.json"
        after.write_text(cli("dump"))
        doc = json.loads(after.read_text())
        [path] = [p["cgroup"] for p in doc["processes"] if p["pid"] == holder.pid]
        [group] = [c for c in doc["cgroups"] if c["path"] == path]
        assert (group["device_bytes"], group["device_pss_bytes"]) == (size, size)  # the only VFIO dma-buf

        listed = cli("list", "--pid", str(holder.pid))
        head, *rows = _cells(listed)
        [row] = rows
        cell = dict(zip(head, row, strict=False))
        assert (cell["PID"], cell["BUFS"], cell["RSS"], cell["PSS"], cell["DEV"]) == (
            str(holder.pid),
            "1",
            human_bytes(0),
            human_bytes(0),
            human_bytes(size),
        )
        assert listed.splitlines()[-1].endswith(f"; device memory (not RAM) {human_bytes(size)} in 1 buffer")

        out = cli("buffers")
        head, *rows = _cells(out)
        row = next(r for r in rows if r[0] == str(exported.inode))
        cell = dict(zip(head, row, strict=True))
        assert (cell["DEVICE"], cell["EXPORTER"], cell["CLASS"], cell["HOLDERS"]) == (
            edu.address,
            "vfio_pci_core",
            "vfio",
            f"{holder.pid}:{exported.fd}",
        )
        exporters = _cells(out.split("\n\n", 1)[1])
        vfio_row = next(r for r in exporters[1:] if r[0] == "vfio_pci_core")
        assert vfio_row[-1] == "device memory, not RAM"
        assert all(r[-1] != "device memory, not RAM" for r in exporters[1:] if r[0] != "vfio_pci_core")

        text = cli("metrics", "--per-process")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("dmabuf_device_bytes", ())] == size
        assert samples[("dmabuf_device_buffers", ())] == 1
        [(labels, dev_rss)] = [
            (k[1], v)
            for k, v in samples.items()
            if k[0] == "dmabuf_process_device_rss_bytes" and ("pid", str(holder.pid)) in k[1]
        ]
        assert dev_rss == samples[("dmabuf_process_rss_bytes", labels)] == size

    doc = json.loads(cli("diff", str(before), str(after), "--json"))
    assert doc["delta_device_bytes"] == size
    assert doc["after"]["device_bytes"] - doc["before"]["device_bytes"] == size
    assert doc["before"]["device_bytes"] == 0  # every other test's buffers are gone
    lines = cli("diff", str(before), str(after)).splitlines()
    assert f"device memory (not RAM) 0 B -> {human_bytes(size)} (+{human_bytes(size)})" in lines


def test_classify_fd_mmap_and_bench_in_this_process(edu: vfiolab.Edu) -> None:
    with vfio.open_device(edu.address) as dev, dev.export_dma_buf(0, [(0, 4096), (16384, 8192)]) as buf:
        assert (buf.size_bytes, os.fstat(buf.fd).st_size) == (12288, 12288)
        info = classify_fd(buf.fd)
        assert (info.exporter, info.exporter_class, info.size_bytes, info.inode) == (
            "vfio_pci_core",
            "vfio",
            12288,
            buf.inode,
        )
        assert info.details.device_memory and not info.details.cpu_mmap and info.details.revocable
        with pytest.raises(OSError):  # the class table's claim: no mmap op in 7.3
            mmap.mmap(buf.fd, 4096)
        with pytest.raises(UsageError, match=rf"^fd {buf.fd}: a vfio dma-buf .* is device memory, a PCI BAR"):
            run_bench(fd=buf.fd, sizes=[4096], baselines=())


def test_export_errors_name_the_cause(edu: vfiolab.Edu) -> None:
    with vfio.open_device(edu.address) as dev:
        with pytest.raises(SyscallError, match=r"runs past the end of BAR 0 \(1048576 bytes\)$"):
            dev.export_dma_buf(0, [(0, 4096), (1 << 20, 4096)])
        with pytest.raises(
            SyscallError, match=r"No such device \(ENODEV\): region 1 is empty: the device has no BAR 1$"
        ):
            dev.export_dma_buf(1, [(0, 4096)])


def test_eperm_without_interrupt_remapping(edu: vfiolab.Edu) -> None:
    with open(UNSAFE) as f:
        before = f.read().strip()
    assert before in ("Y", "1")  # the IOMMU boot's kernel parameter
    with open(UNSAFE, "w") as f:
        f.write("0")
    try:
        proc = subprocess.run(
            [*CLI, "alloc", "--vfio", edu.address, "--range", "0:4K", "--hold", "0"], capture_output=True, text=True
        )
    finally:
        with open(UNSAFE, "w") as f:
            f.write("1")
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        "dmabuf-inspect: Setting the IOMMU of /dev/vfio/vfio to type 3: Operation not permitted (EPERM): the IOMMU "
        "does no interrupt remapping"
    )
    assert proc.stderr.count("\n") == 1


def test_not_bound_to_vfio_pci(edu: vfiolab.Edu) -> None:
    vfiolab.unbind_edu(edu.address)
    try:
        proc = subprocess.run(
            [*CLI, "alloc", "--vfio", edu.address, "--range", "0:4K", "--hold", "0"], capture_output=True, text=True
        )
    finally:
        assert vfiolab.bind_edu() == edu
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"dmabuf-inspect: PCI device {edu.address} is bound to no driver, not vfio-pci; as root: modprobe vfio-pci; "
    )
    assert proc.stderr.count("\n") == 1


if HAS_VFIO_DMABUF:
    del test_alloc_says_the_kernel_is_too_old
else:  # before 6.19 there is nothing to export: the group is what the kernel can tell
    del test_one_range
    del test_two_ranges_two_buffers
    del test_buffers_table_and_classify
    del test_tables_diff_and_metrics_count_device_memory_apart
    del test_classify_fd_mmap_and_bench_in_this_process
    del test_export_errors_name_the_cause
