"""Totals per group of processes: per cgroup, per user, per comm.

Within a group a buffer counts once, however many of its processes hold it (`bytes`); Pss adds
each member's share of each buffer it holds (a buffer's size divided by the number of processes
holding it, as `Process.pss_bytes`); `shared_bytes` is the part of `bytes` that processes of
another group also hold, and those buffers are listed in `shared_inodes`. A buffer held by two
groups is in both: summing `bytes` over groups counts it twice, summing `pss_bytes` does not.
`device_bytes` and `device_pss_bytes` are the part of `bytes` and `pss_bytes` that is device memory
(exporters.is_device_memory: a PCI BAR exported by vfio-pci), never RAM.

    snap = collect(roots)
    cgroups = read_cgroups(roots.proc, (p.pid for p in snap.processes))   # pid -> ProcCgroup
    for t in cgroup_totals(snap, {pid: c.path for pid, c in cgroups.items()}):
        print(t.path, t.unit, t.bytes, t.shared_bytes)

Pure functions of their arguments: no I/O. A pid the map does not know (or maps to None) falls
in the group None ("unknown").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from itertools import chain, compress
from operator import itemgetter

from dmabuf_inspect.exporters import is_device_memory
from dmabuf_inspect.kernel.cgroup import unit_of
from dmabuf_inspect.model import Buffer, Holder, Snapshot
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.textsafe import json_name

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, TypeVar

    K = TypeVar("K", bound=Hashable)


class GroupTotal(NamedTuple):
    """The dma-bufs the processes of one group hold."""

    key: Any  # the cgroup path, user or comm; None: unknown
    processes: int
    buffers: int  # distinct buffers, each once
    bytes: int  # their sizes, each buffer once
    pss_bytes: int
    shared_buffers: int  # of `buffers`, those another group holds too
    shared_bytes: int
    pids: tuple[int, ...]
    shared_inodes: tuple[int, ...]
    device_bytes: int = 0  # of `bytes`: device memory (class vfio), never RAM
    device_pss_bytes: int = 0  # of `pss_bytes`: the same


class CgroupTotal(NamedTuple):
    """A GroupTotal keyed by cgroup v2 path, with the unit the path stands for."""

    path: str | None  # None: the processes whose cgroup is unknown
    unit: str | None  # kernel.cgroup.Unit.text, or None when the path names no unit
    processes: int
    buffers: int
    bytes: int
    pss_bytes: int
    shared_buffers: int
    shared_bytes: int
    pids: tuple[int, ...]
    shared_inodes: tuple[int, ...]
    device_bytes: int = 0
    device_pss_bytes: int = 0


def group_totals(
    snap: Snapshot, group_of: Callable[[int], K | None], *, from_processes: bool = True
) -> list[GroupTotal]:
    """One row per group that has a process of the snapshot or a holder of one of its buffers,
    largest `bytes` first, then by key. `group_of(pid)` names the group. `from_processes` False:
    the sums taken buffer by buffer even where the processes' own figures would do (what the
    tests and bench_cgroups.py hold the faster way against)."""
    members: dict[K | None, set[int]] = {}
    for p in snap.processes:
        members.setdefault(group_of(p.pid), set()).add(p.pid)
    group_cache = {pid: g for g, pids in members.items() for pid in pids}
    holders = list(map(itemgetter(_HOLDERS), snap.buffers))
    if from_processes and _processes_add_up(snap, holders, group_cache):
        acc, shared = _from_processes(snap, holders, group_cache)
    else:
        acc, shared = _from_buffers(snap, holders, group_of, group_cache, members)
    out = []
    for g, pids in members.items():
        n, size, pss_bytes, n_shared, shared_size, device_size, device_pss = acc.get(g, [0, 0, 0, 0, 0, 0, 0])
        out.append(
            GroupTotal(
                g,
                len(pids),
                n,
                size,
                pss_bytes,
                n_shared,
                shared_size,
                tuple(sorted(pids)),
                tuple(sorted(shared.get(g, ()))),
                device_size,
                device_pss,
            )
        )
    out.sort(key=lambda t: (-t.bytes, t.key is None, str(t.key)))
    return out


# group -> [buffers, bytes, pss, shared buffers, shared bytes, device bytes, device pss]; group -> shared inodes
if TYPE_CHECKING:
    _Sums = tuple[dict[Any, list[int]], dict[Any, list[int]]]


def _processes_add_up(snap: Snapshot, holders: list[tuple[Holder, ...]], known: Mapping[int, object]) -> bool:
    """Whether the snapshot's processes account for every holder of its buffers, as collect()
    builds them (a process's `buffers` is the number of buffers it holds): then a buffer held by
    one process adds to its group what it adds to that process. Not so where a holder vanished
    before it could be identified, or in a snapshot made by hand."""
    if sum(p.buffers for p in snap.processes) != sum(map(len, holders)):
        return False
    return all(map(known.__contains__, map(_PID, chain.from_iterable(holders))))


def _from_processes(snap: Snapshot, holders: list[tuple[Holder, ...]], group_of: Mapping[int, Any]) -> _Sums:
    """The sums from each process's own (Rss counts a buffer once per process), less what a buffer
    held by several processes of one group counted more than once: a loop over shared buffers only."""
    acc: dict[Any, list[int]] = {}
    for p in snap.processes:
        row = acc.get(g := group_of[p.pid])
        if row is None:
            row = acc[g] = [0, 0, 0, 0, 0, 0, 0]
        row[0] += p.buffers
        row[1] += p.rss_bytes
        row[2] += p.pss_bytes
        row[5] += p.device_rss_bytes
        row[6] += p.device_pss_bytes
    shared: dict[Any, list[int]] = {}
    for b in compress(snap.buffers, map((1).__lt__, map(len, holders))):
        size = b.size_bytes
        device = is_device_memory(b.exporter)
        per_group: dict[Any, int] = {}
        for h in b.holders:
            g = group_of[h.pid]
            per_group[g] = per_group.get(g, 0) + 1
        for g, n in per_group.items():
            row = acc[g]
            if n > 1:  # counted once per process of the group: once is right
                row[0] -= n - 1
                row[1] -= (n - 1) * size
                if device:
                    row[5] -= (n - 1) * size
            if len(per_group) > 1:
                row[3] += 1
                row[4] += size
                shared.setdefault(g, []).append(b.inode)
    return acc, shared


def _from_buffers(
    snap: Snapshot,
    holders: list[tuple[Holder, ...]],
    group_of: Callable[[int], Any],
    group_cache: dict[int, Any],
    members: dict[Any, set[int]],
) -> _Sums:
    """The sums buffer by buffer; a holder that is no process of the snapshot joins its group."""

    def of(pid: int) -> Any:
        g = group_cache.get(pid, _MISSING)
        if g is _MISSING:
            g = group_cache[pid] = group_of(pid)
            members.setdefault(g, set()).add(pid)
        return g

    acc: dict[Any, list[int]] = {}
    shared: dict[Any, list[int]] = {}
    buffers = snap.buffers
    devices = {e for e in set(map(itemgetter(_EXPORTER), buffers)) if is_device_memory(e)}
    columns = (map(itemgetter(_INODE), buffers), map(itemgetter(_SIZE), buffers), map(itemgetter(_EXPORTER), buffers))
    for inode, size, exporter, its in zip(*columns, holders, strict=True):
        if not its:
            continue
        device = exporter in devices if devices else False
        pss: dict[Any, int]
        if len(its) == 1:  # most buffers: one process's, its whole size in its group alone
            pid = its[0].pid
            pss = {group_cache[pid] if pid in group_cache else of(pid): size}
        else:
            share = size // len(its)
            pss = {}
            for h in its:
                g = of(h.pid)
                pss[g] = pss.get(g, 0) + share
        many = len(pss) > 1
        for g, part in pss.items():
            row = acc.get(g)
            if row is None:
                row = acc[g] = [0, 0, 0, 0, 0, 0, 0]
            row[0] += 1
            row[1] += size
            row[2] += part
            if device:
                row[5] += size
                row[6] += part
            if many:
                row[3] += 1
                row[4] += size
                shared.setdefault(g, []).append(inode)
    return acc, shared


_MISSING = object()
_INODE, _SIZE, _EXPORTER, _HOLDERS = (Buffer._fields.index(f) for f in ("inode", "size_bytes", "exporter", "holders"))
_PID = itemgetter(Holder._fields.index("pid"))


def cgroup_totals(snap: Snapshot, cgroup_of: Mapping[int, str | None]) -> list[CgroupTotal]:
    """Totals per cgroup v2 path; `cgroup_of` maps a pid to its path (read_cgroups(), or the
    snapshot's own record of it)."""
    rows = group_totals(snap, cgroup_of.get)
    return [CgroupTotal(r.key, unit_text(r.key), *r[1:]) for r in rows]


def unit_text(path: str | None) -> str | None:
    """The unit a cgroup path stands for, as one line (kernel.cgroup.Unit.text); None when it names none."""
    unit = unit_of(path)
    return None if unit is None else unit.text


def user_totals(snap: Snapshot) -> list[GroupTotal]:
    """Totals per user name (`Process.user`: the login name live, the uid in a capture)."""
    users = {p.pid: p.user for p in snap.processes}
    return group_totals(snap, users.get)


def comm_totals(snap: Snapshot) -> list[GroupTotal]:
    """Totals per command name (`Process.comm`: any 15 bytes a process chose: escape to print)."""
    comms = {p.pid: p.comm for p in snap.processes}
    return group_totals(snap, comms.get)


def cgroup_entry(total: CgroupTotal) -> dict[str, Any]:
    """The JSON of one cgroup: path (valid UTF-8; `path_hex` with the exact bytes when it is not),
    unit, processes, buffers, bytes, pss_bytes, shared_buffers, shared_bytes, the inodes of the
    shared buffers, and device_bytes and device_pss_bytes (of bytes and pss_bytes: device memory)."""
    path, path_hex = json_name(total.path)
    entry: dict[str, Any] = {
        "path": path,
        "unit": json_name(total.unit)[0],
        "processes": total.processes,
        "buffers": total.buffers,
        "bytes": total.bytes,
        "pss_bytes": total.pss_bytes,
        "shared_buffers": total.shared_buffers,
        "shared_bytes": total.shared_bytes,
        "shared_inodes": list(total.shared_inodes),
        "device_bytes": total.device_bytes,
        "device_pss_bytes": total.device_pss_bytes,
    }
    if path_hex is not None:
        entry["path_hex"] = path_hex
    return entry
