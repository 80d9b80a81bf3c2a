"""Kernel-lab tests: fixtures, and the guard that stops them passing for the wrong reason.

The tests marked `kernel` need root, /dev/udmabuf, /dev/dma_heap/system and debugfs: they run
inside the lab VM (`python3 tests/kernel/run_lab.py`). Outside it they never skip quietly when
asked for with `-m kernel`: they fail with the reason.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator

import pytest
import vfiolab
import vgem as vgem_lab  # tests/kernel is on sys.path: pytest inserts a conftest's directory

from dmabuf_inspect.kernel.bpf.source import BPFFS, fs_magic
from dmabuf_inspect.kernel.bpf.syscall import BPF_FS_MAGIC

# --- lab guard (helper-1) -------------------------------------------------------------------------

LAB_ENV = "DMABUF_INSPECT_LAB"  # set by run_lab.py inside the guest
_LAB_HINT = "kernel tests run inside the lab VM: python3 tests/kernel/run_lab.py"


def lab_problems() -> list[str]:
    """What this machine lacks to run the kernel group; empty inside the lab."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    for path in ("/dev/udmabuf", "/dev/dma_heap/system"):
        if not os.path.exists(path):
            problems.append(f"no {path}")
    if not os.path.exists("/sys/kernel/debug/dma_buf/bufinfo"):
        problems.append("no debugfs dma_buf/bufinfo")
    return problems


def _kernel_requested(config: pytest.Config) -> bool:
    """True when the run selected kernel tests on purpose (`-m kernel`, `-m "kernel and ..."`)."""
    markexpr = config.getoption("markexpr", default="") or ""
    return os.environ.get(LAB_ENV) == "1" or re.search(r"\bkernel\b", markexpr) is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    problems = lab_problems()
    if item.get_closest_marker("vfio") is not None:  # the IOMMU boot's group (helper H)
        problems += [f"{p}; the vfio group runs in run_lab.py --profile iommu" for p in vfiolab.problems()]
    if not problems:
        return
    message = f"kernel lab unavailable ({', '.join(problems)}); {_LAB_HINT}"
    if _kernel_requested(item.config):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- end of lab guard -----------------------------------------------------------------------------


# --- vgem card (helper-2: ioctl wrappers and selftest mirrors) ------------------------------------


@pytest.fixture(scope="session")
def vgem() -> Iterator[vgem_lab.Vgem]:
    """`modprobe vgem` once per session, then its /dev/dri/card* open (DRM_IOCTL_VERSION says "vgem")."""
    with vgem_lab.open_vgem() as card:
        yield card


# --- end of vgem card -----------------------------------------------------------------------------


# --- VFIO (helper H: the IOMMU boot's `vfio` group) ---------------------------------------------


@pytest.fixture(scope="session")
def edu() -> vfiolab.Edu:
    """qemu's edu device bound to vfio-pci (the IOMMU boot); fails, never skips, without it."""
    try:
        return vfiolab.bind_edu()
    except vfiolab.VfioLabError as exc:
        pytest.fail(f"VFIO lab: {exc}", pytrace=False)


# --- end of VFIO ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpffs() -> Iterator[str]:
    """/sys/fs/bpf mounted (the lab's guest may not have it) and open to others (0711), as an admin
    who pins for everyone would; put back as it was after the module."""
    try:
        mounted = fs_magic(BPFFS) == BPF_FS_MAGIC
    except OSError:
        mounted = False
    if not mounted:
        subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True)
    mode = stat.S_IMODE(os.stat(BPFFS).st_mode)
    os.chmod(BPFFS, 0o711)
    try:
        yield BPFFS
    finally:
        os.chmod(BPFFS, mode)
        if not mounted:
            subprocess.run(["umount", BPFFS], check=True)
