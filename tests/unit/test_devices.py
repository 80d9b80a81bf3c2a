"""The heaps a scan and `heaps` report: names from sysfs and /dev through the kernel reader, no udev."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paths import FIXTURES

from dmabuf_inspect.kernel.devices import heap_names, read_heaps
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Heap


def _tree(root: Path, dev: list[str], sys_heaps: dict[str, str]) -> Roots:
    (root / "proc").mkdir()
    (root / "dev" / "dma_heap").mkdir(parents=True)
    for name in dev:
        (root / "dev" / "dma_heap" / name).write_text("")
    for name, numbers in sys_heaps.items():
        d = root / "sys" / "class" / "dma_heap" / name
        d.mkdir(parents=True)
        (d / "dev").write_text(numbers)
    return Roots.from_tree(str(root))


def test_heaps_are_the_names_of_sysfs_and_dev_together(tmp_path: Path) -> None:
    roots = _tree(tmp_path, dev=["system", "only-dev"], sys_heaps={"system": "253:0\n", "linux,cma": "253:1\n"})
    assert heap_names(roots) == ["linux,cma", "only-dev", "system"]
    dev = str(tmp_path / "dev" / "dma_heap")
    assert read_heaps(roots) == (
        Heap("linux,cma", f"{dev}/linux,cma", 253, 1),
        Heap("only-dev", f"{dev}/only-dev", None, None),
        Heap("system", f"{dev}/system", 253, 0),
    )


def test_no_heap_directory_is_no_heaps(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    assert read_heaps(Roots.from_tree(str(tmp_path))) == ()


def test_a_capture_reads_the_same_heaps_as_before() -> None:
    heaps = read_heaps(Roots.from_tree(str(FIXTURES / "k7.3")))
    assert [(h.name, h.major is not None) for h in heaps] == [("linux,cma", True), ("system", True)]


def test_live_heaps_never_import_pyudev() -> None:
    # udev enumerates the same /sys/class/dma_heap; pyudev cost a cold `dump` 0.5-0.7 s under TCG.
    code = (
        "import sys\n"
        "from dmabuf_inspect.kernel.devices import read_heaps\n"
        "from dmabuf_inspect.kernel.reader import Roots\n"
        "read_heaps(Roots())\n"
        "print('pyudev' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"
