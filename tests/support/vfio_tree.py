"""A captured tree with VFIO dma-bufs, in the format the 7.3 lab printed: what
tests/unit/test_vfio_snapshot.py and the CLI tests read.

    100 p2p-app      holds edu (0000:00:03.0) open; buffers 501 (vfio, 4 KiB, shared with 200),
                     502 (vfio, 12 KiB: two ranges) and 503 (system heap, 8 KiB, shared with 200)
    200 importer     501 and 503, passed over a socket; no VFIO device
    300 two-devices  two VFIO devices open (edu and 0000:00:04.0): 504's device is not told
    400 old-fdinfo   a device fd whose fdinfo names no device (as before 6.15): 505
    500 no-device    506 (64 KiB) and no VFIO device at all

Their cgroups (CGROUPS): 100 in p2p.service, 200 in a docker container, 300 and 400 in a user
session, 500 unknown (no cgroup file). VFIO_CGROUPS has the per-cgroup figures, by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

EDU = "/sys/devices/pci0000:00/0000:00:03.0"
OTHER = "/sys/devices/pci0000:00/0000:00:04.0"
VFIO_ANON = "anon_inode:[vfio-device]"
BTIME_STAT = "cpu  1000 0 500 90000 100 0 20 0 0 0\nbtime 1732230000\nprocesses 4000\n"


def dmabuf_fdinfo(ino: int, size: int, exporter: str, count: int) -> str:
    return (
        f"pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t{ino}\nsize:\t{size}\ncount:\t{count}\n"
        f"exp_name:\t{exporter}\nname:\t\n"
    )


def device_fdinfo(syspath: str | None) -> str:
    line = f"vfio-device-syspath: {syspath}\n" if syspath else ""
    return f"pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1045\n{line}"


DOCKER_ID = "5b2e3c8d9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0"
P2P = "/system.slice/p2p.service"
DOCKER = f"/system.slice/docker-{DOCKER_ID}.scope"
SESSION = "/user.slice/user-1000.slice/session-3.scope"
CGROUPS = {100: P2P, 200: DOCKER, 300: SESSION, 400: SESSION}


class VfioCg(NamedTuple):
    path: str | None
    unit: str | None
    processes: int
    buffers: int
    bytes: int
    pss_bytes: int
    shared_buffers: int
    shared_bytes: int
    device_bytes: int
    device_pss_bytes: int


# 501 (vfio 4 KiB) and 503 (heap 8 KiB) are held by 100 and 200: shared by p2p.service and the
# container, half each in Pss. Largest bytes first.
VFIO_CGROUPS = [
    VfioCg(None, None, 1, 1, 65536, 65536, 0, 0, 65536, 65536),  # 500: 506
    VfioCg(P2P, "p2p.service", 1, 3, 4096 + 12288 + 8192, 2048 + 12288 + 4096, 2, 4096 + 8192, 16384, 2048 + 12288),
    VfioCg(DOCKER, "docker:5b2e3c8d9f0a", 1, 2, 4096 + 8192, 2048 + 4096, 2, 4096 + 8192, 4096, 2048),
    VfioCg(SESSION, "session-3.scope (uid 1000)", 2, 2, 8192, 8192, 0, 0, 8192, 8192),  # 504, 505
]


def write_process(root: Path, pid: int, comm: str, fds: dict[int, tuple[str, str]], cgroup: str | None = None) -> None:
    d = root / "proc" / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "fdinfo").mkdir()
    for fd, (target, info) in fds.items():
        os.symlink(target, d / "fd" / str(fd))
        (d / "fdinfo" / str(fd)).write_text(info)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(comm.encode() + b"\0")
    (d / "maps").write_text("")
    (d / "stat").write_text(
        f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4000 0 0 "
        "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    )
    (d / "status").write_text(f"Name:\t{comm}\nPid:\t{pid}\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    if cgroup is not None:
        (d / "cgroup").write_text(f"0::{cgroup}\n")


BUFINFO = (
    "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
    "00004096\t00000002\t00080007\t00000002\tvfio_pci_core\t00000501\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "00012288\t00000002\t00080007\t00000001\tvfio_pci_core\t00000502\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "00008192\t00000002\t00080007\t00000002\tsystem\t00000503\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "00004096\t00000002\t00080007\t00000001\tvfio_pci_core\t00000504\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "00004096\t00000002\t00080007\t00000001\tvfio_pci_core\t00000505\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "00065536\t00000002\t00080007\t00000001\tvfio_pci_core\t00000506\t<none>\n\tAttached Devices:\n"
    "Total 0 devices attached\n\n"
    "\nTotal 6 objects, 98304 bytes\n"
)


def write_vfio_tree(root: Path) -> Path:
    """Write the tree under `root` (an empty folder) and return it."""
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("7.3.4+deb13-amd64\n")
    (root / "proc/stat").write_text(BTIME_STAT)
    (root / "sys/kernel/debug/dma_buf").mkdir(parents=True)
    (root / "sys/kernel/debug/dma_buf/bufinfo").write_text(BUFINFO)
    (root / "dev").mkdir()
    # 100: the exporter; it holds edu open, a one-range and a two-range buffer, and a heap buffer
    write_process(
        root,
        100,
        "p2p-app",
        {
            3: ("/dev/vfio/vfio", "pos:\t0\n"),
            4: ("/dev/vfio/3", "pos:\t0\n"),
            5: (VFIO_ANON, device_fdinfo(EDU)),
            6: ("/dmabuf:", dmabuf_fdinfo(501, 4096, "vfio_pci_core", 2)),
            7: ("/dmabuf:", dmabuf_fdinfo(502, 12288, "vfio_pci_core", 1)),
            8: ("/dmabuf:", dmabuf_fdinfo(503, 8192, "system", 2)),
        },
    )
    # 200: got 501 and 503 passed over a socket; holds no VFIO device
    write_process(
        root,
        200,
        "importer",
        {
            3: ("/dmabuf:", dmabuf_fdinfo(503, 8192, "system", 2)),
            4: ("/dmabuf:", dmabuf_fdinfo(501, 4096, "vfio_pci_core", 2)),
        },
    )
    # 300: two VFIO devices open: which one exported 504 is not told
    write_process(
        root,
        300,
        "two-devices",
        {
            5: (VFIO_ANON, device_fdinfo(EDU)),
            6: ("/dev/vfio/devices/vfio1", device_fdinfo(OTHER)),
            7: ("/dmabuf:", dmabuf_fdinfo(504, 4096, "vfio_pci_core", 1)),
        },
    )
    # 400: a device fd whose fdinfo names no device (as before 6.15)
    write_process(
        root,
        400,
        "old-fdinfo",
        {5: (VFIO_ANON, device_fdinfo(None)), 6: ("/dmabuf:", dmabuf_fdinfo(505, 4096, "vfio_pci_core", 1))},
    )
    # 500: holds 506 and no VFIO device at all
    write_process(root, 500, "no-device", {6: ("/dmabuf:", dmabuf_fdinfo(506, 65536, "vfio_pci_core", 1))})
    for pid, path in CGROUPS.items():
        (root / "proc" / str(pid) / "cgroup").write_text(f"0::{path}\n")
    return root
