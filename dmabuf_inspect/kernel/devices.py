"""Which dma-buf allocators this machine offers: the heaps of /dev/dma_heap and /dev/udmabuf.

Live, heaps come from udev (subsystem `dma_heap`), falling back to listing the directory; in
a capture, from the tree:

    dev/dma_heap/system                              (any file: only its name counts)
    dev/udmabuf
    sys/class/dma_heap/system/dev                    "253:0", when captured
    sys/module/udmabuf/parameters/size_limit_mb      "64"
    sys/module/udmabuf/parameters/list_limit         "1024"
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Any

from dmabuf_inspect.kernel.reader import listdir, read_text
from dmabuf_inspect.model import Heap, Udmabuf

HEAP_DIR = "dma_heap"
UDMABUF_DEVICE = "udmabuf"
UDMABUF_PARAMETERS = ("module", "udmabuf", "parameters")


def parse_dev_numbers(text: str) -> tuple[int, int] | None:
    """'253:0\\n' (a sysfs `dev` file) -> (253, 0); None if it is not that."""
    major, sep, minor = text.strip().partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


_local = threading.local()  # a libudev context is not to be shared between threads


def _udev_context() -> Any:
    import pyudev

    context = getattr(_local, "context", None)
    if context is None:
        context = _local.context = pyudev.Context()
    return context


def _heaps_from_udev(dev_root: str) -> tuple[Heap, ...]:
    try:
        import pyudev
    except ImportError:
        return ()
    heaps = []
    try:
        for device in _udev_context().list_devices(subsystem="dma_heap"):
            name = str(device.sys_name)
            number = device.device_number
            heaps.append(
                Heap(
                    name=name,
                    dev_path=str(device.device_node or os.path.join(dev_root, HEAP_DIR, name)),
                    major=os.major(number) if number else None,
                    minor=os.minor(number) if number else None,
                )
            )
    except (OSError, pyudev.DeviceNotFoundError):
        return ()
    return tuple(sorted(heaps, key=lambda h: h.name))


def _heap_numbers(dev_path: str, sys_root: str | None, name: str, *, live: bool) -> tuple[int, int] | None:
    if live:
        try:
            st = os.stat(dev_path)
        except OSError:
            st = None
        if st is not None and stat.S_ISCHR(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    if sys_root is None:
        return None
    try:
        text = read_text(sys_root, os.path.join(sys_root, "class", HEAP_DIR, name, "dev"), live=live)
    except OSError:
        return None
    return parse_dev_numbers(text)


def read_heaps(dev_root: str, *, live: bool, sys_root: str | None = None) -> tuple[Heap, ...]:
    """The dma-buf heaps, sorted by name; () when there are none (or no /dev/dma_heap)."""
    if live and os.path.realpath(dev_root) == "/dev":
        heaps = _heaps_from_udev(dev_root)
        if heaps:
            return heaps
    heap_dir = os.path.join(dev_root, HEAP_DIR)
    try:
        names = sorted(listdir(dev_root, heap_dir, live=live))
    except OSError:
        return ()
    out = []
    for name in names:
        dev_path = os.path.join(heap_dir, name)
        numbers = _heap_numbers(dev_path, sys_root, name, live=live)
        out.append(
            Heap(
                name=name,
                dev_path=dev_path,
                major=numbers[0] if numbers else None,
                minor=numbers[1] if numbers else None,
            )
        )
    return tuple(out)


def _read_int(sys_root: str, name: str, *, live: bool) -> int | None:
    path = os.path.join(sys_root, *UDMABUF_PARAMETERS, name)
    try:
        return int(read_text(sys_root, path, live=live).strip())
    except (OSError, ValueError):
        return None


def read_udmabuf(dev_root: str, sys_root: str, *, live: bool) -> Udmabuf:
    """Whether DEV_ROOT/udmabuf exists, and the module's size_limit_mb and list_limit."""
    dev_path = os.path.join(dev_root, UDMABUF_DEVICE)
    return Udmabuf(
        present=os.path.lexists(dev_path),
        dev_path=dev_path,
        size_limit_mb=_read_int(sys_root, "size_limit_mb", live=live),
        list_limit=_read_int(sys_root, "list_limit", live=live),
    )
