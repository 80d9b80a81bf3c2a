"""Which dma-buf allocators this machine offers: the heaps of /dev/dma_heap and /dev/udmabuf.

The heaps are the names under /sys/class/dma_heap and /dev/dma_heap (read through the kernel
reader, live or captured: no udev), with their device numbers; in a capture, from the tree:

    dev/dma_heap/system                              (any file: only its name counts)
    dev/udmabuf
    sys/class/dma_heap/system/dev                    "253:0", when captured
    sys/module/udmabuf/parameters/size_limit_mb      "64"
    sys/module/udmabuf/parameters/list_limit         "1024"
"""

from __future__ import annotations

import os
import stat

from dmabuf_inspect.kernel.reader import Roots, Tree
from dmabuf_inspect.model import Heap, Udmabuf

HEAP_DIR = "dma_heap"
UDMABUF_DEVICE = "udmabuf"
UDMABUF_PARAMETERS = "module/udmabuf/parameters"
UDMABUF_PARAMETER_NAMES = ("size_limit_mb", "list_limit")


def parse_dev_numbers(text: str) -> tuple[int, int] | None:
    """'253:0\\n' (a sysfs `dev` file) -> (253, 0); None if it is not that."""
    major, sep, minor = text.strip().partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _heap_numbers(roots: Roots, name: str) -> tuple[int, int] | None:
    if roots.live:
        try:
            st = roots.dev.stat(f"{HEAP_DIR}/{name}")
        except OSError:
            st = None
        if st is not None and stat.S_ISCHR(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    try:
        text = roots.sys.read_text(f"class/{HEAP_DIR}/{name}/dev", limit=64)
    except OSError:
        return None
    return parse_dev_numbers(text)


def heap_names(roots: Roots) -> list[str]:
    """The names of the heaps, sorted: those under SYS/class/dma_heap (every heap the kernel
    registered) and those under DEV/dma_heap (a capture may hold only these). Two directory reads,
    no udev: libudev enumerates the same sysfs directory, and pyudev cost a cold `dump` 0.5-0.7 s
    of its 5 s under TCG."""
    names: set[str] = set()
    for tree, path in ((roots.dev, HEAP_DIR), (roots.sys, f"class/{HEAP_DIR}")):
        try:
            found = tree.listdir(path)
        except OSError:
            continue  # no contextlib on the scan path (tests/unit/test_cli_imports.py)
        names.update(found)
    return sorted(names)


def read_heaps(roots: Roots) -> tuple[Heap, ...]:
    """The dma-buf heaps, sorted by name; () when there are none. A heap's numbers come from its
    device node (live) or from sysfs `class/dma_heap/NAME/dev`; None where neither tells."""
    out = []
    for name in heap_names(roots):
        numbers = _heap_numbers(roots, name)
        out.append(
            Heap(
                name=name,
                dev_path=roots.dev.path(f"{HEAP_DIR}/{name}"),
                major=numbers[0] if numbers else None,
                minor=numbers[1] if numbers else None,
            )
        )
    return tuple(out)


def read_udmabuf_param(sys: Tree, name: str) -> int | None:
    """A udmabuf module parameter (`size_limit_mb`, `list_limit`) under the /sys tree `sys`; None
    where absent, unreadable or not a number. The one reader of these files."""
    try:
        text = sys.read_text(f"{UDMABUF_PARAMETERS}/{name}", limit=64).strip()
    except OSError:
        return None
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        return None  # int() would take "+5", "1_000" and non-ASCII digits
    return int(text)


def read_udmabuf(roots: Roots) -> Udmabuf:
    """Whether DEV_ROOT/udmabuf exists, and the module's size_limit_mb and list_limit."""
    return Udmabuf(
        present=roots.dev.lexists(UDMABUF_DEVICE),
        dev_path=roots.dev.path(UDMABUF_DEVICE),
        size_limit_mb=read_udmabuf_param(roots.sys, "size_limit_mb"),
        list_limit=read_udmabuf_param(roots.sys, "list_limit"),
    )
