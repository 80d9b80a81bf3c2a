"""/proc/PID/cgroup parsing and the unit a cgroup path stands for (kernel/cgroup.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_inspect.kernel.cgroup import (
    CONTAINER,
    POD,
    SCOPE,
    SERVICE,
    SESSION,
    USER_UNIT,
    ProcCgroup,
    Unit,
    parse_proc_cgroup,
    read_cgroups,
    read_mem_accounting,
    unit_of,
)
from dmabuf_inspect.kernel.reader import Roots, Tree

ID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
ID2 = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
POD_UID = "a6537f3e-228a-4833-91d0-d5889163f4e2"
POD_US = POD_UID.replace("-", "_")
USER = "/user.slice/user-1000.slice"


# ---- parse_proc_cgroup ---------------------------------------------------------------------------


def test_pure_v2() -> None:
    assert parse_proc_cgroup(b"0::/system.slice/weston.service\n") == ProcCgroup("/system.slice/weston.service")


def test_root_and_namespaced_paths_are_kept_as_printed() -> None:
    assert parse_proc_cgroup(b"0::/\n").path == "/"
    assert parse_proc_cgroup(b"0::/../../system.slice/foo.service\n").path == "/../../system.slice/foo.service"


def test_hybrid_counts_the_v1_lines_and_takes_the_v2_path() -> None:
    text = (
        b"12:cpuset:/\n11:memory:/user.slice/user-1000.slice/session-3.scope\n"
        b"2:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n"
        b"0::/user.slice/user-1000.slice/session-3.scope\n"
    )
    assert parse_proc_cgroup(text) == ProcCgroup("/user.slice/user-1000.slice/session-3.scope", False, 4)


def test_v1_only_has_no_v2_path_and_says_so() -> None:
    got = parse_proc_cgroup(b"12:cpuset:/\n1:name=systemd:/system.slice/sshd.service\n")
    assert got.path is None and got.v1_hierarchies == 2
    assert got.why is not None and "v1 only" in got.why


def test_empty_and_garbage() -> None:
    assert parse_proc_cgroup(b"") == ProcCgroup(None, why="empty")
    got = parse_proc_cgroup(b"not a cgroup file\n")
    assert got.path is None and got.v1_hierarchies == 0 and got.why == "no cgroup v2 line"


def test_deleted_suffix_is_taken_off_and_flagged() -> None:
    got = parse_proc_cgroup(b"0::/system.slice/gone.service (deleted)\n")
    assert got == ProcCgroup("/system.slice/gone.service", deleted=True)


def test_a_newline_in_the_path_stays_in_the_path() -> None:
    # The kernel prints the path raw and 0:: last: a hostile name cannot make a second v2 line.
    text = b"0::/user.slice/user-1000.slice/user@1000.service/x\n0::/system.slice/sshd.service\n"
    got = parse_proc_cgroup(text)
    assert got.path == "/user.slice/user-1000.slice/user@1000.service/x\n0::/system.slice/sshd.service"
    # Cgroups below user@1000.service are the user's to name: what they name stays the user's.
    assert unit_of(got.path) == Unit(USER_UNIT, "sshd.service", uid=1000)
    assert unit_of(got.path).text == "sshd.service (uid 1000)"  # type: ignore[union-attr]


def test_invalid_utf8_is_kept_byte_for_byte() -> None:
    got = parse_proc_cgroup(b"0::/system.slice/\xff\xfe.service\n")
    assert got.path is not None
    assert os.fsencode(got.path) == b"/system.slice/\xff\xfe.service"
    assert unit_of(got.path) is None  # no unit name has such bytes


def test_str_input_is_accepted() -> None:
    assert parse_proc_cgroup("0::/init.scope\n").path == "/init.scope"


@given(st.binary(max_size=300))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    got = parse_proc_cgroup(data)
    assert (got.path is None) == (got.why is not None)
    unit_of(got.path)


@given(st.binary(max_size=200).filter(lambda b: not b.endswith(b" (deleted)")))
def test_any_v2_path_comes_back_exactly(path: bytes) -> None:
    got = parse_proc_cgroup(b"3:cpu:/\n0::" + path + b"\n")
    assert got.path is not None and os.fsencode(got.path) == path


# ---- unit_of -----------------------------------------------------------------------------------------

UNITS: list[tuple[str, Unit | None, str | None]] = [
    # systemd services and scopes
    ("/system.slice/nginx.service", Unit(SERVICE, "nginx.service"), "nginx.service"),
    ("/system.slice/system-getty.slice/getty@tty1.service", Unit(SERVICE, "getty@tty1.service"), "getty@tty1.service"),
    ("/init.scope", Unit(SCOPE, "init.scope"), "init.scope"),
    (
        "/system.slice/systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        Unit(SERVICE, "systemd-fsck@dev-disk-by\\x2duuid-1234.service"),
        "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
    ),
    ("/system.slice/docker.service", Unit(SERVICE, "docker.service"), "docker.service"),
    ("/system.slice/libpod-conmon-" + ID + ".scope", Unit(SCOPE, "libpod-conmon-" + ID + ".scope"), None),
    # a service's own sub-cgroups (delegation): the service
    ("/system.slice/foo.service/payload/worker", Unit(SERVICE, "foo.service"), "foo.service"),
    # user sessions and the user's systemd
    (f"{USER}/session-3.scope", Unit(SESSION, "session-3.scope", uid=1000), "session-3.scope (uid 1000)"),
    (f"{USER}/session-c1.scope", Unit(SESSION, "session-c1.scope", uid=1000), "session-c1.scope (uid 1000)"),
    (f"{USER}/user@1000.service", Unit(SERVICE, "user@1000.service", uid=1000), "user@1000.service"),
    (f"{USER}/user@1000.service/init.scope", Unit(SERVICE, "user@1000.service", uid=1000), "user@1000.service"),
    (
        f"{USER}/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-8a1b.scope",
        Unit(USER_UNIT, "vte-spawn-8a1b.scope", uid=1000),
        "vte-spawn-8a1b.scope (uid 1000)",
    ),
    (
        f"{USER}/user@1000.service/session.slice/org.gnome.Shell@wayland.service",
        Unit(USER_UNIT, "org.gnome.Shell@wayland.service", uid=1000),
        "org.gnome.Shell@wayland.service (uid 1000)",
    ),
    (
        f"{USER}/user@1000.service/app.slice/app-gnome-firefox\\x2desr-4242.scope",
        Unit(USER_UNIT, "app-gnome-firefox\\x2desr-4242.scope", uid=1000),
        None,
    ),
    # docker: systemd and cgroupfs drivers; rootless under the user's systemd
    (f"/system.slice/docker-{ID}.scope", Unit(CONTAINER, ID, "docker"), "docker:4f797c539e6c"),
    (f"/docker/{ID}", Unit(CONTAINER, ID, "docker"), "docker:4f797c539e6c"),
    (f"{USER}/user@1000.service/user.slice/docker-{ID}.scope", Unit(CONTAINER, ID, "docker", uid=1000), None),
    # systemd inside a container: the container
    (f"/system.slice/docker-{ID}.scope/init.scope", Unit(CONTAINER, ID, "docker"), None),
    # podman: rootful, its container sub-cgroup, split mode, cgroupfs, rootless
    (f"/machine.slice/libpod-{ID}.scope", Unit(CONTAINER, ID, "podman"), "podman:4f797c539e6c"),
    (f"/machine.slice/libpod-{ID}.scope/container", Unit(CONTAINER, ID, "podman"), None),
    (f"/machine.slice/libpod-payload-{ID}", Unit(CONTAINER, ID, "podman"), None),
    (f"/libpod_parent/libpod-{ID}", Unit(CONTAINER, ID, "podman"), None),
    (f"/libpod_parent/{ID}", Unit(CONTAINER, ID, "podman"), None),
    (f"{USER}/user@1000.service/user.slice/libpod-{ID}.scope", Unit(CONTAINER, ID, "podman", uid=1000), None),
    # containerd and CRI-O, outside Kubernetes
    (f"/system.slice/cri-containerd-{ID}.scope", Unit(CONTAINER, ID, "containerd"), "containerd:4f797c539e6c"),
    (f"/default/{ID}", Unit(CONTAINER, ID), "container:4f797c539e6c"),
    # kubepods: systemd driver (QoS slices, pod uid with underscores), cgroupfs driver
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/cri-containerd-{ID}.scope",
        Unit(CONTAINER, ID, "containerd", pod_uid=POD_UID),
        f"containerd:4f797c539e6c (pod {POD_UID})",
    ),
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_US}.slice/crio-{ID}.scope",
        Unit(CONTAINER, ID, "cri-o", pod_uid=POD_UID),
        f"cri-o:4f797c539e6c (pod {POD_UID})",
    ),
    (
        f"/kubepods.slice/kubepods-pod{POD_US}.slice/cri-containerd-{ID}.scope",
        Unit(CONTAINER, ID, "containerd", pod_uid=POD_UID),
        None,
    ),
    (
        f"/kubepods.slice/kubepods-pod{POD_US}.slice/docker-{ID}.scope",
        Unit(CONTAINER, ID, "docker", pod_uid=POD_UID),
        None,
    ),
    (
        f"/kubepods/burstable/pod{POD_UID}/{ID}",
        Unit(CONTAINER, ID, pod_uid=POD_UID),
        f"container:4f797c539e6c (pod {POD_UID})",
    ),
    (f"/kubepods/pod{POD_UID}/{ID2}", Unit(CONTAINER, ID2, pod_uid=POD_UID), None),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice",
        Unit(POD, f"pod{POD_UID}", pod_uid=POD_UID),
        f"pod {POD_UID}",
    ),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/crio-conmon-{ID}.scope",
        Unit(POD, f"pod{POD_UID}", pod_uid=POD_UID),
        None,
    ),
    # LXC and systemd-machined
    ("/lxc.payload.web1", Unit(CONTAINER, "web1", "lxc"), "lxc:web1"),
    ("/lxc.payload.web1/init.scope", Unit(CONTAINER, "web1", "lxc"), None),
    (
        "/machine.slice/machine-debian\\x2d12.scope",
        Unit(CONTAINER, "debian\\x2d12", "machine"),
        "machine:debian\\x2d12",
    ),
    ("/machine.slice/systemd-nspawn@deb.service", Unit(SERVICE, "systemd-nspawn@deb.service"), None),
    # no unit: the root, slices, plain directories, v1-only (None)
    ("/", None, None),
    ("/user.slice", None, None),
    ("/system.slice", None, None),
    (USER, None, None),
    ("/kubepods.slice/kubepods-burstable.slice", None, None),
    ("/mygroup/sub", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("path", "unit", "text"), UNITS, ids=[p or "<empty>" for p, _, _ in UNITS])
def test_unit_of(path: str, unit: Unit | None, text: str | None) -> None:
    got = unit_of(path)
    assert got == unit
    if text is not None:
        assert got is not None and got.text == text


def test_unit_of_none() -> None:
    assert unit_of(None) is None


HOSTILE = [
    "/system.slice/x\n.service",  # a newline in a unit-like name: no unit
    "/system.slice/\x1b]0;pwned\x07.service",
    "/system.slice/a b.service",
    "/system.slice/\udcff.service",  # a byte that is not UTF-8
    f"/system.slice/docker-{ID}.scope\n",
    f"/docker/{ID}\n",
    f"/docker/{ID.upper()}",  # ids are lower-case hex
    f"/docker/{ID[:-1]}",
    "/" + "a" * 300 + ".service",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_components_are_never_units(path: str) -> None:
    assert unit_of(path) is None


def test_a_unit_named_cgroup_below_a_unit_never_impersonates_it() -> None:
    # A service with Delegate=yes names its sub-cgroups as it likes; the service still owns them.
    assert unit_of("/system.slice/foo.service/\n0::/sshd.service") == Unit(SERVICE, "foo.service")
    assert unit_of(f"/system.slice/foo.service/docker-{ID}.scope") == Unit(SERVICE, "foo.service")
    assert unit_of(f"/system.slice/foo.service/{ID}") == Unit(SERVICE, "foo.service")
    assert unit_of(f"{USER}/session-3.scope/\x1b[2J") == Unit(SESSION, "session-3.scope", uid=1000)


@given(st.text(max_size=200))
def test_unit_of_any_text_does_not_raise(path: str) -> None:
    unit = unit_of(path)
    if unit is not None:
        assert unit.text.isprintable()


# ---- reading ---------------------------------------------------------------------------------------------


def test_read_cgroups_of_a_tree(tmp_path: Path) -> None:
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "cgroup").write_bytes(b"0::/system.slice/a.service\n")
    (tmp_path / "11").mkdir()  # captured without its cgroup file
    got = read_cgroups(Tree(str(tmp_path), live=False), [10, 11])
    assert got[10] == ProcCgroup("/system.slice/a.service")
    assert got[11].path is None and got[11].why is not None and "/proc/11/cgroup" in got[11].why


def test_read_cgroups_live_skips_vanished_processes() -> None:
    proc = Roots().proc
    got = read_cgroups(proc, [os.getpid(), 2**22 + 12345])  # above pid_max: never a process
    assert list(got) == [os.getpid()]
    with open("/proc/self/cgroup", "rb") as f:
        assert got[os.getpid()] == parse_proc_cgroup(f.read())


@pytest.mark.parametrize(("text", "want"), [(b"Y\n", True), (b"N\n", False), (b"1\n", True), (b"?\n", None)])
def test_mem_accounting(tmp_path: Path, text: bytes, want: bool | None) -> None:
    params = tmp_path / "module" / "dma_heap" / "parameters"
    params.mkdir(parents=True)
    (params / "mem_accounting").write_bytes(text)
    assert read_mem_accounting(Tree(str(tmp_path), live=False)) is want


def test_mem_accounting_absent_before_7_0(tmp_path: Path) -> None:
    assert read_mem_accounting(Tree(str(tmp_path), live=False)) is None
