"""ioctl/vfio.py without a VFIO device: every failure is one line naming the step and the likely
cause (not bound to vfio-pci, no IOMMU group, EPERM without interrupt remapping, a kernel before
6.19). Errors the host cannot produce are forced by replacing fcntl.ioctl; the real path runs in
the lab's IOMMU boot (tests/kernel/test_vfio_*.py)."""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmabuf_inspect.cli.commands import alloc
from dmabuf_inspect.errors import InvalidArgumentError, SyscallError, UsageError
from dmabuf_inspect.ioctl import uapi, vfio
from dmabuf_inspect.kernel.reader import Roots


@pytest.fixture
def null_fd() -> Iterator[int]:
    fd = os.open("/dev/null", os.O_RDWR)
    yield fd
    os.close(fd)


def _device(fd: int) -> vfio.VfioDevice:
    group = vfio.VfioGroup(os.dup(fd), 3, "/dev/vfio/3")
    container = vfio.VfioContainer(os.dup(fd), "/dev/vfio/vfio")
    return vfio.VfioDevice(os.dup(fd), "0000:00:03.0", group, container)


def _fail_ioctl(monkeypatch: pytest.MonkeyPatch, code: int, request: int | None = None) -> None:
    real = fcntl.ioctl

    def fake(fd: int, req: int, arg: Any = 0, mutate: bool = True) -> Any:
        if request is None or req == request:
            raise OSError(code, os.strerror(code))
        return real(fd, req, arg, mutate)

    monkeypatch.setattr(fcntl, "ioctl", fake)


def _sys(tmp_path: Path, driver: str | None, group: int | None) -> str:
    dev = tmp_path / "sys/devices/pci0000:00/0000:00:03.0"
    dev.mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices/0000:00:03.0").symlink_to(dev)
    if driver:
        (tmp_path / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True)
        (dev / "driver").symlink_to(tmp_path / f"sys/bus/pci/drivers/{driver}")
    if group is not None:
        (tmp_path / f"sys/kernel/iommu_groups/{group}/devices").mkdir(parents=True)
        (dev / "iommu_group").symlink_to(tmp_path / f"sys/kernel/iommu_groups/{group}")
    return str(tmp_path / "sys")


def test_a_pci_address_is_checked_before_anything() -> None:
    assert vfio.check_pci_address("00:03.0") == "0000:00:03.0"
    with pytest.raises(InvalidArgumentError, match=r"^edu is not a PCI address \(DOMAIN:BUS:SLOT.FUNCTION"):
        vfio.check_pci_address("edu")


def test_no_such_device(tmp_path: Path) -> None:
    sys_root = _sys(tmp_path, "vfio-pci", 3)
    with pytest.raises(vfio.VfioSetupError, match=r"^no PCI device 0000:00:04.0 \(in .*lspci -D lists them\)$"):
        vfio.find_group("0000:00:04.0", sys_root)


def test_no_iommu_group(tmp_path: Path) -> None:
    with pytest.raises(vfio.VfioSetupError) as info:
        vfio.find_group("0000:00:03.0", _sys(tmp_path, None, None))
    assert str(info.value).startswith("PCI device 0000:00:03.0 has no IOMMU group: this machine runs without an IOMMU")
    assert "intel_iommu=on" in str(info.value)
    assert info.value.exit_code == 1


def test_bound_to_another_driver(tmp_path: Path) -> None:
    with pytest.raises(vfio.VfioSetupError) as info:
        vfio.find_group("0000:00:03.0", _sys(tmp_path, "edu", 3))
    assert str(info.value) == (
        "PCI device 0000:00:03.0 is bound to edu, not vfio-pci; as root: modprobe vfio-pci; "
        "echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override; "
        "echo 0000:00:03.0 > /sys/bus/pci/drivers/edu/unbind; echo 0000:00:03.0 > /sys/bus/pci/drivers_probe"
    )


