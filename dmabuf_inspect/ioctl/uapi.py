"""The kernel's dma-buf user API, mirrored from its headers.

One ctypes structure per C structure, with the kernel's field names; the request numbers are
computed with `_IOW`/`_IOWR` from `ctypes.sizeof` (as `include/uapi/asm-generic/ioctl.h` does)
and gathered in IntEnums so that logs show names. Sources:

- `include/uapi/linux/udmabuf.h`
- `include/uapi/linux/dma-heap.h`
- `include/uapi/linux/dma-buf.h`

Nothing here does I/O.
"""

from __future__ import annotations

import ctypes
import os
from enum import IntEnum
from typing import Any, TypeAlias

# include/uapi/asm-generic/ioctl.h (x86, arm, riscv; not alpha, mips, powerpc, sparc)
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

CType: TypeAlias = "type[ctypes.Structure] | type[ctypes._SimpleCData[Any]]"


def _type_code(kind: str | int) -> int:
    return ord(kind) if isinstance(kind, str) else kind


def _IOC(direction: int, kind: str | int, nr: int, size: int) -> int:
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (_type_code(kind) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(kind: str | int, nr: int) -> int:
    return _IOC(_IOC_NONE, kind, nr, 0)


def _IOR(kind: str | int, nr: int, argtype: CType) -> int:
    return _IOC(_IOC_READ, kind, nr, ctypes.sizeof(argtype))


def _IOW(kind: str | int, nr: int, argtype: CType) -> int:
    return _IOC(_IOC_WRITE, kind, nr, ctypes.sizeof(argtype))


def _IOWR(kind: str | int, nr: int, argtype: CType) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, kind, nr, ctypes.sizeof(argtype))


# ---- include/uapi/linux/udmabuf.h ----------------------------------------------------------

UDMABUF_FLAGS_CLOEXEC = 0x01


class udmabuf_create(ctypes.Structure):
    _fields_ = (
        ("memfd", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )


class udmabuf_create_item(ctypes.Structure):
    _fields_ = (
        ("memfd", ctypes.c_uint32),
        ("__pad", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )


class udmabuf_create_list(ctypes.Structure):
    """The header only: `list[]` is a flexible array that follows it in the same buffer."""

    _fields_ = (
        ("flags", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("list", udmabuf_create_item * 0),
    )


def udmabuf_create_list_buffer(flags: int, items: list[tuple[int, int, int]]) -> bytearray:
    """A `udmabuf_create_list` followed by its `count` items, ready for the ioctl.

    Each item is (memfd, offset, size).
    """
    head_size = ctypes.sizeof(udmabuf_create_list)
    item_size = ctypes.sizeof(udmabuf_create_item)
    buf = bytearray(head_size + item_size * len(items))
    head = udmabuf_create_list.from_buffer(buf)
    head.flags = flags
    head.count = len(items)
    for i, (memfd, offset, size) in enumerate(items):
        item = udmabuf_create_item.from_buffer(buf, head_size + i * item_size)
        item.memfd = memfd
        item.offset = offset
        item.size = size
    return buf


# ---- include/uapi/linux/dma-heap.h ---------------------------------------------------------

_O_ACCMODE = 0o3  # the kernel's O_ACCMODE; Python's os module does not export it

DMA_HEAP_VALID_FD_FLAGS = os.O_CLOEXEC | _O_ACCMODE
DMA_HEAP_VALID_HEAP_FLAGS = 0
DMA_HEAP_IOC_MAGIC = "H"


class dma_heap_allocation_data(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_uint64),
        ("fd", ctypes.c_uint32),
        ("fd_flags", ctypes.c_uint32),
        ("heap_flags", ctypes.c_uint64),
    )


# ---- include/uapi/linux/dma-buf.h ----------------------------------------------------------


class dma_buf_sync(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64),)


DMA_BUF_SYNC_READ = 1 << 0
DMA_BUF_SYNC_WRITE = 2 << 0
DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START = 0 << 2
DMA_BUF_SYNC_END = 1 << 2
DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END

DMA_BUF_NAME_LEN = 32


class dma_buf_export_sync_file(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
    )


class dma_buf_import_sync_file(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
    )


DMA_BUF_BASE = "b"


class Ioctl(IntEnum):
    """Request numbers of udmabuf, dma-heap and dma-buf."""

    UDMABUF_CREATE = _IOW("u", 0x42, udmabuf_create)
    UDMABUF_CREATE_LIST = _IOW("u", 0x43, udmabuf_create_list)
    DMA_HEAP_IOCTL_ALLOC = _IOWR(DMA_HEAP_IOC_MAGIC, 0x0, dma_heap_allocation_data)
    DMA_BUF_IOCTL_SYNC = _IOW(DMA_BUF_BASE, 0, dma_buf_sync)
    # "32/64bitness of this uapi was botched in android": _A and _B are the same ioctl under
    # two numbers; DMA_BUF_SET_NAME (const char *) is _B on 64-bit and _A on 32-bit machines.
    DMA_BUF_SET_NAME_A = _IOW(DMA_BUF_BASE, 1, ctypes.c_uint32)
    DMA_BUF_SET_NAME_B = _IOW(DMA_BUF_BASE, 1, ctypes.c_uint64)
    DMA_BUF_SET_NAME = _IOW(DMA_BUF_BASE, 1, ctypes.c_char_p)
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE = _IOWR(DMA_BUF_BASE, 2, dma_buf_export_sync_file)
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE = _IOW(DMA_BUF_BASE, 3, dma_buf_import_sync_file)


UDMABUF_CREATE = Ioctl.UDMABUF_CREATE
UDMABUF_CREATE_LIST = Ioctl.UDMABUF_CREATE_LIST
DMA_HEAP_IOCTL_ALLOC = Ioctl.DMA_HEAP_IOCTL_ALLOC
DMA_BUF_IOCTL_SYNC = Ioctl.DMA_BUF_IOCTL_SYNC
DMA_BUF_SET_NAME = Ioctl.DMA_BUF_SET_NAME
DMA_BUF_SET_NAME_A = Ioctl.DMA_BUF_SET_NAME_A
DMA_BUF_SET_NAME_B = Ioctl.DMA_BUF_SET_NAME_B
DMA_BUF_IOCTL_EXPORT_SYNC_FILE = Ioctl.DMA_BUF_IOCTL_EXPORT_SYNC_FILE
DMA_BUF_IOCTL_IMPORT_SYNC_FILE = Ioctl.DMA_BUF_IOCTL_IMPORT_SYNC_FILE


# ---- include/uapi/linux/vfio.h (VFIO dma-buf export; helper H, issue 16) ------------------------
# Only what exporting a PCI BAR range as a dma-buf needs: the container/group/device ioctls and
# VFIO_DEVICE_FEATURE with VFIO_DEVICE_FEATURE_DMA_BUF (6.19+). Every VFIO ioctl is _IO(';', N):
# the argument's size travels in its own `argsz` field, not in the request number.

VFIO_API_VERSION = 0
VFIO_TYPE = ";"
VFIO_BASE = 100
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3

VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1

VFIO_DEVICE_FEATURE_MASK = 0xFFFF
VFIO_DEVICE_FEATURE_GET = 1 << 16
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_PROBE = 1 << 18
VFIO_DEVICE_FEATURE_DMA_BUF = 11

# vfio-pci region indexes: BARs 0-5, then the ROM, config space and VGA
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7

VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2


class vfio_group_status(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    )


class vfio_region_info(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    )


class vfio_device_feature(ctypes.Structure):
    """The header only: the feature's own struct (`data[]`) follows it in the same buffer."""

    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 0),
    )


