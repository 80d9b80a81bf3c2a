"""kernel/vfio.py: PCI addresses, VFIO device fd links and fdinfo, a device's vfio-pci binding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dmabuf_inspect.kernel import vfio
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.model import VfioDeviceFd

# /proc/PID/fdinfo/N of a VFIO device fd on 7.3, as the lab's IOMMU boot printed it (qemu's edu device)
FDINFO_73 = (
    b"pos:\t0\nflags:\t02000002\nmnt_id:\t21\nino:\t46\nvfio-device-syspath: /sys/devices/pci0000:00/0000:00:0a.0\n"
)
FDINFO_612 = b"pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1045\n"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0000:00:03.0", "0000:00:03.0"),
        ("00:03.0", "0000:00:03.0"),
        ("0000:3B:00.1", "0000:3b:00.1"),
        (" 10000:00:1f.7\n", "10000:00:1f.7"),
        ("0000:00:03.8", None),
        ("0000:00:03", None),
        ("vfio0", None),
        ("", None),
        ("0000:00:03.0/..", None),
    ],
)
def test_parse_pci_address(text: str, address: str | None) -> None:
    assert vfio.parse_pci_address(text) == address


def test_device_links() -> None:
    assert vfio.is_vfio_device_link("anon_inode:[vfio-device]")
    assert vfio.is_vfio_device_link("/dev/vfio/devices/vfio0")
    assert not vfio.is_vfio_device_link("/dev/vfio/3")  # a group
    assert not vfio.is_vfio_device_link("/dev/vfio/vfio")  # the container
    assert not vfio.is_vfio_device_link("/dmabuf:")


def test_fdinfo_syspath_since_6_15() -> None:
    assert vfio.parse_device_fdinfo(FDINFO_73) == "/sys/devices/pci0000:00/0000:00:0a.0"
    assert vfio.parse_device_fdinfo(FDINFO_612) is None
    assert vfio.parse_device_fdinfo(b"vfio-device-syspath: \n") is None


@pytest.mark.parametrize(
    ("syspath", "address"),
    [
        ("/sys/devices/pci0000:00/0000:00:03.0", "0000:00:03.0"),
        ("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/", "0000:01:00.0"),
        ("/sys/devices/virtual/mtty/mtty/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", None),
    ],
)
def test_pci_address_of_syspath(syspath: str, address: str | None) -> None:
    assert vfio.pci_address_of_syspath(syspath) == address


def _sys_tree(tmp_path: Path, *, driver: str | None, group: int | None) -> Tree:
    dev = tmp_path / "sys/devices/pci0000:00/0000:00:03.0"
    dev.mkdir(parents=True)
    link_dir = tmp_path / "sys/bus/pci/devices"
    link_dir.mkdir(parents=True)
    (link_dir / "0000:00:03.0").symlink_to("../../../devices/pci0000:00/0000:00:03.0")
    if driver:
        (tmp_path / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True)
        (dev / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
    if group is not None:
        (tmp_path / f"sys/kernel/iommu_groups/{group}/devices").mkdir(parents=True)
        (tmp_path / f"sys/kernel/iommu_groups/{group}/devices/0000:00:03.0").symlink_to(
            "../../../../devices/pci0000:00/0000:00:03.0"
        )
        (dev / "iommu_group").symlink_to(f"../../../kernel/iommu_groups/{group}")
    return Tree(str(tmp_path / "sys"), live=True)


def test_pci_binding(tmp_path: Path) -> None:
    sys = _sys_tree(tmp_path, driver="vfio-pci", group=3)
    assert vfio.read_pci_binding(sys, "0000:00:03.0") == vfio.PciBinding("0000:00:03.0", True, "vfio-pci", 3)
    assert vfio.read_pci_binding(sys, "0000:00:04.0") == vfio.PciBinding("0000:00:04.0", False, None, None)
    assert vfio.iommu_group_devices(sys, 3) == ("0000:00:03.0",)
    assert vfio.iommu_group_devices(sys, 9) == ()


def test_pci_binding_without_driver_or_iommu(tmp_path: Path) -> None:
    sys = _sys_tree(tmp_path, driver=None, group=None)
    assert vfio.read_pci_binding(sys, "0000:00:03.0") == vfio.PciBinding("0000:00:03.0", True, None, None)


def test_read_device_fds(tmp_path: Path) -> None:
    fd_dir = tmp_path / "proc/42/fd"
    info_dir = tmp_path / "proc/42/fdinfo"
    fd_dir.mkdir(parents=True)
    info_dir.mkdir(parents=True)
    links = {
        3: ("/dev/vfio/vfio", b"pos:\t0\n"),
        4: ("/dev/vfio/3", b"pos:\t0\n"),
        5: ("anon_inode:[vfio-device]", FDINFO_73),
        6: ("/dmabuf:", b"size:\t4096\nexp_name:\tvfio_pci_core\n"),
        10: ("/dev/vfio/devices/vfio0", FDINFO_612),
    }
    for fd, (target, info) in links.items():
        os.symlink(target, fd_dir / str(fd))
        (info_dir / str(fd)).write_bytes(info)
    proc = Tree(str(tmp_path / "proc"), live=False)
    assert vfio.read_device_fds(proc, 42) == (
        VfioDeviceFd(42, 5, "anon_inode:[vfio-device]", "/sys/devices/pci0000:00/0000:00:0a.0", "0000:00:0a.0"),
        VfioDeviceFd(42, 10, "/dev/vfio/devices/vfio0", None, None),
    )
    assert vfio.read_device_fds(proc, 43) is None  # gone