def test_bound_to_no_driver(tmp_path: Path) -> None:
    with pytest.raises(vfio.VfioSetupError, match=r"is bound to no driver, not vfio-pci; as root: modprobe"):
        vfio.find_group("0000:00:03.0", _sys(tmp_path, None, 3))


def test_bound_to_vfio_pci(tmp_path: Path) -> None:
    assert vfio.find_group("0000:00:03.0", _sys(tmp_path, "vfio-pci", 7)) == 7


def test_no_container(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as info:
        vfio.VfioContainer.open(str(tmp_path))
    assert info.value.errno == errno.ENOENT
    assert str(info.value) == (
        f"Opening the VFIO container {tmp_path}/vfio/vfio: No such file or directory (ENOENT): the vfio module is "
        "not loaded (modprobe vfio-pci), or the kernel lacks CONFIG_VFIO_CONTAINER"
    )


def test_eperm_without_interrupt_remapping(monkeypatch: pytest.MonkeyPatch, null_fd: int) -> None:
    container = vfio.VfioContainer(os.dup(null_fd), "/dev/vfio/vfio")
    _fail_ioctl(monkeypatch, errno.EPERM, uapi.VFIO_SET_IOMMU)
    with pytest.raises(SyscallError) as info:
        container.set_iommu()
    container.close()
    message = str(info.value)
    assert message.startswith(
        "Setting the IOMMU of /dev/vfio/vfio to type 3: Operation not permitted (EPERM): the IOMMU does no "
        "interrupt remapping"
    )
    assert "vfio_iommu_type1.allow_unsafe_interrupts=1" in message
    assert "\n" not in message


def test_group_busy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def busy(path: str, flags: int, mode: int = 0o777) -> int:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(os, "open", busy)
    with pytest.raises(SyscallError, match=r"another process has VFIO group 3 open \(a group has one user at a time\)"):
        vfio.VfioGroup.open(3, str(tmp_path))


def test_a_kernel_before_6_19_says_so(null_fd: int) -> None:
    # /dev/null answers VFIO_DEVICE_FEATURE with ENOTTY, as vfio-pci before 6.19 does for feature 11
    device = _device(null_fd)
    assert device.supports_dma_buf() is False
    with pytest.raises(SyscallError) as info:
        device.export_dma_buf(0, [(0, 4096)])
    device.close()
    assert str(info.value) == (
        "Exporting a dma-buf from VFIO device 0000:00:03.0: this kernel cannot export VFIO regions as dma-bufs "
        "(VFIO_DEVICE_FEATURE_DMA_BUF needs Linux 6.19 or later, built with CONFIG_VFIO_PCI_DMABUF)"
    )
    assert info.value.errno == errno.ENOTTY


def test_a_device_closes_its_group_and_container(null_fd: int) -> None:
    device = _device(null_fd)
    group, container = device.group, device.container
    device.close()
    device.close()
    assert device.closed and group.closed and container.closed


@pytest.mark.parametrize(
    ("ranges", "size", "cause"),
    [
        ([(0, 100)], 1 << 20, "range 0:100 is not page aligned (4096)"),
        ([(0, 4096), (1 << 20, 4096)], 1 << 20, "range 1048576:4096 runs past the end of BAR 0 (1048576 bytes)"),
        ([], 1 << 20, "at least one range is needed"),
    ],
)
def test_einval_names_the_bad_range(
    monkeypatch: pytest.MonkeyPatch, null_fd: int, ranges: list[tuple[int, int]], size: int, cause: str
) -> None:
    device = _device(null_fd)
    monkeypatch.setattr(vfio.VfioDevice, "supports_dma_buf", lambda self: True)
    monkeypatch.setattr(vfio.VfioDevice, "region_info", lambda self, i: vfio.RegionInfo(i, size, 7))
    _fail_ioctl(monkeypatch, errno.EINVAL, uapi.VFIO_DEVICE_FEATURE)
    with pytest.raises(SyscallError) as info:
        device.export_dma_buf(0, ranges)
    device.close()
    assert str(info.value).endswith(f"Invalid argument (EINVAL): {cause}")
    assert str(info.value).startswith("Exporting ")


@pytest.mark.parametrize(
    ("size", "cause"),
    [
        (0, "region 1 is empty: the device has no BAR 1"),
        (4096, "BAR 1 cannot be exported: it is not a memory BAR that allows peer-to-peer DMA"),
    ],
)
def test_enodev_says_whether_the_bar_exists(
    monkeypatch: pytest.MonkeyPatch, null_fd: int, size: int, cause: str
) -> None:
    # 7.3 in the lab: edu has BAR 0 only, and exporting from BAR 1 fails with ENODEV
    device = _device(null_fd)
    monkeypatch.setattr(vfio.VfioDevice, "supports_dma_buf", lambda self: True)
    monkeypatch.setattr(vfio.VfioDevice, "region_info", lambda self, i: vfio.RegionInfo(i, size, 0))
    _fail_ioctl(monkeypatch, errno.ENODEV, uapi.VFIO_DEVICE_FEATURE)
    with pytest.raises(SyscallError) as info:
        device.export_dma_buf(1, [(0, 4096)])
    device.close()
    assert f"No such device (ENODEV): {cause}" in str(info.value)


def test_a_region_that_is_not_a_bar(null_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    device = _device(null_fd)
    monkeypatch.setattr(vfio.VfioDevice, "supports_dma_buf", lambda self: True)
    with pytest.raises(InvalidArgumentError, match=r"^region 6 is not a BAR: vfio-pci exports BARs 0-5 only$"):
        device.export_dma_buf(6, [(0, 4096)])
    device.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:4K", (0, 4096)), ("8K:8K", (8192, 8192)), ("0x2000:4096", (8192, 4096)), ("1M:1M", (1 << 20, 1 << 20))],
)
def test_parse_range(text: str, expected: tuple[int, int]) -> None:
    assert vfio.parse_range(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4096", "range 4096 is not OFFSET:LENGTH (e.g. 0:4K)"),
        ("0:0", "range 0:0: size '0' must be more than 0"),
        ("x:4K", "range x:4K: size 'x' is not a number"),
    ],
)
def test_parse_range_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        vfio.parse_range(text)
    assert str(info.value).startswith(message)


