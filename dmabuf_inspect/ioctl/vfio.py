"""VFIO: export ranges of a PCI device's BAR as one dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF, 6.19+).

    with vfio.open_device("0000:00:03.0") as dev:          # container, group, type1v2, device fd
        buf = dev.export_dma_buf(region=0, ranges=[(0, 4096)])   # a DmaBuf, exporter vfio_pci_core

The device must be bound to vfio-pci (which needs an IOMMU group), and its whole IOMMU group
must be bound to vfio-pci or to no driver. The legacy path is used: /dev/vfio/vfio (the
container), /dev/vfio/GROUP, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(type1v2),
VFIO_GROUP_GET_DEVICE_FD. The buffer is device memory, not RAM: it lives only while the device
stays open (closing the device revokes it), and 7.3 cannot mmap it.

Every failure is a SyscallError (or InvalidArgumentError) of one line naming the step and the
likely cause: not bound to vfio-pci, no IOMMU group, EPERM without interrupt remapping, a kernel
before 6.19.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dmabuf_inspect.errors import (
    DmabufInspectError,
    InvalidArgumentError,
    SyscallError,
    device_permission_cause,
    syscall_error,
)
from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.ioctl.buffer import DmaBuf, checked_ioctl
from dmabuf_inspect.ioctl.handle import OwnedFd
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.kernel.vfio import iommu_group_devices, parse_pci_address, read_pci_binding
from dmabuf_inspect.textsafe import escape

EXPORTER = "vfio_pci_core"
CONTAINER = "vfio/vfio"
VFIO_PCI = "vfio-pci"
DEFAULT_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC
_UNSAFE_INTERRUPTS = "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"
_TOO_OLD = (
    "this kernel cannot export VFIO regions as dma-bufs (VFIO_DEVICE_FEATURE_DMA_BUF needs Linux 6.19 "
    "or later, built with CONFIG_VFIO_PCI_DMABUF)"
)


class VfioSetupError(DmabufInspectError):
    """The device is not ready for VFIO (absent, no IOMMU group, not bound to vfio-pci): exit 1."""


@dataclass(frozen=True, slots=True)
class RegionInfo:
    """VFIO_DEVICE_GET_REGION_INFO of one region: for vfio-pci, index 0-5 is BAR 0-5."""

    index: int
    size_bytes: int
    flags: int


def check_pci_address(text: str) -> str:
    """The canonical PCI address ('0000:00:03.0'); InvalidArgumentError when TEXT is not one."""
    address = parse_pci_address(text)
    if address is None:
        raise InvalidArgumentError(
            f"{escape(text)!s} is not a PCI address (DOMAIN:BUS:SLOT.FUNCTION, e.g. 0000:00:03.0; lspci -D lists them)"
        )
    return address


def bind_hint(address: str, driver: str | None) -> str:
    """The commands that bind ADDRESS to vfio-pci."""
    unbind = f"echo {address} > /sys/bus/pci/drivers/{driver}/unbind; " if driver else ""
    return (
        f"modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override; "
        f"{unbind}echo {address} > /sys/bus/pci/drivers_probe"
    )


def find_group(address: str, sys_root: str = "/sys") -> int:
    """The IOMMU group of a PCI device bound to vfio-pci; a one-line error when it is not."""
    binding = read_pci_binding(Tree(sys_root, live=True), address)
    if not binding.exists:
        raise VfioSetupError(f"no PCI device {address} (in {sys_root}/bus/pci/devices; lspci -D lists them)")
    if binding.iommu_group is None:
        raise VfioSetupError(
            f"PCI device {address} has no IOMMU group: this machine runs without an IOMMU, or with it off "
            "(enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on), so VFIO cannot "
            "take the device"
        )
    if binding.driver != VFIO_PCI:
        now = f"bound to {escape(binding.driver)}" if binding.driver else "bound to no driver"
        raise VfioSetupError(
            f"PCI device {address} is {now}, not vfio-pci; as root: {bind_hint(address, binding.driver)}"
        )
    return binding.iommu_group


def _open(path: str, step: str, causes: dict[int, str]) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise syscall_error(step, exc, causes) from None


def _ioctl_int(fd: int, request: int, arg: int, *, step: str, causes: dict[int, str] | None = None) -> int:
    """An ioctl whose argument is a plain integer (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU ...)."""
    import fcntl

    try:
        return int(fcntl.ioctl(fd, request, arg))
    except OSError as exc:
        raise syscall_error(step, exc, causes) from None


class VfioContainer(OwnedFd):
    """/dev/vfio/vfio, open: the legacy VFIO container (see OwnedFd: a context manager, closed once)."""

    __slots__ = ("path",)

    def __init__(self, fd: int, path: str) -> None:
        super().__init__(fd)
        self.path = path

    def _label(self) -> str:
        return f"VFIO container {escape(self.path)}"

    def _repr_fields(self) -> str:
        return f", path={self.path!r}"

    @classmethod
    def open(cls, dev_root: str = "/dev") -> VfioContainer:
        path = os.path.join(dev_root, CONTAINER)
        fd = _open(
            path,
            f"Opening the VFIO container {path}",
            {
                errno.ENOENT: (
                    "the vfio module is not loaded (modprobe vfio-pci), or the kernel lacks CONFIG_VFIO_CONTAINER"
                ),
                errno.EACCES: device_permission_cause(path, 'KERNEL=="vfio"'),
                errno.EPERM: device_permission_cause(path, 'KERNEL=="vfio"'),
            },
        )
        container = cls(fd, path)
        try:
            version = _ioctl_int(fd, uapi.VFIO_GET_API_VERSION, 0, step=f"Asking {path} for its API version")
            if version != uapi.VFIO_API_VERSION:
                raise SyscallError(
                    f"{path} speaks VFIO API version {version}, not {uapi.VFIO_API_VERSION}",
                    None,
                    "VFIO_GET_API_VERSION",
                )
            if not _ioctl_int(
                fd, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU, step=f"Asking {path} for the type1v2 IOMMU"
            ):
                raise SyscallError(
                    f"{path} offers no type1v2 IOMMU: modprobe vfio_iommu_type1 (the kernel needs "
                    "CONFIG_VFIO_IOMMU_TYPE1)",
                    None,
                    "VFIO_CHECK_EXTENSION",
                )
        except BaseException:
            container.close()
            raise
        return container

    def set_iommu(self, kind: int = uapi.VFIO_TYPE1v2_IOMMU) -> None:
        """VFIO_SET_IOMMU, once a group is in the container: attaches the groups to the IOMMU."""
        _ioctl_int(
            self.fd,
            uapi.VFIO_SET_IOMMU,
            kind,
            step=f"Setting the IOMMU of {self.path} to type {kind}",
            causes={
                errno.EPERM: (
                    "the IOMMU does no interrupt remapping, and vfio_iommu_type1 refuses such a platform "
                    "unless told otherwise: boot with vfio_iommu_type1.allow_unsafe_interrupts=1 (or write 1 "
                    f"to {_UNSAFE_INTERRUPTS} before the module is used), accepting that the device could "
                    "forge interrupts"
                ),
                errno.EINVAL: "no group is in the container yet, or this IOMMU type is not offered",
                errno.EBUSY: "the container already has an IOMMU set",
                errno.ENODEV: "the IOMMU driver refused the group",
            },
        )


class VfioGroup(OwnedFd):
    """/dev/vfio/GROUP, open (see OwnedFd)."""

    __slots__ = ("group", "path")

    def __init__(self, fd: int, group: int, path: str) -> None:
        super().__init__(fd)
        self.group = group
        self.path = path

    def _label(self) -> str:
        return f"VFIO group {self.group} ({escape(self.path)})"

    def _repr_fields(self) -> str:
        return f", group={self.group}, path={self.path!r}"

    @classmethod
    def open(cls, group: int, dev_root: str = "/dev", sys_root: str = "/sys") -> VfioGroup:
        path = os.path.join(dev_root, "vfio", str(group))
        fd = _open(
            path,
            f"Opening VFIO group {group} ({path})",
            {
                errno.ENOENT: f"no {path}: no device of IOMMU group {group} is bound to vfio-pci",
                errno.EBUSY: f"another process has VFIO group {group} open (a group has one user at a time)",
                errno.EACCES: device_permission_cause(path, f'SUBSYSTEM=="vfio", KERNEL=="{group}"'),
                errno.EPERM: device_permission_cause(path, f'SUBSYSTEM=="vfio", KERNEL=="{group}"'),
            },
        )
        opened = cls(fd, group, path)
        try:
            status = opened.status()
            if not status & uapi.VFIO_GROUP_FLAGS_VIABLE:
                members = ", ".join(iommu_group_devices(Tree(sys_root, live=True), group)) or "?"
                raise SyscallError(
                    f"VFIO group {group} is not viable: every device in it ({escape(members)}) must be bound to "
                    "vfio-pci or to no driver",
                    None,
                    "VFIO_GROUP_GET_STATUS",
                )
        except BaseException:
            opened.close()
            raise
        return opened

    def status(self) -> int:
        """VFIO_GROUP_GET_STATUS flags (VFIO_GROUP_FLAGS_VIABLE, VFIO_GROUP_FLAGS_CONTAINER_SET)."""
        arg = uapi.vfio_group_status(argsz=ctypes.sizeof(uapi.vfio_group_status), flags=0)
        checked_ioctl(self.fd, uapi.VFIO_GROUP_GET_STATUS, arg, step=f"Reading the status of {self._label()}")
        return int(arg.flags)

    def set_container(self, container: VfioContainer) -> None:
        checked_ioctl(
            self.fd,
            uapi.VFIO_GROUP_SET_CONTAINER,
            bytearray(struct.pack("i", container.fd)),
            step=f"Putting {self._label()} into {container._label()}",
            causes={
                errno.EINVAL: "the group is already in a container, or the container is in use by another IOMMU type",
                errno.EPERM: "the group is not viable: bind every device of its IOMMU group to vfio-pci",
                errno.EBUSY: "the group is already in a container",
            },
        )

    def get_device_fd(self, address: str) -> int:
        return checked_ioctl(
            self.fd,
            uapi.VFIO_GROUP_GET_DEVICE_FD,
            bytearray(address.encode() + b"\0"),
            step=f"Getting the device fd of {address} from {self._label()}",
            causes={
                errno.EINVAL: f"{address} is not in IOMMU group {self.group}, or the group has no IOMMU set",
                errno.ENODEV: f"{address} is not in IOMMU group {self.group}",
                errno.EBUSY: f"{address} is open already (a device has one user at a time)",
                errno.EPERM: "the group has no IOMMU set yet",
            },
        )


def _explain_export_einval(region: RegionInfo | None, ranges: Sequence[tuple[int, int]]) -> str:
    page = mmap.PAGESIZE
    if not ranges:
        return "at least one range is needed"
    if region is not None and region.size_bytes == 0:
        return f"region {region.index} is empty: the device has no BAR {region.index}"
    for offset, length in ranges:
        if offset % page or length % page:
            return f"range {offset}:{length} is not page aligned ({page})"
        if length == 0:
            return f"range {offset}:{length} is empty"
        if region is not None and offset + length > region.size_bytes:
            return f"range {offset}:{length} runs past the end of BAR {region.index} ({region.size_bytes} bytes)"
    return (
        "the region must be a BAR (0-5) that exists, and each range page aligned, not empty and inside it; "
        "the BAR must also allow peer-to-peer DMA (CONFIG_PCI_P2PDMA)"
    )


def _explain_export_enodev(index: int, region: RegionInfo | None) -> str:
    # 7.3: a BAR the device does not have fails with ENODEV (no peer-to-peer provider for it)
    if region is not None and region.size_bytes == 0:
        return f"region {index} is empty: the device has no BAR {index}"
    return (
        f"BAR {index} cannot be exported: it is not a memory BAR that allows peer-to-peer DMA, or the device's "
        "memory is disabled or it is being reset"
    )


class VfioDevice(OwnedFd):
    """A vfio-pci device fd, with the group and container it came through (closed with it)."""

    __slots__ = ("address", "container", "group")

    def __init__(self, fd: int, address: str, group: VfioGroup, container: VfioContainer) -> None:
        super().__init__(fd)
        self.address = address
        self.group = group
        self.container = container

    def _label(self) -> str:
        return f"VFIO device {self.address}"

    def _repr_fields(self) -> str:
        return f", address={self.address!r}, group={self.group.group}"

    def _release(self) -> None:
        self.group.close()
        self.container.close()

    def region_info(self, index: int) -> RegionInfo:
        arg = uapi.vfio_region_info(argsz=ctypes.sizeof(uapi.vfio_region_info), index=index)
        checked_ioctl(
            self.fd,
            uapi.VFIO_DEVICE_GET_REGION_INFO,
            arg,
            step=f"Reading region {index} of {self._label()}",
            causes={errno.EINVAL: f"the device has no region {index}"},
        )
        return RegionInfo(index, int(arg.size), int(arg.flags))

    def supports_dma_buf(self) -> bool:
        """VFIO_DEVICE_FEATURE_PROBE of VFIO_DEVICE_FEATURE_DMA_BUF: can this kernel export it?"""
        buf = uapi.vfio_device_feature_buffer(
            uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF
        )
        try:
            checked_ioctl(self.fd, uapi.VFIO_DEVICE_FEATURE, buf, step="probe")
        except SyscallError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                return False
            raise
        return True

    def export_dma_buf(
        self, region: int, ranges: Sequence[tuple[int, int]], *, open_flags: int = DEFAULT_OPEN_FLAGS
    ) -> DmaBuf:
        """VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF: one dma-buf over RANGES
        ((offset, length) pairs, page aligned) of REGION (the BAR index), in order."""
        if not self.supports_dma_buf():
            raise SyscallError(
                f"Exporting a dma-buf from {self._label()}: {_TOO_OLD}", errno.ENOTTY, "VFIO_DEVICE_FEATURE_PROBE"
            )
        info: RegionInfo | None = None
        if 0 <= region <= uapi.VFIO_PCI_BAR5_REGION_INDEX:
            try:
                info = self.region_info(region)
            except SyscallError:
                info = None
        else:
            raise InvalidArgumentError(f"region {region} is not a BAR: vfio-pci exports BARs 0-5 only")
        total = sum(length for _, length in ranges)
        payload = uapi.vfio_dma_buf_payload(region, open_flags, list(ranges))
        buf = uapi.vfio_device_feature_buffer(uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF, payload)
        where = ", ".join(f"{o}:{n}" for o, n in ranges)
        fd = checked_ioctl(
            self.fd,
            uapi.VFIO_DEVICE_FEATURE,
            buf,
            step=f"Exporting {total} bytes of BAR {region} of {self._label()} ({where}) as a dma-buf",
            causes={
                errno.EINVAL: _explain_export_einval(info, ranges),
                errno.ENOTTY: _TOO_OLD,
                errno.ENODEV: _explain_export_enodev(region, info),
                errno.EOPNOTSUPP: "this device does not support peer-to-peer DMA from that BAR",
            },
        )
        return DmaBuf(fd, exporter=EXPORTER)


def open_device(address: str, *, dev_root: str = "/dev", sys_root: str = "/sys") -> VfioDevice:
    """The device fd of a vfio-pci device, through the legacy container and group interface."""
    address = check_pci_address(address)
    group_number = find_group(address, sys_root)
    container = VfioContainer.open(dev_root)
    try:
        group = VfioGroup.open(group_number, dev_root, sys_root)
        try:
            group.set_container(container)
            container.set_iommu(uapi.VFIO_TYPE1v2_IOMMU)
            fd = group.get_device_fd(address)
        except BaseException:
            group.close()
            raise
    except BaseException:
        container.close()
        raise
    return VfioDevice(fd, address, group, container)


def parse_range(text: str) -> tuple[int, int]:
    """'OFF:LEN' -> (offset, length) in bytes, each a size ('0:4K', '0x1000:4096'); InvalidArgumentError."""
    from dmabuf_inspect.units import SizeError, parse_size

    offset_text, sep, length_text = text.partition(":")
    if not sep:
        raise InvalidArgumentError(f"range {escape(text)!s} is not OFFSET:LENGTH (e.g. 0:4K)")
    try:
        offset = _parse_offset(offset_text)
        length = parse_size(length_text)
    except (SizeError, ValueError) as exc:
        raise InvalidArgumentError(f"range {escape(text)!s}: {escape(str(exc))!s}") from None
    return offset, length


def _parse_offset(text: str) -> int:
    from dmabuf_inspect.units import parse_size

    stripped = text.strip()
    if stripped.lower().startswith("0x"):
        return int(stripped, 16)
    if stripped == "0":
        return 0
    return parse_size(stripped)
