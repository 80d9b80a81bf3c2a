"""Per-cgroup, per-user and per-comm totals (scan/cgroups.py) on fixtures/cgroups-*, against the
figures computed by hand in tests/support/cgroup_expectations.py."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cgroup_expectations import HOSTILE, HOSTILE_COMM, MIB, SERVICES, Cg
from hypothesis import given
from hypothesis import strategies as st
from paths import FIXTURES

from dmabuf_inspect.exporters import is_device_memory
from dmabuf_inspect.kernel.cgroup import read_cgroups
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.metrics.source import held_pids, observe
from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot, Totals
from dmabuf_inspect.scan import cgroups as cgroups_mod
from dmabuf_inspect.scan.cgroups import CgroupTotal, cgroup_entry, cgroup_totals, comm_totals, group_totals, user_totals
from dmabuf_inspect.scan.snapshot import collect

TREES = ("cgroups-services", "cgroups-hostile")


def _totals(name: str) -> list[CgroupTotal]:
    roots = Roots.from_tree(str(FIXTURES / name))
    snap = collect(roots)
    paths = {pid: c.path for pid, c in read_cgroups(roots.proc, held_pids(snap)).items()}
    return cgroup_totals(snap, paths)


def _as_cg(t: CgroupTotal) -> Cg:
    return Cg(
        t.path, t.unit, t.processes, t.buffers, t.bytes, t.pss_bytes, t.shared_buffers, t.shared_bytes, t.shared_inodes
    )


def test_services_per_cgroup_figures_are_the_hand_computed_ones() -> None:
    assert [_as_cg(t) for t in _totals("cgroups-services")] == SERVICES


def test_hostile_per_cgroup_figures_are_the_hand_computed_ones() -> None:
    assert [_as_cg(t) for t in _totals("cgroups-hostile")] == HOSTILE


def test_a_process_without_dmabufs_is_in_no_cgroup() -> None:
    # agetty (700, getty@tty1.service) holds nothing: neither it nor its service appears.
    assert all("getty" not in (t.path or "") for t in _totals("cgroups-services"))


def test_summing_pss_over_cgroups_gives_the_processes_pss() -> None:
    for name in TREES:
        snap = collect(Roots.from_tree(str(FIXTURES / name)))
        assert sum(t.pss_bytes for t in _totals(name)) == sum(p.pss_bytes for p in snap.processes)


def _snap(buffers: list[Buffer], pids: list[int]) -> Snapshot:
    procs = tuple(Process(pid, 1, f"c{pid}", "", 0, f"u{pid % 2}", 0, 0, 0) for pid in pids)
    total = sum(b.size_bytes for b in buffers)
    return Snapshot("k", 0.0, {}, tuple(buffers), procs, Totals(len(buffers), total, total, 0), ())


def _buf(inode: int, size: int, *pids: int) -> Buffer:
    holders = tuple(Holder(pid, (3,), 0, 0) for pid in pids)
    return Buffer(inode, size, "fdinfo", "system", "heap", None, len(pids), holders, (), (), 0)


def test_a_buffer_held_twice_in_one_cgroup_counts_once_and_is_not_shared() -> None:
    snap = _snap([_buf(1, 4 * MIB, 10, 11)], [10, 11])
    (row,) = cgroup_totals(snap, {10: "/a.service", 11: "/a.service"})
    assert (row.processes, row.buffers, row.bytes, row.pss_bytes) == (2, 1, 4 * MIB, 4 * MIB)
    assert (row.shared_buffers, row.shared_bytes, row.shared_inodes) == (0, 0, ())


def test_a_buffer_held_by_two_cgroups_is_in_both_flagged_shared() -> None:
    snap = _snap([_buf(1, 3 * MIB, 10, 11, 12), _buf(2, 1 * MIB, 12)], [10, 11, 12])
    rows = {r.path: r for r in cgroup_totals(snap, {10: "/a.service", 11: "/a.service", 12: "/b.service"})}
    a, b = rows["/a.service"], rows["/b.service"]
    assert (a.buffers, a.bytes, a.pss_bytes, a.shared_bytes, a.shared_inodes) == (1, 3 * MIB, 2 * MIB, 3 * MIB, (1,))
    assert (b.buffers, b.bytes, b.pss_bytes, b.shared_bytes, b.shared_inodes) == (2, 4 * MIB, 2 * MIB, 3 * MIB, (1,))
    assert a.unit == "a.service"


def test_unknown_cgroups_are_one_group_none() -> None:
    snap = _snap([_buf(1, MIB, 10, 11)], [10, 11])
    (row,) = cgroup_totals(snap, {10: None})  # 11: not in the map at all
    assert row.path is None and row.unit is None and row.pids == (10, 11) and row.shared_bytes == 0


def test_a_holder_missing_from_the_processes_is_still_counted() -> None:
    snap = _snap([_buf(1, 2 * MIB, 10, 99)], [10])  # 99 exited before it was identified
    rows = {r.path: r for r in cgroup_totals(snap, {10: "/a.service", 99: "/b.service"})}
    assert rows["/b.service"].processes == 1 and rows["/b.service"].pss_bytes == MIB
    assert rows["/a.service"].shared_bytes == 2 * MIB


def test_kernel_only_buffers_are_in_no_group() -> None:
    snap = _snap([_buf(1, MIB), _buf(2, 2 * MIB, 10)], [10])
    (row,) = group_totals(snap, lambda pid: "g")
    assert (row.buffers, row.bytes) == (1, 2 * MIB)


def test_user_and_comm_totals() -> None:
    snap = collect(Roots.from_tree(str(FIXTURES / "cgroups-services")))
    users = {t.key: t for t in user_totals(snap)}
    assert set(users) == {"0", "1000"}  # a capture shows uids
    # uid 1000: weston (A, C) and pipewire (G); uid 0: camerad x2 (A, B) and the container (C, D, E).
    assert (users["1000"].processes, users["1000"].buffers, users["1000"].bytes) == (2, 3, 20 * MIB + 512 * 1024)
    assert users["1000"].shared_bytes == 20 * MIB
    assert (users["0"].processes, users["0"].buffers, users["0"].bytes) == (3, 5, 23 * MIB + 64 * 1024)
    comms = {t.key: t for t in comm_totals(snap)}
    assert comms["camerad"].bytes == 6 * MIB and comms["camerad"].shared_bytes == 4 * MIB
    assert comms["camerad-worker"].pss_bytes == 1398101
    hostile = {t.key: t for t in comm_totals(collect(Roots.from_tree(str(FIXTURES / "cgroups-hostile"))))}
    assert hostile[HOSTILE_COMM].bytes == MIB


def test_cgroup_entry_json() -> None:
    rows = {r.path: r for r in _totals("cgroups-hostile")}
    bad = cgroup_entry(rows["/system.slice/bad\n0::\udcff.service"])
    assert bad["path"] == "/system.slice/bad\n0::\ufffd.service"
    assert bytes.fromhex(bad["path_hex"]) == b"/system.slice/bad\n0::\xff.service"
    assert {k: bad[k] for k in ("unit", "processes", "buffers", "bytes", "pss_bytes", "shared_bytes")} == {
        "unit": None,
        "processes": 1,
        "buffers": 1,
        "bytes": MIB,
        "pss_bytes": MIB // 2,
        "shared_bytes": MIB,
    }
    unknown = cgroup_entry(rows[None])
    assert unknown["path"] is None and "path_hex" not in unknown and unknown["shared_inodes"] == [50002]


def test_observe_reads_each_process_cgroup_and_mem_accounting() -> None:
    obs = observe(Roots.from_tree(str(FIXTURES / "cgroups-services")))
    assert obs.mem_accounting is True
    paths = obs.cgroup_paths()
    assert paths[1500] is not None and paths[1500].startswith("/system.slice/docker-")
    assert 700 not in paths  # holds nothing
    assert observe(Roots.from_tree(str(FIXTURES / "cgroups-hostile"))).mem_accounting is None
    hostile = observe(Roots.from_tree(str(FIXTURES / "cgroups-hostile"))).cgroup_paths()
    assert hostile[304] == HOSTILE[1].path  # "(deleted)" left out
    assert hostile[302] is None and hostile[303] is None


# ---- the generator -----------------------------------------------------------------------------------------


def _differences(a: Path, b: Path) -> list[str]:
    diffs = []
    for root, dirs, files in os.walk(a):
        for entry in dirs + files:
            pa = Path(root) / entry
            rel = pa.relative_to(a)
            pb = b / rel
            if str(rel) == "README.md":
                continue
            if pa.is_symlink():
                if not pb.is_symlink() or os.readlink(pa) != os.readlink(pb):
                    diffs.append(str(rel))
            elif pa.is_file():
                if not pb.is_file() or not filecmp.cmp(pa, pb, shallow=False):
                    diffs.append(str(rel))
            elif not pb.is_dir():
                diffs.append(str(rel))
    return diffs


def test_generator_reproduces_the_checked_in_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_cgroup_fixtures", FIXTURES / "make_cgroup_fixtures.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_cgroup_fixtures", gen)
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "HERE", str(tmp_path))
    gen.main()
    for name in TREES:
        fresh, checked_in = tmp_path / name, FIXTURES / name
        assert _differences(fresh, checked_in) == [], name
        assert _differences(checked_in, fresh) == [], name


# --- the sums from the processes' own (collect()'s snapshots) and buffer by buffer agree -----------

ALL_TREES = sorted(p.name for p in FIXTURES.iterdir() if (p / "proc").is_dir())
GROUPINGS: dict[str, Any] = {
    "one": lambda pid: "all",
    "pid": lambda pid: pid,
    "pid mod 3": lambda pid: pid % 3 or None,
}


def _both_ways(snap: Snapshot, group_of: Any) -> tuple[list[Any], list[Any]]:
    """group_totals() as it runs, and with the sums taken buffer by buffer."""
    return group_totals(snap, group_of), group_totals(snap, group_of, from_processes=False)


@pytest.mark.parametrize("name", ALL_TREES)
def test_a_scans_totals_from_its_processes_are_the_buffer_by_buffer_ones(name: str) -> None:
    roots = Roots.from_tree(str(FIXTURES / name))
    snap = collect(roots)
    cgroups = {pid: c.path for pid, c in read_cgroups(roots.proc, held_pids(snap)).items()}
    users = {p.pid: p.user for p in snap.processes}
    holders = [b.holders for b in snap.buffers]
    gone = any(h.pid not in users for hs in holders for h in hs)  # a holder that was never identified
    assert cgroups_mod._processes_add_up(snap, holders, users) is (not gone and not _legacy(snap))
    for group_of in (*GROUPINGS.values(), cgroups.get, users.get):
        fast, slow = _both_ways(snap, group_of)
        assert fast == slow


def _legacy(snap: Snapshot) -> bool:
    return sum(p.buffers for p in snap.processes) != sum(len(b.holders) for b in snap.buffers)


@st.composite
def _scans(draw: st.DrawFn) -> Snapshot:
    """Buffers held by 0-4 of 8 processes (some device memory), with each process's figures
    computed as collect() computes them."""
    pids = list(range(100, 108))
    buffers = []
    for inode in range(draw(st.integers(0, 30))):
        size = draw(st.sampled_from((4096, 65536, 3 * MIB + 4096)))
        held = draw(st.lists(st.sampled_from(pids), max_size=4, unique=True))
        exporter = draw(st.sampled_from(("system", "vfio_pci_core", "udmabuf")))
        its = tuple(Holder(pid, (3,), 0, 0) for pid in sorted(held))
        buffers.append(Buffer(inode, size, "fdinfo", exporter, "heap", None, len(held), its, (), (), 0))
    procs = []
    for pid in pids:
        mine = [b for b in buffers if any(h.pid == pid for h in b.holders)]
        if not mine and draw(st.booleans()):
            continue
        device = [b for b in mine if is_device_memory(b.exporter)]
        share = {b.inode: b.size_bytes // len(b.holders) for b in mine}
        procs.append(
            Process(
                pid,
                1,
                f"c{pid}",
                "",
                0,
                "u",
                len(mine),
                sum(b.size_bytes for b in mine),
                sum(share[b.inode] for b in mine),
                device_rss_bytes=sum(b.size_bytes for b in device),
                device_pss_bytes=sum(share[b.inode] for b in device),
            )
        )
    if len(procs) < len(pids) and any(len(b.holders) for b in buffers) and draw(st.booleans()):
        return _snap(buffers, [p.pid for p in procs])  # figures that do not add up: buffer by buffer
    total = sum(b.size_bytes for b in buffers)
    return Snapshot("k", 0.0, {}, tuple(buffers), tuple(procs), Totals(len(buffers), total, total, 0), ())


@given(snap=_scans(), modulus=st.integers(1, 4))
def test_totals_from_processes_and_buffer_by_buffer_agree_on_any_scan(snap: Snapshot, modulus: int) -> None:
    fast, slow = _both_ways(snap, lambda pid: pid % modulus or None)
    assert fast == slow