class vfio_region_dma_range(ctypes.Structure):
    _fields_ = (
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    )


class vfio_device_feature_dma_buf(ctypes.Structure):
    """The header only: `dma_ranges[nr_ranges]` follows it in the same buffer."""

    _fields_ = (
        ("region_index", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("nr_ranges", ctypes.c_uint32),
        ("dma_ranges", vfio_region_dma_range * 0),
    )


def vfio_device_feature_buffer(flags: int, payload: bytes = b"") -> bytearray:
    """A `vfio_device_feature` with `argsz` set, followed by the feature's payload."""
    head_size = ctypes.sizeof(vfio_device_feature)
    buf = bytearray(head_size + len(payload))
    head = vfio_device_feature.from_buffer(buf)
    head.argsz = len(buf)
    head.flags = flags
    buf[head_size:] = payload
    return buf


def vfio_dma_buf_payload(region_index: int, open_flags: int, ranges: list[tuple[int, int]]) -> bytes:
    """A `vfio_device_feature_dma_buf` followed by its ranges, each (offset, length)."""
    head_size = ctypes.sizeof(vfio_device_feature_dma_buf)
    range_size = ctypes.sizeof(vfio_region_dma_range)
    buf = bytearray(head_size + range_size * len(ranges))
    head = vfio_device_feature_dma_buf.from_buffer(buf)
    head.region_index = region_index
    head.open_flags = open_flags & 0xFFFFFFFF
    head.flags = 0
    head.nr_ranges = len(ranges)
    for i, (offset, length) in enumerate(ranges):
        item = vfio_region_dma_range.from_buffer(buf, head_size + i * range_size)
        item.offset = offset
        item.length = length
    return bytes(buf)


class VfioIoctl(IntEnum):
    """Request numbers of VFIO (its own enum: Ioctl above keeps the dma-buf ones)."""

    VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0)
    VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1)
    VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2)
    VFIO_GROUP_GET_STATUS = _IO(VFIO_TYPE, VFIO_BASE + 3)
    VFIO_GROUP_SET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE + 4)
    VFIO_GROUP_UNSET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE + 5)
    VFIO_GROUP_GET_DEVICE_FD = _IO(VFIO_TYPE, VFIO_BASE + 6)
    VFIO_DEVICE_GET_REGION_INFO = _IO(VFIO_TYPE, VFIO_BASE + 8)
    VFIO_DEVICE_FEATURE = _IO(VFIO_TYPE, VFIO_BASE + 17)


VFIO_GET_API_VERSION = VfioIoctl.VFIO_GET_API_VERSION
VFIO_CHECK_EXTENSION = VfioIoctl.VFIO_CHECK_EXTENSION
VFIO_SET_IOMMU = VfioIoctl.VFIO_SET_IOMMU
VFIO_GROUP_GET_STATUS = VfioIoctl.VFIO_GROUP_GET_STATUS
VFIO_GROUP_SET_CONTAINER = VfioIoctl.VFIO_GROUP_SET_CONTAINER
VFIO_GROUP_UNSET_CONTAINER = VfioIoctl.VFIO_GROUP_UNSET_CONTAINER
VFIO_GROUP_GET_DEVICE_FD = VfioIoctl.VFIO_GROUP_GET_DEVICE_FD
VFIO_DEVICE_GET_REGION_INFO = VfioIoctl.VFIO_DEVICE_GET_REGION_INFO
VFIO_DEVICE_FEATURE = VfioIoctl.VFIO_DEVICE_FEATURE
