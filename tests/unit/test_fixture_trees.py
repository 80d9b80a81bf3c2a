"""The fixture trees agree with themselves, with their hand-written expectations, and with the
generator that wrote them. (Reading them through the collector is tested elsewhere.)"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from fixture_expectations import DANGLING_LINKS, EXPECTED, OUTSIDE_LINKS
from paths import FIXTURES

from dmabuf_inspect.exporters import exporter_class
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo
from dmabuf_inspect.kernel.fdinfo import parse_fdinfo
from dmabuf_inspect.kernel.maps import parse_maps
from dmabuf_inspect.model import FdInfo

FIXTURES = FIXTURES
KEYED = ["k5.10-sysfs", "k6.12", "k7.3", "no-dmabufs"]


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _dmabuf_fds(tree: Path) -> dict[int, dict[int, FdInfo]]:
    """pid -> fd -> fdinfo, for every fd whose link text says dma-buf."""
    out: dict[int, dict[int, FdInfo]] = {}
    for pid_dir in sorted((tree / "proc").iterdir()):
        if not pid_dir.name.isdigit() or not (pid_dir / "fd").is_dir():
            continue
        for link in (pid_dir / "fd").iterdir():
            target = os.readlink(link)
            if target.startswith("/dmabuf:") or target == "anon_inode:dmabuf":
                info = parse_fdinfo(_read(pid_dir / "fdinfo" / link.name)) if target != "anon_inode:dmabuf" else None
                out.setdefault(int(pid_dir.name), {})[int(link.name)] = info  # type: ignore[assignment]
    return out


def _inode_of(info: FdInfo, want: dict[int, Any]) -> int:
    if info.inode is not None:
        return info.inode
    # Before 5.14 fdinfo has no ino: the tree makes (size, exporter, name, count) unique.
    (match,) = [
        ino
        for ino, b in want.items()
        if (b["size_bytes"], b["exporter"], b["name"], b["count"])
        == (info.size_bytes, info.exp_name, info.name, info.count)
    ]
    return int(match)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_tree_has_a_readme(name: str) -> None:
    assert (FIXTURES / name / "README.md").is_file()


@pytest.mark.parametrize("name", KEYED)
def test_holders_counts_and_refs_agree(name: str) -> None:
    tree, want = FIXTURES / name, EXPECTED[name]
    buffers: dict[int, Any] = want["buffers"]
    holders: dict[int, dict[int, list[Any]]] = {}  # inode -> pid -> [fds, maps, bytes]
    for pid, fds in _dmabuf_fds(tree).items():
        for fd, info in fds.items():
            ino = _inode_of(info, buffers)
            b = buffers[ino]
            assert (info.size_bytes, info.exp_name, info.name, info.count) == (
                b["size_bytes"],
                b["exporter"],
                b["name"],
                b["count"],
            )
            holders.setdefault(ino, {}).setdefault(pid, [[], 0, 0])[0].append(fd)
    for pid_dir in (tree / "proc").iterdir():
        if pid_dir.name.isdigit():
            for m in parse_maps(_read(pid_dir / "maps")):
                h = holders.setdefault(m.inode, {}).setdefault(int(pid_dir.name), [[], 0, 0])
                h[1] += 1
                h[2] += m.length_bytes
    got = {ino: {pid: (tuple(sorted(h[0])), h[1], h[2]) for pid, h in hs.items()} for ino, hs in holders.items()}
    assert got == {ino: b["holders"] for ino, b in buffers.items() if b["holders"]}
    for b in buffers.values():
        refs = sum(len(fds) + maps for fds, maps, _ in b["holders"].values())
        assert b["count"] == refs + b["kernel_refs"]
        assert b["class"] == exporter_class(b["exporter"], frozenset(want["heaps"]))


@pytest.mark.parametrize("name", KEYED)
def test_processes_and_totals_add_up(name: str) -> None:
    want = EXPECTED[name]
    buffers: dict[int, Any] = want["buffers"]
    for pid, p in want["processes"].items():
        held = [b for b in buffers.values() if pid in b["holders"]]
        assert p["buffers"] == len(held)
        assert p["rss_bytes"] == sum(b["size_bytes"] for b in held)
        assert p["pss_bytes"] == sum(b["size_bytes"] // len(b["holders"]) for b in held)
    assert set(want["processes"]) == {pid for b in buffers.values() for pid in b["holders"]}
    t = want["totals"]
    assert t["buffers"] == len(buffers)
    assert t["bytes"] == sum(b["size_bytes"] for b in buffers.values())
    assert t["userspace_bytes"] == sum(b["size_bytes"] for b in buffers.values() if b["holders"])
    if t["kernel_only_bytes"] is not None:
        assert t["kernel_only_bytes"] == t["bytes"] - t["userspace_bytes"]
        info = parse_bufinfo(_read(FIXTURES / name / "sys/kernel/debug/dma_buf/bufinfo"))
        assert (info.total_objects, info.total_bytes) == (t["buffers"], t["bytes"])


def test_4_19_tree_shows_only_anonymous_fds_and_mappings() -> None:
    tree, want = FIXTURES / "k4.19-legacy", EXPECTED["k4.19-legacy"]
    fds = _dmabuf_fds(tree)
    assert {pid: tuple(sorted(v)) for pid, v in fds.items()} == want["dmabuf_fds"]
    for pid, (count, length) in want["anon_dmabuf_maps"].items():
        maps = _read(tree / "proc" / str(pid) / "maps").split(b"\n")
        lines = [ln for ln in maps if ln.endswith(b" anon_inode:dmabuf")]
        assert len(lines) == count
        assert all(ln.split()[4] == str(want["anon_inode"]).encode() for ln in lines)
        spans = [ln.split()[0].split(b"-") for ln in lines]
        assert sum(int(hi, 16) - int(lo, 16) for lo, hi in spans) == length
        assert parse_maps(_read(tree / "proc" / str(pid) / "maps")) == []
    truth = want["truth"]
    for entry, (_, t) in zip(reversed(want["bufinfo_entries"]), truth.items(), strict=True):
        refs = sum(len(f) + m for f, m, _ in t["holders"].values())
        assert entry["count"] == refs + t["kernel_refs"]


def test_hostile_links_lead_where_they_say() -> None:
    tree = FIXTURES / "hostile-links"
    for rel, target in {**OUTSIDE_LINKS, **DANGLING_LINKS}.items():
        assert os.readlink(tree / rel) == target
    for rel in OUTSIDE_LINKS:
        real = os.path.realpath(tree / rel)
        assert not real.startswith(str(tree.resolve()) + os.sep)


def _same_tree(a: Path, b: Path) -> list[str]:
    """Paths that differ between two trees: content, link target, or presence."""
    diffs: list[str] = []
    for root, dirs, files in os.walk(a):
        for entry in dirs + files:
            pa = Path(root) / entry
            rel = pa.relative_to(a)
            pb = b / rel
            if pa.is_symlink() or pb.is_symlink():
                if not (pa.is_symlink() and pb.is_symlink() and os.readlink(pa) == os.readlink(pb)):
                    diffs.append(str(rel))
                dirs[:] = [d for d in dirs if d != entry]
            elif (not pb.exists() and not pb.is_symlink()) or (pa.is_file() and not filecmp.cmp(pa, pb, shallow=False)):
                diffs.append(str(rel))
    return diffs


def test_generator_reproduces_the_checked_in_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_fixtures", gen)  # dataclasses look their module up
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "HERE", str(tmp_path))
    gen.main()
    for name in EXPECTED:
        fresh, checked_in = tmp_path / name, FIXTURES / name
        assert _same_tree(fresh, checked_in) == [], name
        assert [p for p in _same_tree(checked_in, fresh) if not p.endswith("README.md")] == [], name
