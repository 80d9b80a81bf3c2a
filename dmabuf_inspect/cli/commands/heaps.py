"""List the dma-buf heaps (/dev/dma_heap) and whether udmabuf is there, with its limits.

Also whether heap pages are charged to memory cgroups (dma_heap.mem_accounting, 7.0+).
"""

from __future__ import annotations

import argparse
import os

from dmabuf_inspect.kernel.cgroup import read_mem_accounting
from dmabuf_inspect.kernel.devices import read_heaps, read_udmabuf
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Heap, Udmabuf
from dmabuf_inspect.scan.views import heap_entries, udmabuf_entry
from dmabuf_inspect.textsafe import escape

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

NAME = "heaps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def heaps_to_dict(heaps: tuple[Heap, ...], udmabuf: Udmabuf, mem_accounting: bool | None = None) -> dict[str, Any]:
    """The `heaps --json` document: the same heap, udmabuf and mem_accounting entries as `dump` has."""
    return {"heaps": heap_entries(heaps), "udmabuf": udmabuf_entry(udmabuf), "mem_accounting": mem_accounting}


def mem_accounting_text(value: bool | None, *, live: bool) -> str:
    """dma_heap.mem_accounting (7.0+) in one line."""
    if value is True:
        return "mem_accounting: on (dma-buf heap pages are charged to the allocating task's memory cgroup)"
    if value is False:
        return (
            "mem_accounting: off (dma-buf heap pages are charged to no memory cgroup; "
            "boot with dma_heap.mem_accounting=1 to charge them)"
        )
    if live:
        return "mem_accounting: not in this kernel (dma_heap.mem_accounting: 7.0+)"
    return "mem_accounting: not in this capture (a kernel before 7.0, or captured without it)"


def _number(value: int | None, unit: str = "") -> str:
    return "?" if value is None else f"{value}{unit}"


def format_heaps(heaps: tuple[Heap, ...], udmabuf: Udmabuf, dev_root: str) -> list[str]:
    lines = []
    if heaps:
        rows = [("HEAP", "DEVICE", "MAJ:MIN")]
        for heap in heaps:
            numbers = "-" if heap.major is None else f"{heap.major}:{heap.minor}"
            rows.append((escape(heap.name), escape(heap.dev_path), numbers))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    else:
        heap_dir = escape(os.path.join(dev_root, "dma_heap"))
        lines.append(
            f"no dma-buf heaps: {heap_dir} is missing or empty "
            "(a kernel without CONFIG_DMABUF_HEAPS, or no heap driver such as CONFIG_DMABUF_HEAPS_SYSTEM)"
        )
    lines.append("")
    if udmabuf.present:
        lines.append(
            f"udmabuf: {escape(udmabuf.dev_path)}  size_limit_mb {_number(udmabuf.size_limit_mb)}  "
            f"list_limit {_number(udmabuf.list_limit)}"
        )
    else:
        lines.append(
            f"udmabuf: no {escape(udmabuf.dev_path)} "
            "(a kernel without CONFIG_UDMABUF, or the module is not loaded: modprobe udmabuf)"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    roots: Roots = args.roots
    heaps = read_heaps(roots)
    udmabuf = read_udmabuf(roots)
    mem_accounting = read_mem_accounting(roots.sys)
    if getattr(args, "json", False):
        import json  # only here: `heaps` alone never pays for the json module

        print(json.dumps(heaps_to_dict(heaps, udmabuf, mem_accounting), indent=2))
    else:
        print("\n".join(format_heaps(heaps, udmabuf, roots.dev_root)))
        print(mem_accounting_text(mem_accounting, live=roots.live))
    return 0
