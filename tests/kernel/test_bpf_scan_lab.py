"""BPF in the scan and `dump` on the lab kernels (issue 14, phase 2).

- 7.3, debugfs out of reach (`--debugfs-root` an empty directory: a machine without debugfs): the
  scene (buffers held by fd, by a mapping only, by the kernel only) is dumped with the same inodes,
  sizes, exporters and names as bufinfo gives with debugfs, and the same kernel_only_bytes; both
  from our own iterator and from a pin (read as root with --bpf-iter, and as nobody).
- 7.3, the churn load: our dma-buf iterator and bufinfo agree buffer by buffer.
- 6.12: sources.bpf says the kernel has no dma-buf iterator; nothing else changes.
- Both, as root: `dump` with the task iterators for holders gives the same buffers, holders, fds and
  mappings as `dump --no-bpf` (the /proc walk), on the scene and on the churn load.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import churn_load
import pytest
from as_user import NOBODY, main_as
from scene import Scene

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.bpf import BpfSource
from dmabuf_inspect.kernel.bpf.source import DEFAULT_PIN, NO_DMABUF_ITER
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.snapshot import collect

pytestmark = pytest.mark.kernel
BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"
HAS_DMABUF_ITER = tuple(map(int, os.uname().release.split(".")[:2])) >= (6, 16)
CHURN_PROCESSES = int(os.environ.get("CHURN_PROCESSES", "100"))
ROLES = ("shared", "named", "mapped", "pymapped", "fenced", "signaled", "imported")


def dump(*argv: str) -> dict[str, Any]:
    """`dmabuf-inspect dump ARGV` in this process (the programs it loads stay loaded)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["dump", *argv])
    assert code == 0, err.getvalue()
    assert "Traceback" not in err.getvalue()
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def bufinfo() -> dict[int, tuple[int, str, str | None]]:
    with open(BUFINFO, "rb") as f:
        entries = parse_bufinfo(f.read()).entries
    return {e.inode: (e.size_bytes, e.exp_name, e.name) for e in entries if e.inode is not None}


def listed(doc: dict[str, Any]) -> dict[int, tuple[int, str, str | None]]:
    """Each buffer of a dump: (size, exporter, name)."""
    return {b["inode"]: (b["size_bytes"], b["exporter"], b["name"]) for b in doc["buffers"]}


def holders(doc: dict[str, Any]) -> dict[int, Any]:
    return {b["inode"]: b["holders"] for b in doc["buffers"]}


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with Scene.start() as s:
        yield s


