"""Which cgroup a process is in, and the unit, session or container that cgroup stands for.

`/proc/PID/cgroup` has one line per hierarchy, `ID:CONTROLLERS:PATH`; the unified (v2) one is
`0::PATH`. A pure v2 machine prints that line alone; a hybrid one prints its v1 lines first:

    0::/system.slice/weston.service                                  (v2)
    12:cpuset:/                                                      (hybrid: v1 lines, then 0::)
    1:name=systemd:/user.slice/user-1000.slice/session-3.scope
    0::/user.slice/user-1000.slice/session-3.scope
    0::/system.slice/foo.service (deleted)                           (a zombie whose cgroup is gone)

Kernel quirks (proc_cgroup_show() in kernel/cgroup/cgroup.c, as of 6.x and 7.x):
- PATH is printed raw (seq_puts): a cgroup name may hold newlines and any non-UTF-8 byte, and
  anyone with a delegated subtree (every user, under user@UID.service) may create one. The 0::
  line is printed last (the default root is set up first and roots are added at the list's
  head), so the v2 path is everything from the first line that starts with `0::` to the end,
  less the final newline and a ` (deleted)` suffix.
- Without the unified hierarchy mounted (v1 only) there is no `0::` line at all.
- The path is relative to the reader's cgroup namespace; inside a container it may start with
  `/..`.

The file is readable by everyone (mode 0444, no ptrace check), so reading it is never denied.

`unit_of(path)` names what the path stands for, from the names systemd, docker, podman,
containerd, CRI-O, kubelet, LXC and machined give their cgroups:

    /system.slice/nginx.service                                       service nginx.service
    /system.slice/system-getty.slice/getty@tty1.service               service getty@tty1.service
    /init.scope                                                       scope init.scope
    /user.slice/user-1000.slice/session-3.scope                       session session-3.scope, uid 1000
    /user.slice/user-1000.slice/user@1000.service                     service user@1000.service, uid 1000
    /user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope   user unit app-x.scope, uid 1000
    /system.slice/docker-ID.scope, /docker/ID                         container docker ID
    /machine.slice/libpod-ID.scope[/container], /libpod_parent/libpod-ID  container podman ID
    /system.slice/cri-containerd-ID.scope                             container containerd ID
    /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podUID.slice/cri-containerd-ID.scope
                                                                      container containerd ID, pod UID
    /kubepods/burstable/podUID/ID                                     container ID, pod UID (cgroupfs driver)
    /lxc.payload.NAME, /machine.slice/machine-NAME.scope              container lxc NAME, machine NAME
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dmabuf_inspect.kernel.lazyre import lazy
from dmabuf_inspect.kernel.reader import GONE, Tree, gap_kind, gap_text
from dmabuf_inspect.records import NamedTuple

_V2_PREFIX = "0::"
_DELETED = " (deleted)"
MEM_ACCOUNTING = "module/dma_heap/parameters/mem_accounting"  # 7.0+, read-only at run time


class ProcCgroup(NamedTuple):
    """What `/proc/PID/cgroup` says about a process."""

    path: str | None  # the cgroup v2 path; None when there is none (see `why`)
    deleted: bool = False  # the kernel appended " (deleted)": a zombie whose cgroup was removed
    v1_hierarchies: int = 0  # v1 lines seen (hybrid or v1-only machines)
    why: str | None = None  # why `path` is None, in one line


def parse_proc_cgroup(data: bytes | str) -> ProcCgroup:
    """The cgroup v2 path of a `/proc/PID/cgroup` text (bytes are decoded with surrogateescape).

    Never raises: text that has no `0::` line gives a ProcCgroup with path None and the reason.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    at = 0 if text.startswith(_V2_PREFIX) else text.find("\n" + _V2_PREFIX)
    head = text if at < 0 else text[:at]
    v1 = sum(1 for line in head.split("\n") if _is_v1_line(line))
    if at < 0:
        if v1:
            return ProcCgroup(
                None, False, v1, "no cgroup v2 line (cgroup v1 only: the unified hierarchy is not mounted)"
            )
        return ProcCgroup(None, False, 0, "no cgroup v2 line" if text else "empty")
    path = text[at + (0 if at == 0 else 1) + len(_V2_PREFIX) :]
    path = path.removesuffix("\n")
    deleted = path.endswith(_DELETED)
    if deleted:
        path = path[: -len(_DELETED)]
    return ProcCgroup(path, deleted, v1)


