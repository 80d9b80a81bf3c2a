"""What the kernel says about VFIO devices: a PCI device's vfio-pci binding, and the VFIO device
fds a process holds. Pure parsers first, then the readers that take a `Tree`.

A VFIO dma-buf (exp_name `vfio_pci_core`, Linux 6.19+) names no device: its fdinfo and debugfs
bufinfo give size and exporter only. What does name one is the device fd it was exported from,
which its exporter must keep open (closing the device revokes its dma-bufs):

    proc/PID/fd/5 -> anon_inode:[vfio-device]         (a device fd from VFIO_GROUP_GET_DEVICE_FD)
    proc/PID/fd/6 -> /dev/vfio/devices/vfio0          (a device fd of the cdev interface, 6.6+)
    proc/PID/fdinfo/5:
        pos:    0
        flags:  02000002
        mnt_id: 15
        ino:    1057
        vfio-device-syspath: /sys/devices/pci0000:00/0000:00:03.0      (since 6.15)

and sysfs, for a PCI device:

    sys/bus/pci/devices/0000:00:03.0/driver -> ../../../bus/pci/drivers/vfio-pci
    sys/bus/pci/devices/0000:00:03.0/iommu_group -> ../../../kernel/iommu_groups/3
    sys/kernel/iommu_groups/3/devices/0000:00:03.0 -> ../../../../devices/pci0000:00/0000:00:03.0
"""

from __future__ import annotations

import os
import re

from dmabuf_inspect.kernel.lazyre import lazy
from dmabuf_inspect.kernel.reader import GONE, Tree, gap_kind
from dmabuf_inspect.model import VfioDeviceFd
from dmabuf_inspect.records import NamedTuple

VFIO_ANON_LINK = "anon_inode:[vfio-device]"
VFIO_CDEV_PREFIX = "/dev/vfio/devices/"
_SYSPATH = b"vfio-device-syspath:"
_PCI_ADDRESS = lazy(r"(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])", re.ASCII)


def parse_pci_address(text: str) -> str | None:
    """'0000:00:03.0' or '00:03.0' -> '0000:00:03.0' (lower case, domain added); None otherwise."""
    match = _PCI_ADDRESS.fullmatch(text.strip())
    if match is None:
        return None
    domain, bus, slot, function = match.groups()
    return f"{(domain or '0000').lower()}:{bus.lower()}:{slot.lower()}.{function}"


def is_vfio_device_link(target: str) -> bool:
    """True for the link of a VFIO device fd: `anon_inode:[vfio-device]` or /dev/vfio/devices/vfioN."""
    return target == VFIO_ANON_LINK or target.startswith(VFIO_CDEV_PREFIX)


def parse_device_fdinfo(data: bytes) -> str | None:
    """The `vfio-device-syspath:` of a VFIO device fd's fdinfo (6.15+), or None where the kernel
    prints none (before 6.15)."""
    for line in data.splitlines():
        if line.startswith(_SYSPATH):
            path = line[len(_SYSPATH) :].strip().decode("utf-8", "surrogateescape")
            return path or None
    return None


def pci_address_of_syspath(syspath: str) -> str | None:
    """'/sys/devices/pci0000:00/0000:00:03.0' -> '0000:00:03.0'; None when the path does not
    end in a PCI device (an mdev, a platform device)."""
    return parse_pci_address(os.path.basename(syspath.rstrip("/")))


# -- a PCI device and vfio-pci ---------------------------------------------------------------------


class PciBinding(NamedTuple):
    """What sysfs says of one PCI device, for opening it through VFIO."""

    address: str
    exists: bool
    driver: str | None  # the bound driver's name; None when no driver is bound
    iommu_group: int | None  # None: the device has no IOMMU group (no IOMMU, or it is off)


def read_pci_binding(sys: Tree, address: str) -> PciBinding:
    """The device's driver and IOMMU group, from sys/bus/pci/devices/ADDRESS."""
    base = f"bus/pci/devices/{address}"
    if not sys.isdir(base):
        return PciBinding(address, False, None, None)
    return PciBinding(address, True, _link_name(sys, f"{base}/driver"), _group_number(sys, f"{base}/iommu_group"))


def iommu_group_devices(sys: Tree, group: int) -> tuple[str, ...]:
    """The PCI addresses (or other device names) in IOMMU group GROUP, sorted; () if unreadable."""
    try:
        return tuple(sorted(sys.listdir(f"kernel/iommu_groups/{group}/devices")))
    except OSError:
        return ()


def _link_name(sys: Tree, path: str) -> str | None:
    try:
        return os.path.basename(sys.readlink(path))
    except OSError:
        return None


def _group_number(sys: Tree, path: str) -> int | None:
    name = _link_name(sys, path)
    return int(name) if name is not None and name.isdigit() else None


# -- a process's VFIO device fds -------------------------------------------------------------------


def read_device_fds(proc: Tree, pid: int) -> tuple[VfioDeviceFd, ...] | None:
    """The VFIO device fds of process PID, in fd order, each with the device its fdinfo names.

    None when the process's fd table could not be listed (gone or denied); fds that vanish
    meanwhile are skipped.
    """
    try:
        names = proc.listdir(f"{pid}/fd")
    except OSError:
        return None
    found = []
    for fd in sorted(int(n) for n in names if n.isdigit()):
        try:
            target = proc.readlink(f"{pid}/fd/{fd}")
        except OSError:
            continue
        if not is_vfio_device_link(target):
            continue
        try:
            syspath = parse_device_fdinfo(proc.read_once(f"{pid}/fdinfo/{fd}", 4096))
        except OSError as exc:
            if gap_kind(exc) == GONE:
                continue
            syspath = None
        address = pci_address_of_syspath(syspath) if syspath else None
        found.append(VfioDeviceFd(pid, fd, target, syspath, address))
    return tuple(found)