@pytest.fixture(scope="module")
def no_debugfs() -> Iterator[str]:
    """An empty directory any user may enter: `--debugfs-root` there stands for no debugfs."""
    path = tempfile.mkdtemp(prefix="no-debugfs-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    os.rmdir(path)


@pytest.fixture(scope="module")
def reference(scene: Scene) -> dict[str, Any]:
    """`dump --no-bpf` with debugfs: bufinfo and the /proc walk, as before BPF."""
    doc = dump("--no-bpf")
    assert doc["sources"]["bufinfo"] == "ok"
    assert doc["totals"]["kernel_only_bytes"] == scene.expected["imported"].size_bytes
    assert listed(doc) == bufinfo()  # the scene holds no name bufinfo would print differently
    return doc


def _same_listing(doc: dict[str, Any], reference: dict[str, Any], scene: Scene) -> None:
    assert listed(doc) == listed(reference)
    for role in ROLES:  # by fd, by name, by mapping only, with fences, by the kernel only
        assert scene.expected[role].inode in listed(doc), role
    assert doc["totals"]["kernel_only_bytes"] == reference["totals"]["kernel_only_bytes"]


# --- 7.3 without debugfs: our iterator, a pin as root, a pin as nobody ---------------------------------


def test_without_debugfs_our_iterator_lists_what_bufinfo_lists(
    scene: Scene, reference: dict[str, Any], no_debugfs: str
) -> None:
    doc = dump("--debugfs-root", no_debugfs)
    assert doc["sources"]["bpf"] == "ok"
    assert doc["sources"]["bpf_holders"] == "ok"
    assert doc["sources"]["bufinfo"] == f"unavailable: debugfs is not mounted at {no_debugfs} " + (
        "(or the kernel has no CONFIG_DEBUG_FS)"
    )
    _same_listing(doc, reference, scene)
    assert holders(doc) == holders(reference)
    by = {b["inode"]: b for b in doc["buffers"]}
    imported = by[scene.expected["imported"].inode]
    assert (imported["holders"], imported["attachments"], imported["size_source"]) == ([], ["vgem"], "bpf")
    counts = {b["inode"]: (b["count"], b["kernel_refs"]) for b in reference["buffers"]}
    assert {i: (b["count"], b["kernel_refs"]) for i, b in by.items()} == counts


def test_a_pin_lists_what_bufinfo_lists_as_root_and_as_nobody(
    scene: Scene, reference: dict[str, Any], no_debugfs: str, bpffs: str
) -> None:
    assert main(["bpf", "pin"]) == 0
    try:
        as_root = dump("--debugfs-root", no_debugfs, "--bpf-iter", DEFAULT_PIN)
        assert as_root["sources"]["bpf"] == "ok"
        _same_listing(as_root, reference, scene)
        assert holders(as_root) == holders(reference)
        code, out, err = main_as(NOBODY, ["dump", "--debugfs-root", no_debugfs])
        assert code == 0, err
        assert "Traceback" not in err
        doc = json.loads(out)
        assert doc["sources"]["bpf"] == "ok"  # ours could not load (not root): the pin at Android's path
        assert doc["sources"]["bpf_holders"] == f"unavailable: {NEEDS_ROOT}"
        assert listed(doc) == listed(reference)  # every buffer, with no privilege
        for role in ROLES:
            assert scene.expected[role].inode in listed(doc), role
        # The scene's processes are root's: nobody may not read them, and a process that can't be
        # read may hold any buffer no other was seen holding. So which are the kernel's only is
        # unknown, not guessed.
        assert scene.pids["scene-owner"] in doc["denied_pids"]
        assert doc["totals"]["kernel_only_bytes"] is None
    finally:
        assert main(["bpf", "unpin"]) == 0


def test_the_iterator_counts_the_fences_bufinfo_prints(scene: Scene) -> None:
    """What decides whether bufinfo must be read: a buffer with fences in its reservation list."""
    scene.attach_fresh_fence()
    with BpfSource() as bpf:
        listing = bpf.buffer_listing()
        ours = {b.inode: b.fences for b in bpf.buffers()}
    with open(BUFINFO, "rb") as f:
        fenced = {e.inode for e in parse_bufinfo(f.read()).entries if e.fences}
    assert {scene.expected["fenced"].inode, scene.expected["signaled"].inode} <= fenced
    assert {i for i, n in ours.items() if n} == fenced
    assert listing.fenced == len(fenced) and listing.crowded == 0


def test_the_dmabuf_iterator_and_bufinfo_agree_under_churn(tmp_path: Path) -> None:
    """Buffer by buffer, while 100 processes make, pass and free buffers: every buffer listed by
    both bufinfo reads around an iterator read is in it, as bufinfo lists it; every buffer in it
    is in one of the two bufinfo reads (a buffer lives 2 s or more in the churn)."""
    compared = came_or_went = 0
    with churn(tmp_path), BpfSource() as bpf:
        for _ in range(8):
            before = bufinfo()
            ours = {b.inode: (b.size_bytes, b.exp_name, b.name) for b in bpf.buffers()}
            after = bufinfo()
            stable = {i: v for i, v in before.items() if after.get(i) == v}
            assert {i: ours.get(i) for i in stable} == stable
            assert ours.keys() <= before.keys() | after.keys()
            compared += len(stable)
            came_or_went += len(before.keys() ^ after.keys())
    assert compared > 1000 and came_or_went > 0, (compared, came_or_went)


if not HAS_DMABUF_ITER:
    del test_without_debugfs_our_iterator_lists_what_bufinfo_lists
    del test_a_pin_lists_what_bufinfo_lists_as_root_and_as_nobody
    del test_the_iterator_counts_the_fences_bufinfo_prints
    del test_the_dmabuf_iterator_and_bufinfo_agree_under_churn


def test_without_the_dmabuf_iterator_bpf_says_why_and_nothing_else_changes(scene: Scene) -> None:
    doc, walked = bracketed()
    assert doc["sources"]["bpf"] == f"unavailable: {NO_DMABUF_ITER}"
    assert doc["sources"]["bpf_holders"] == "ok"
    same(doc, walked)


if HAS_DMABUF_ITER:
    del test_without_the_dmabuf_iterator_bpf_says_why_and_nothing_else_changes


# --- both kernels: holders from the task iterators, as the /proc walk finds them ------------------------


def normal(doc: dict[str, Any]) -> dict[str, Any]:
    """A dump without what may differ between two honest dumps of the same scene: the time, the
    sources, where a size came from, and a fence's signalled state (vgem signals after 10 s; a
    signalled fence prints no timeline nor driver)."""
    buffers = []
    for b in doc["buffers"]:
        b = dict(b, fences=[(f["usage"], f["seqno"], f["context"]) for f in b["fences"]])
        b.pop("size_source")
        buffers.append(b)
    return dict(doc, buffers=buffers, taken_at=None, sources=None)


def bracketed(tries: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """`dump` between two `dump --no-bpf` that agree (the scene held still), and the first of them.
    Something else in the guest may make or free a buffer meanwhile: then the three are taken again."""
    for _ in range(tries - 1):
        before, doc, after = dump("--no-bpf"), dump(), dump("--no-bpf")
        if normal(after) == normal(before):
            return doc, before
    before, doc, after = dump("--no-bpf"), dump(), dump("--no-bpf")
    same(after, before)
    return doc, before


def same(doc: dict[str, Any], other: dict[str, Any]) -> None:
    """The two dumps alike (normal()), buffer by buffer for a readable failure."""
    mine, theirs = normal(doc), normal(other)
    assert [b["inode"] for b in mine["buffers"]] == [b["inode"] for b in theirs["buffers"]]
    for a, b in zip(mine["buffers"], theirs["buffers"], strict=True):
        assert a == b
    assert mine == theirs


def test_bpf_holders_give_what_the_proc_walk_gives_on_the_scene(scene: Scene) -> None:
    doc, walked = bracketed()
    assert doc["sources"]["bpf_holders"] == "ok"
    assert doc["sources"]["maps"] == "ok"
    same(doc, walked)
    mapped = holders(doc)[scene.expected["mapped"].inode]
    assert [(h["pid"], h["fds"], h["maps"]) for h in mapped] == [(scene.pids["scene-owner"], [], 1)]
    assert holders(doc)[scene.expected["imported"].inode] == []


def churn(tmp_path: Path) -> contextlib.AbstractContextManager[None]:
    return churn_load.running(CHURN_PROCESSES, tmp_path / "allocations")


def _held(snap: Snapshot) -> dict[tuple[int, int | None], dict[int, Any]]:
    """(pid, start_ticks) -> {inode: (fds, maps, mapped bytes)}."""
    start = {p.pid: p.start_ticks for p in snap.processes}
    out: dict[tuple[int, int | None], dict[int, Any]] = {}
    for b in snap.buffers:
        for h in b.holders:
            out.setdefault((h.pid, start.get(h.pid)), {})[b.inode] = (h.fds, h.maps, h.mapped_bytes)
    return out


def _listed(snap: Snapshot) -> dict[int, Any]:
    return {b.inode: (b.size_bytes, b.exporter, b.name, b.holders) for b in snap.buffers}


def test_bpf_holders_give_what_the_proc_walk_gives_under_churn(tmp_path: Path) -> None:
    """Scans with the /proc walk before and after a scan with the task iterators: every process
    that held the same buffers by the same fds and mappings in both must hold them so in the BPF
    scan, and every buffer the same in both must be the same in it (a churner keeps its buffers
    2-4 s; new ones get new inodes, so the same twice means unchanged between).

    The BPF scan may see more holders than the walks around it, never fewer or different ones:
    a buffer received over a socket and closed at once, or inherited by a short-lived fork, is
    held only between the two walks (CI saw pid 473 hold its partner's buffer that way)."""
    walk, bpf = Roots(bpf=False), Roots()
    processes = buffers = transient = 0
    with churn(tmp_path):
        for _ in range(6):
            a, b, c = collect(walk), collect(bpf), collect(walk)
            assert b.sources["bpf_holders"] == "ok" and a.sources["bpf_holders"].startswith("unavailable")
            assert not b.errors and not b.denied_pids
            held_a, held_b, held_c = _held(a), _held(b), _held(c)
            for key, mine in held_a.items():
                if held_c.get(key) == mine:
                    seen = held_b.get(key, {})
                    assert {inode: seen.get(inode) for inode in mine} == mine, key
                    transient += len(seen) - len(mine)
                    processes += 1
            list_a, list_b, list_c = _listed(a), _listed(b), _listed(c)
            for inode, value in list_a.items():
                if list_c.get(inode) == value:
                    size, exporter, name, walked = value
                    assert inode in list_b, inode
                    b_size, b_exporter, b_name, b_holders = list_b[inode]
                    assert (b_size, b_exporter, b_name) == (size, exporter, name), inode
                    by_pid = {h.pid: h for h in b_holders}
                    assert [by_pid.get(h.pid) for h in walked] == list(walked), inode
                    buffers += 1
    assert processes > 100 and buffers > 200, (processes, buffers, transient)