def _is_v1_line(line: str) -> bool:
    ident, sep, _ = line.partition(":")
    return bool(sep) and ident.isdigit() and ident != "0"


def read_proc_cgroup(proc: Tree, pid: int) -> ProcCgroup:
    """`/proc/PID/cgroup` of `pid`, parsed. Raises OSError as Tree.read does."""
    return parse_proc_cgroup(proc.read_once(f"{pid}/cgroup", 1 << 16))


def read_cgroups(proc: Tree, pids: Iterable[int]) -> dict[int, ProcCgroup]:
    """pid -> its cgroup, for each pid that still exists. A file that can't be read (a capture
    made without it, an I/O error, a link out of a capture) gives path None and why."""
    out: dict[int, ProcCgroup] = {}
    for pid in pids:
        try:
            out[pid] = read_proc_cgroup(proc, pid)
        except OSError as exc:
            if gap_kind(exc) == GONE and proc.live:
                continue
            out[pid] = ProcCgroup(None, why=f"/proc/{pid}/cgroup: {gap_text(exc)}")
    return out


def read_mem_accounting(sys: Tree) -> bool | None:
    """Whether dma-buf heap pages are charged to the allocating task's memory cgroup
    (`dma_heap.mem_accounting`, 7.0+); None where the kernel has no such parameter."""
    try:
        value = sys.read(MEM_ACCOUNTING, 64).strip()
    except OSError:
        return None
    if value in (b"Y", b"1"):
        return True
    if value in (b"N", b"0"):
        return False
    return None


# ---- units -------------------------------------------------------------------------------------

SERVICE = "service"
SCOPE = "scope"
SESSION = "session"
USER_UNIT = "user-unit"  # a unit of a user's systemd (under user@UID.service)
CONTAINER = "container"
POD = "pod"


class Unit(NamedTuple):
    """What a cgroup path stands for."""

    kind: str  # service | scope | session | user-unit | container | pod
    name: str  # the systemd unit's name, or the container's id or name
    runtime: str | None = None  # containers: docker | podman | containerd | cri-o | lxc | machine | None
    uid: int | None = None  # sessions and units of a user's systemd
    pod_uid: str | None = None  # Kubernetes pods (dashes, as `kubectl get pod -o yaml` shows it)

    @property
    def text(self) -> str:
        """One readable line: 'nginx.service', 'session-3.scope (uid 1000)', 'docker:4f797c539e6c'."""
        if self.kind == CONTAINER:
            name = self.name[:12] if _HEX64.fullmatch(self.name) else self.name
            out = f"{self.runtime or 'container'}:{name}"
            return f"{out} (pod {self.pod_uid})" if self.pod_uid else out
        if self.kind == POD:
            return f"pod {self.pod_uid}"
        if self.uid is not None and self.kind in (SESSION, USER_UNIT):
            return f"{self.name} (uid {self.uid})"
        return self.name


