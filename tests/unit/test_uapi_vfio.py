"""uapi's VFIO section mirrors include/uapi/linux/vfio.h: request numbers, layouts, constants, pinned.

The request numbers and the sizes of vfio_group_status, vfio_region_info and vfio_device_feature
were checked against the C header (`#include <linux/vfio.h>` compiled with gcc on x86-64); the
dma-buf feature (VFIO_DEVICE_FEATURE_DMA_BUF 11, struct vfio_device_feature_dma_buf and
vfio_region_dma_range) against include/uapi/linux/vfio.h of 6.19.
"""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from dmabuf_inspect.ioctl import uapi


@pytest.mark.parametrize(
    ("req", "value"),
    [
        (uapi.VFIO_GET_API_VERSION, 0x3B64),
        (uapi.VFIO_CHECK_EXTENSION, 0x3B65),
        (uapi.VFIO_SET_IOMMU, 0x3B66),
        (uapi.VFIO_GROUP_GET_STATUS, 0x3B67),
        (uapi.VFIO_GROUP_SET_CONTAINER, 0x3B68),
        (uapi.VFIO_GROUP_UNSET_CONTAINER, 0x3B69),
        (uapi.VFIO_GROUP_GET_DEVICE_FD, 0x3B6A),
        (uapi.VFIO_DEVICE_GET_REGION_INFO, 0x3B6C),
        (uapi.VFIO_DEVICE_FEATURE, 0x3B75),
    ],
    ids=lambda v: v.name if isinstance(v, uapi.VfioIoctl) else hex(v),
)
def test_request_numbers_match_the_kernel(req: uapi.VfioIoctl, value: int) -> None:
    assert req == value
    assert uapi.VfioIoctl(value) == req


def test_vfio_requests_do_not_disturb_the_dma_buf_enum() -> None:
    assert not {e.value for e in uapi.VfioIoctl} & {e.value for e in uapi.Ioctl}
    assert "VFIO_DEVICE_FEATURE" not in uapi.Ioctl.__members__


def test_constants() -> None:
    assert uapi.VFIO_API_VERSION == 0
    assert uapi.VFIO_TYPE1v2_IOMMU == 3
    assert (uapi.VFIO_GROUP_FLAGS_VIABLE, uapi.VFIO_GROUP_FLAGS_CONTAINER_SET) == (1, 2)
    assert uapi.VFIO_DEVICE_FEATURE_MASK == 0xFFFF
    assert (uapi.VFIO_DEVICE_FEATURE_GET, uapi.VFIO_DEVICE_FEATURE_SET, uapi.VFIO_DEVICE_FEATURE_PROBE) == (
        0x10000,
        0x20000,
        0x40000,
    )
    assert uapi.VFIO_DEVICE_FEATURE_DMA_BUF == 11
    assert (uapi.VFIO_PCI_BAR5_REGION_INDEX, uapi.VFIO_PCI_ROM_REGION_INDEX) == (5, 6)


def _layout(cls: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    return [(name, getattr(cls, name).offset, getattr(cls, name).size) for name, *_ in cls._fields_]


@pytest.mark.parametrize(
    ("cls", "size", "layout"),
    [
        (uapi.vfio_group_status, 8, [("argsz", 0, 4), ("flags", 4, 4)]),
        (
            uapi.vfio_region_info,
            32,
            [
                ("argsz", 0, 4),
                ("flags", 4, 4),
                ("index", 8, 4),
                ("cap_offset", 12, 4),
                ("size", 16, 8),
                ("offset", 24, 8),
            ],
        ),
        (uapi.vfio_device_feature, 8, [("argsz", 0, 4), ("flags", 4, 4), ("data", 8, 0)]),
        (uapi.vfio_region_dma_range, 16, [("offset", 0, 8), ("length", 8, 8)]),
        (
            uapi.vfio_device_feature_dma_buf,
            16,
            [
                ("region_index", 0, 4),
                ("open_flags", 4, 4),
                ("flags", 8, 4),
                ("nr_ranges", 12, 4),
                ("dma_ranges", 16, 0),
            ],
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_struct_layouts(cls: type[ctypes.Structure], size: int, layout: list[tuple[str, int, int]]) -> None:
    assert ctypes.sizeof(cls) == size
    assert _layout(cls) == layout


def test_the_dma_buf_feature_buffer_is_what_the_kernel_reads() -> None:
    flags = uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF
    payload = uapi.vfio_dma_buf_payload(0, os.O_RDWR | os.O_CLOEXEC, [(0, 4096), (8192, 8192)])
    buf = uapi.vfio_device_feature_buffer(flags, payload)
    assert len(buf) == 8 + 16 + 2 * 16
    assert struct.unpack_from("<II", buf, 0) == (len(buf), 0x1000B)
    assert struct.unpack_from("<IIII", buf, 8) == (0, os.O_RDWR | os.O_CLOEXEC, 0, 2)
    assert struct.unpack_from("<QQQQ", buf, 24) == (0, 4096, 8192, 8192)


def test_a_probe_is_the_header_alone() -> None:
    buf = uapi.vfio_device_feature_buffer(
        uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF
    )
    assert bytes(buf) == struct.pack("<II", 8, 0x5000B)
