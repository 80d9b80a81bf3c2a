"""uapi mirrors the kernel headers: request numbers, struct layouts and constants, pinned.

The hex values were checked against the C headers (`#include <linux/udmabuf.h>` etc. compiled
with gcc on x86-64) and against include/uapi/linux/{udmabuf,dma-heap,dma-buf}.h.
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
        (uapi.UDMABUF_CREATE, 0x40187542),
        (uapi.UDMABUF_CREATE_LIST, 0x40087543),
        (uapi.DMA_HEAP_IOCTL_ALLOC, 0xC0184800),
        (uapi.DMA_BUF_IOCTL_SYNC, 0x40086200),
        (uapi.DMA_BUF_SET_NAME_A, 0x40046201),
        (uapi.DMA_BUF_SET_NAME_B, 0x40086201),
        (uapi.DMA_BUF_IOCTL_EXPORT_SYNC_FILE, 0xC0086202),
        (uapi.DMA_BUF_IOCTL_IMPORT_SYNC_FILE, 0x40086203),
    ],
    ids=lambda v: v.name if isinstance(v, uapi.Ioctl) else hex(v),
)
def test_request_numbers_match_the_kernel(req: uapi.Ioctl, value: int) -> None:
    assert req == value
    assert uapi.Ioctl(value) == req


def test_set_name_is_the_pointer_sized_variant() -> None:
    # DMA_BUF_SET_NAME is _IOW('b', 1, const char *): _B on 64-bit machines, _A on 32-bit ones.
    expected = 0x40086201 if ctypes.sizeof(ctypes.c_void_p) == 8 else 0x40046201
    assert expected == uapi.DMA_BUF_SET_NAME


def test_every_request_is_named_in_the_enum() -> None:
    names = {e.name for e in uapi.Ioctl}
    assert {
        "UDMABUF_CREATE",
        "UDMABUF_CREATE_LIST",
        "DMA_HEAP_IOCTL_ALLOC",
        "DMA_BUF_IOCTL_SYNC",
        "DMA_BUF_SET_NAME_A",
        "DMA_BUF_SET_NAME_B",
        "DMA_BUF_IOCTL_EXPORT_SYNC_FILE",
        "DMA_BUF_IOCTL_IMPORT_SYNC_FILE",
    } <= names
    assert uapi.Ioctl(0x40187542).name == "UDMABUF_CREATE"


def test_ioc_helpers() -> None:
    assert uapi._IO("b", 7) == 0x6207
    assert uapi._IOR("b", 7, ctypes.c_uint32) == 0x80046207
    assert uapi._IOW("b", 7, ctypes.c_uint32) == 0x40046207
    assert uapi._IOWR("b", 7, ctypes.c_uint32) == 0xC0046207
    assert uapi._IOC(uapi._IOC_WRITE, ord("u"), 0x42, 24) == 0x40187542
    with pytest.raises(ValueError, match="does not fit"):
        uapi._IOC(uapi._IOC_WRITE, "u", 0x42, 1 << 14)


def _layout(cls: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    return [(name, getattr(cls, name).offset, getattr(cls, name).size) for name, *_ in cls._fields_]


@pytest.mark.parametrize(
    ("cls", "size", "layout"),
    [
        (
            uapi.udmabuf_create,
            24,
            [("memfd", 0, 4), ("flags", 4, 4), ("offset", 8, 8), ("size", 16, 8)],
        ),
        (
            uapi.udmabuf_create_item,
            24,
            [("memfd", 0, 4), ("__pad", 4, 4), ("offset", 8, 8), ("size", 16, 8)],
        ),
        (uapi.udmabuf_create_list, 8, [("flags", 0, 4), ("count", 4, 4), ("list", 8, 0)]),
        (
            uapi.dma_heap_allocation_data,
            24,
            [("len", 0, 8), ("fd", 8, 4), ("fd_flags", 12, 4), ("heap_flags", 16, 8)],
        ),
        (uapi.dma_buf_sync, 8, [("flags", 0, 8)]),
        (uapi.dma_buf_export_sync_file, 8, [("flags", 0, 4), ("fd", 4, 4)]),
        (uapi.dma_buf_import_sync_file, 8, [("flags", 0, 4), ("fd", 4, 4)]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_struct_layouts(cls: type[ctypes.Structure], size: int, layout: list[tuple[str, int, int]]) -> None:
    assert ctypes.sizeof(cls) == size
    assert _layout(cls) == layout


def test_sync_file_fd_is_signed() -> None:
    arg = uapi.dma_buf_export_sync_file(flags=0, fd=-1)
    assert arg.fd == -1


def test_constants() -> None:
    assert uapi.UDMABUF_FLAGS_CLOEXEC == 0x01
    assert uapi.DMA_HEAP_VALID_FD_FLAGS == os.O_CLOEXEC | 0o3 == 0x80003
    assert uapi.DMA_HEAP_VALID_HEAP_FLAGS == 0
    assert (uapi.DMA_BUF_SYNC_READ, uapi.DMA_BUF_SYNC_WRITE, uapi.DMA_BUF_SYNC_RW) == (1, 2, 3)
    assert (uapi.DMA_BUF_SYNC_START, uapi.DMA_BUF_SYNC_END) == (0, 4)
    assert uapi.DMA_BUF_SYNC_VALID_FLAGS_MASK == 7
    assert uapi.DMA_BUF_NAME_LEN == 32


def test_create_list_buffer_layout() -> None:
    buf = uapi.udmabuf_create_list_buffer(uapi.UDMABUF_FLAGS_CLOEXEC, [(5, 0, 4096), (6, 8192, 16384)])
    assert len(buf) == 8 + 2 * 24
    assert struct.unpack_from("=II", buf, 0) == (1, 2)
    assert struct.unpack_from("=IIQQ", buf, 8) == (5, 0, 0, 4096)
    assert struct.unpack_from("=IIQQ", buf, 32) == (6, 0, 8192, 16384)


def test_create_list_buffer_may_be_empty() -> None:
    assert uapi.udmabuf_create_list_buffer(0, []) == bytearray(8)