# systemd's unit name characters (unit-name.c VALID_CHARS, "@" for instances).
_UNIT = lazy(r"[A-Za-z0-9:_.\\@-]{1,250}\.(service|scope)")
_HEX64 = lazy(r"[0-9a-f]{64}")
_SESSION = lazy(r"session-[A-Za-z0-9]+\.scope")
_USER_SLICE = lazy(r"user-(\d+)\.slice")
_USER_MANAGER = lazy(r"user@(\d+)\.service")
# (runtime, pattern whose group 1 is the id), tried on each path component, deepest first.
_CONTAINER_SCOPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", lazy(r"docker-([0-9a-f]{64})\.scope")),
    ("podman", lazy(r"libpod-(?:payload-)?([0-9a-f]{64})(?:\.scope)?")),
    ("containerd", lazy(r"cri-containerd-([0-9a-f]{64})\.scope")),
    ("cri-o", lazy(r"crio-([0-9a-f]{64})(?:\.scope)?")),
    ("lxc", lazy(r"lxc\.payload\.([A-Za-z0-9_.-]{1,200})")),
)
_MACHINE = lazy(r"machine-([A-Za-z0-9_.\\-]{1,200})\.scope")  # under machine.slice (systemd-machined)
_BARE_ID_PARENTS = {"docker": "docker", "libpod_parent": "podman"}
_POD_SLICE = lazy(r"kubepods(?:-besteffort|-burstable)?-pod([0-9a-f_]{36})\.slice")
_POD_DIR = lazy(r"pod([0-9a-f-]{36})")


def unit_of(path: str | None) -> Unit | None:
    """The unit, session or container `path` (a cgroup v2 path) stands for; None when it names
    none (the root, a slice, a cgroup no manager named).

    The shallowest component that names a unit or a container wins: below a unit, the cgroup
    tree belongs to that unit's processes (systemd delegates it), and they may name their own
    sub-cgroups anything, "sshd.service" included. The one unit whose subtree holds units again
    is a user's systemd, user@UID.service: below it, the shallowest unit wins, tagged with the
    uid. Any text is safe to pass: a component with characters no unit name has is never taken
    for one."""
    if not path:
        return None
    parts = [p for p in path.split("/") if p and p != ".."]
    pod = _pod_uid(parts)
    uid: int | None = None
    manager: str | None = None
    for i, part in enumerate(parts):
        container = _container(part, parts[i - 1] if i else "")
        if container is not None:
            return container._replace(pod_uid=pod, uid=uid if manager else None)
        m = _UNIT.fullmatch(part)
        if m is None:
            m_slice = _USER_SLICE.fullmatch(part)
            if m_slice and manager is None:
                uid = int(m_slice.group(1))
            continue
        m_manager = _USER_MANAGER.fullmatch(part)
        if m_manager and manager is None:
            uid, manager = int(m_manager.group(1)), part
            continue
        if manager is not None:
            if part == "init.scope" and i == len(parts) - 1 and parts[i - 1] == manager:
                break  # the user's systemd itself
            return Unit(USER_UNIT, part, uid=uid)
        if pod is not None:
            break  # a pod's own scope that is no container (conmon, the sandbox): the pod
        if _SESSION.fullmatch(part) and uid is not None:
            return Unit(SESSION, part, uid=uid)
        return Unit(SERVICE if m.group(1) == "service" else SCOPE, part, uid=uid)
    if manager is not None:
        return Unit(SERVICE, manager, uid=uid)
    if pod is not None:
        return Unit(POD, f"pod{pod}", pod_uid=pod)
    return None


def _pod_uid(parts: list[str]) -> str | None:
    if "kubepods.slice" not in parts and "kubepods" not in parts:
        return None
    for part in parts:
        m = _POD_SLICE.fullmatch(part) or _POD_DIR.fullmatch(part)
        if m:
            return m.group(1).replace("_", "-")
    return None


def _container(part: str, parent: str) -> Unit | None:
    for runtime, pattern in _CONTAINER_SCOPES:
        m = pattern.fullmatch(part)
        if m:
            return Unit(CONTAINER, m.group(1), runtime)
    if _HEX64.fullmatch(part):
        return Unit(CONTAINER, part, _BARE_ID_PARENTS.get(parent))
    m = _MACHINE.fullmatch(part)
    if m and parent == "machine.slice":
        return Unit(CONTAINER, m.group(1), "machine")
    return None