# ---- alloc --vfio: the arguments ------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dmabuf-inspect alloc")
    alloc.add_arguments(parser)
    args = parser.parse_args(argv)
    args.roots = Roots()
    return args


def test_alloc_vfio_arguments_parse() -> None:
    args = _parse(["--vfio", "0000:00:03.0", "--region", "0", "--range", "0:4K", "--range", "8K:8K"])
    assert (args.vfio, args.region, args.range, args.size) == ("0000:00:03.0", 0, [(0, 4096), (8192, 8192)], None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vfio", "0000:00:03.0", "--range", "0:4K", "--size", "4K"], "--vfio takes no --size"),
        (["--vfio", "0000:00:03.0", "--range", "0:4K", "--map"], "--vfio takes no --map"),
        (["--vfio", "0000:00:03.0"], "--vfio needs at least one --range OFF:LEN"),
        (["--vfio", "edu", "--range", "0:4K"], "--vfio: edu is not a PCI address"),
        (["--heap", "system", "--size", "4K", "--range", "0:4K"], "--range go with --vfio PCI_ADDR only"),
        (["--udmabuf", "--size", "4K", "--region", "1"], "--region go with --vfio PCI_ADDR only"),
        (["--udmabuf"], "the following arguments are required: --size"),
    ],
)
def test_alloc_vfio_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        alloc.run(_parse(argv))
    assert str(info.value).startswith(message)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vfio", "0000:00:03.0", "--range", "0:4K", "--region", "6"], "region 6 must be a BAR number, 0 to 5"),
        (["--vfio", "0000:00:03.0", "--range", "4096"], "range 4096 is not OFFSET:LENGTH"),
    ],
)
def test_alloc_vfio_bad_values_are_argparse_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
