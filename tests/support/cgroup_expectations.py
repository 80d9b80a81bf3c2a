"""The per-cgroup figures of fixtures/cgroups-*, computed by hand from the trees' READMEs.

Pss: each buffer's size divided (floor) by its number of holders, summed over the processes of
the cgroup. `bytes` counts each buffer once within the cgroup; `shared_bytes` is the part that
another cgroup holds too.
"""

from __future__ import annotations

from typing import NamedTuple

MIB = 1 << 20
KIB = 1 << 10
DOCKER_ID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
CONTAINERD_ID = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
PODMAN_ID = "0d5ec4ea2b4f8d1e6a7c3b9f0e2d4c6a8b1f3e5d7c9a0b2d4f6e8a1c3b5d7f90"
POD = "a6537f3e-228a-4833-91d0-d5889163f4e2"


class Cg(NamedTuple):
    path: str | None
    unit: str | None
    processes: int
    buffers: int
    bytes: int
    pss_bytes: int
    shared_buffers: int
    shared_bytes: int
    shared_inodes: tuple[int, ...]


# cgroups-services: A=40001 4 MiB (500, 501, 900), B=40002 2 MiB (500), C=40003 16 MiB (900, 1500),
# D=40004 1 MiB (1500, two fds), E=40005 64 KiB (1500, mapping only), F=40006 8 MiB (kernel only),
# G=40007 512 KiB (1100). A's share: 4194304 // 3 = 1398101; C's: 8388608.
SERVICES_TOTALS = {"buffers": 7, "bytes": 33095680, "userspace_bytes": 24707072, "kernel_only_bytes": 8 * MIB}
SERVICES = [
    Cg(
        "/user.slice/user-1000.slice/session-2.scope",
        "session-2.scope (uid 1000)",
        1,
        2,
        20 * MIB,  # A + C
        1398101 + 8 * MIB,
        2,
        20 * MIB,  # A (camera-daemon) and C (the container)
        (40001, 40003),
    ),
    Cg(
        f"/system.slice/docker-{DOCKER_ID}.scope",
        "docker:4f797c539e6c",
        1,
        3,
        16 * MIB + 1 * MIB + 64 * KIB,  # C + D + E
        8 * MIB + 1 * MIB + 64 * KIB,
        1,
        16 * MIB,  # C (the session)
        (40003,),
    ),
    Cg(
        "/system.slice/camera-daemon.service",
        "camera-daemon.service",
        2,
        2,
        6 * MIB,  # A once (500 and 501 both hold it) + B
        2 * 1398101 + 2 * MIB,
        1,
        4 * MIB,  # A (the session)
        (40001,),
    ),
    Cg(
        "/user.slice/user-1000.slice/user@1000.service/session.slice/pipewire.service",
        "pipewire.service (uid 1000)",
        1,
        1,
        512 * KIB,
        512 * KIB,
        0,
        0,
        (),
    ),
]

# cgroups-hostile: H1=50001 1 MiB (300, 301), H2=50002 2 MiB (301, 302), H3=50003 3 MiB (302, 303),
# H4=50004 4 MiB (304). 302 (v1 only) and 303 (no cgroup file) are both unknown: one group, so
# H3 is not shared, and H2 is shared between the kubepods container and the unknown group.
HOSTILE_TOTALS = {"buffers": 4, "bytes": 10 * MIB, "userspace_bytes": 10 * MIB, "kernel_only_bytes": 0}
HOSTILE = [
    Cg(None, None, 2, 2, 5 * MIB, 1 * MIB + 3 * MIB, 1, 2 * MIB, (50002,)),
    Cg(f"/machine.slice/libpod-{PODMAN_ID}.scope/container", "podman:0d5ec4ea2b4f", 1, 1, 4 * MIB, 4 * MIB, 0, 0, ()),
    Cg(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        + POD.replace("-", "_")
        + f".slice/cri-containerd-{CONTAINERD_ID}.scope",
        f"containerd:9ec39b91f3d7 (pod {POD})",
        1,
        2,
        3 * MIB,
        512 * KIB + 1 * MIB,
        2,
        3 * MIB,
        (50001, 50002),
    ),
    Cg("/system.slice/bad\n0::\udcff.service", None, 1, 1, 1 * MIB, 512 * KIB, 1, 1 * MIB, (50001,)),
]
HOSTILE_COMM = 'ev"il\n\\x\udcff'  # pid 300's comm, as decoded with surrogateescape
HOSTILE_EXPORTER = 'ev"il\\\x1bexp'
HOSTILE_HEAP = 'we"ird\\heap'
