"""The scan's BPF join (issue 14) on fixture trees, with fakes of BpfSource.

fixtures/k7.3 read as a capture, with debugfs bufinfo and the /proc files, is the reference. The
same tree read as if it were the live /proc, with a fake BpfSource whose dma-buf listing and task
iterators say what that tree says, must give the same snapshot: every buffer (the kernel-only
one and the one held by a mapping only too), every holder, fd and mapping, the same totals. Then
what changes with each source missing or refusing, bad pinned files, and a captured iterator.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dmabuf_inspect import schemas
from dmabuf_inspect.kernel.bpf import BpfBuffer, BpfUnavailable, Holders
from dmabuf_inspect.kernel.bpf.records import listing_of
from dmabuf_inspect.kernel.bpf.source import NO_DMABUF_ITER
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo
from dmabuf_inspect.kernel.maps import parse_maps
from dmabuf_inspect.kernel.reader import Roots, Tree
from dmabuf_inspect.model import Buffer, MapEntry, Snapshot
from dmabuf_inspect.scan import bpfscan
from dmabuf_inspect.scan.capture import capture
from dmabuf_inspect.scan.jsonout import dumps
from dmabuf_inspect.scan.snapshot import collect

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "k7.3"
PIDS = (2001, 2002, 2003)
HOSTILE = 40002  # named with ESC, TAB, LF and 0xff: bufinfo prints it raw


def reference() -> Snapshot:
    """The fixture as a capture: bufinfo and /proc, no BPF."""
    return collect(Roots.from_tree(str(FIXTURE), bpf=False))


def bpf_buffers(snap: Snapshot, *, fences: bool = True) -> list[BpfBuffer]:
    """What our dma-buf iterator would list on the fixture's kernel."""
    with open(FIXTURE / "sys/kernel/debug/dma_buf/bufinfo", "rb") as f:
        flags = {e.inode: (e.flags, e.mode) for e in parse_bufinfo(f.read()).entries}
    return [
        BpfBuffer(
            b.inode,
            b.size_bytes,
            b.exporter,
            b.name,
            b.count,
            len(b.attachments),
            b.attachments,
            *flags[b.inode],
            len(b.fences) if fences else 0,
        )
        for b in snap.buffers
    ]


def fixture_holders() -> Holders:
    """What the task iterators would give on the fixture: fds by inode, mappings."""
    ref = reference()
    fds: dict[int, dict[int, tuple[int, ...]]] = {}
    for b in ref.buffers:
        for h in b.holders:
            if h.fds:
                fds.setdefault(h.pid, {})[b.inode] = h.fds
    maps: dict[int, list[MapEntry]] = {}
    for pid in PIDS:
        entries = parse_maps((FIXTURE / "proc" / str(pid) / "maps").read_bytes())
        if entries:
            maps[pid] = entries
    return Holders(fds, maps)


class FakeBpf:
    """Stands in for BpfSource: says what it is told, or raises BpfUnavailable."""

    def __init__(self, buffers: list[BpfBuffer] | str, holders: Holders | str) -> None:
        self._buffers, self._holders = buffers, holders
        self.calls: list[str] = []

    def buffer_listing(self) -> Any:
        self.calls.append("buffers")
        if isinstance(self._buffers, str):
            raise BpfUnavailable(self._buffers)
        return listing_of(self._buffers)

    def buffers(self) -> list[BpfBuffer]:
        if isinstance(self._buffers, str):
            raise BpfUnavailable(self._buffers)
        return self._buffers

    def holders(self, *, include_maps: bool = True) -> Holders:
        self.calls.append("holders")
        if isinstance(self._holders, str):
            raise BpfUnavailable(self._holders)
        return self._holders if include_maps else Holders(self._holders.fds, {})


def live_roots(tree: Path = FIXTURE, *, debugfs: Path | None = None, **kw: Any) -> Roots:
    """The tree read as if it were the running kernel's /proc."""
    return Roots(
        proc_root=str(tree / "proc"),
        sys_root=str(tree / "sys"),
        debugfs_root=str(debugfs or tree / "sys/kernel/debug"),
        dev_root=str(tree / "dev"),
        live=True,
        **kw,
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """bpfscan believes the tree is /proc and uses the FakeBpf put in state["bpf"]; reads of
    bufinfo and fdinfo are counted, and no pin is found at Android's path."""
    state: dict[str, Any] = {"bufinfo_reads": 0, "fdinfo_reads": 0}
    monkeypatch.setattr(bpfscan, "is_live_proc", lambda root: True)
    monkeypatch.setattr(bpfscan, "shared_source", lambda: state["bpf"])
    monkeypatch.setattr(bpfscan, "DEFAULT_PIN", "/nonexistent/dmabuf/prog_dmabufIter_iter_dmabuf")
    real_read, real_read_once = Tree.read, Tree.read_once

    def counting_read(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        if self.live:  # the reads of the scan under test, not of reference()
            state["bufinfo_reads"] += rel == "dma_buf/bufinfo"
            state["fdinfo_reads"] += "/fdinfo/" in rel
        return real_read(self, rel, limit)

    def counting_read_once(self: Tree, rel: str, size: int) -> bytes:
        if self.live:
            state["fdinfo_reads"] += "/fdinfo/" in rel
        return real_read_once(self, rel, size)

    monkeypatch.setattr(Tree, "read", counting_read)
    monkeypatch.setattr(Tree, "read_once", counting_read_once)
    yield state


def same_view(b: Buffer) -> tuple[Any, ...]:
    """A buffer as both sources must see it (size_source says which one they are)."""
    return (b.inode, b.size_bytes, b.exporter, b.exporter_class, b.name, b.count, b.holders, b.kernel_refs)


def processes(snap: Snapshot) -> list[tuple[Any, ...]]:
    return [
        (p.pid, p.comm, p.cmdline, p.uid, p.buffers, p.rss_bytes, p.pss_bytes, p.start_ticks) for p in snap.processes
    ]


# --- our iterator and the task iterators: the same snapshot as bufinfo and /proc ----------------------


def test_bpf_join_gives_what_bufinfo_and_proc_give(fake: dict[str, Any]) -> None:
    ref = reference()
    fake["bpf"] = FakeBpf(bpf_buffers(ref), fixture_holders())
    snap = collect(live_roots())
    assert [same_view(b) for b in snap.buffers] == [same_view(b) for b in ref.buffers]
    assert [(b.attachments, b.fences) for b in snap.buffers] == [(b.attachments, b.fences) for b in ref.buffers]
    assert {b.size_source for b in snap.buffers} == {"bpf"}
    assert processes(snap) == processes(ref)
    assert snap.totals == ref.totals and snap.totals.kernel_only_bytes == 262144
    assert (snap.sources["bpf"], snap.sources["bpf_holders"], snap.sources["bufinfo"]) == ("ok", "ok", "ok")
    # fences were listed: bufinfo read once for them; every name exact from the iterator: no fdinfo
    assert (fake["bufinfo_reads"], fake["fdinfo_reads"]) == (1, 0)
    assert next(b for b in snap.buffers if b.inode == HOSTILE).name == "\x1b[31mred\x1b[0m\ttab\nnl\udcff"


def test_without_fences_bufinfo_is_opened_not_read(fake: dict[str, Any]) -> None:
    ref = reference()
    fake["bpf"] = FakeBpf(bpf_buffers(ref, fences=False), fixture_holders())
    snap = collect(live_roots())
    assert fake["bufinfo_reads"] == 0 and snap.sources["bufinfo"] == "ok"
    assert [same_view(b) for b in snap.buffers] == [same_view(b) for b in ref.buffers]
    assert all(b.fences == () for b in snap.buffers)
    assert snap.totals.kernel_only_bytes == 262144


def test_without_debugfs_every_buffer_still_shows(fake: dict[str, Any], tmp_path: Path) -> None:
    """--debugfs-root /an/empty/dir: a machine without debugfs."""
    ref = reference()
    fake["bpf"] = FakeBpf(bpf_buffers(ref), fixture_holders())
    snap = collect(live_roots(debugfs=tmp_path))
    assert snap.sources["bufinfo"].startswith("unavailable: debugfs is not mounted at ")
    assert snap.sources["bpf"] == "ok"
    assert [same_view(b) for b in snap.buffers] == [same_view(b) for b in ref.buffers]
    assert [b.attachments for b in snap.buffers] == [b.attachments for b in ref.buffers]  # named by the iterator
    assert all(b.fences == () for b in snap.buffers)
    assert snap.totals == ref.totals


def test_more_devices_than_named_sends_for_bufinfo(fake: dict[str, Any]) -> None:
    ref = reference()
    listed = bpf_buffers(ref, fences=False)
    listed[0] = listed[0]._replace(attachments=9)  # 9 attached, the first 8 named
    fake["bpf"] = FakeBpf(listed, fixture_holders())
    snap = collect(live_roots())
    assert fake["bufinfo_reads"] == 1
    assert [b.attachments for b in snap.buffers] == [b.attachments for b in ref.buffers]  # bufinfo's


def test_task_iterators_without_the_dmabuf_iterator_read_bufinfo_and_fdinfo(fake: dict[str, Any]) -> None:
    """6.12: no dma-buf iterator; the holders still come from BPF, buffers from bufinfo, and the
    named buffers' exact names from fdinfo, read for the fds the task iterator found."""
    ref = reference()
    fake["bpf"] = FakeBpf(NO_DMABUF_ITER, fixture_holders())
    snap = collect(live_roots())
    assert snap.sources["bpf"] == f"unavailable: {NO_DMABUF_ITER}"
    assert snap.sources["bpf_holders"] == "ok"
    assert [same_view(b) for b in snap.buffers] == [same_view(b) for b in ref.buffers]
    assert {b.size_source for b in snap.buffers} == {"bufinfo", "fdinfo"}
    assert fake["fdinfo_reads"] == 2  # the named ones, 40002 and 40003 (held twice, read once)
    assert processes(snap) == processes(ref) and snap.totals == ref.totals


def test_an_fd_closed_before_its_fdinfo_is_read_holds_nothing(fake: dict[str, Any]) -> None:
    """The holders are added while bufinfo is read, before it says which buffers need fdinfo; an
    fd whose fdinfo is gone by then (closed since the task iterator saw it) is taken out again."""
    ref = reference()
    seen = fixture_holders()
    # a named buffer, so its fdinfo is read, and that fd's is gone
    fds: dict[int, dict[int, tuple[int, ...]]] = {1999: {HOSTILE: (999,)}, **seen.fds}
    fake["bpf"] = FakeBpf(NO_DMABUF_ITER, Holders(fds, seen.maps))
    snap = collect(live_roots())
    assert [same_view(b) for b in snap.buffers] == [same_view(b) for b in ref.buffers]
    assert processes(snap) == processes(ref) and snap.totals == ref.totals


def test_holders_unavailable_walks_proc(fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ref = reference()
    fake["bpf"] = FakeBpf(bpf_buffers(ref), NEEDS_ROOT)
    walked: list[int] = []
    monkeypatch.setattr("dmabuf_inspect.scan.snapshot._Scan.scan_fds", lambda self, pid, scan: walked.append(pid))
    snap = collect(live_roots())
    assert snap.sources["bpf_holders"] == f"unavailable: {NEEDS_ROOT}"
    assert sorted(walked) == [1, *PIDS]  # the fallback walked /proc


def test_no_bpf_asks_bpf_nothing(fake: dict[str, Any]) -> None:
    fake["bpf"] = FakeBpf(bpf_buffers(reference()), fixture_holders())
    snap = collect(live_roots(bpf=False))
    assert fake["bpf"].calls == []
    assert snap.sources["bpf"] == snap.sources["bpf_holders"] == "unavailable: turned off (--no-bpf)"


def test_a_verifier_refusal_is_one_line_and_the_scan_goes_on(fake: dict[str, Any]) -> None:
    refused = "the verifier refused the dmabuf program: R2 invalid mem access 'scalar'"
    fake["bpf"] = FakeBpf(refused, "the verifier refused the task_file program: access beyond struct inode")
    snap = collect(live_roots(bpf_iter=None))
    assert snap.sources["bpf"] == f"unavailable: {refused}; no pinned iterator at {bpfscan.DEFAULT_PIN} " + (
        "(root pins one: dmabuf-inspect bpf pin)"
    )
    assert snap.sources["bpf_holders"].startswith("unavailable: the verifier refused the task_file program: ")
    assert all("\n" not in v for v in snap.sources.values())


# --- a pinned iterator (Android's format) ----------------------------------------------------------------


def android(buffers: list[BpfBuffer]) -> bytes:
    return bpfscan.android_text(buffers)


def test_a_pinned_iterator_lists_every_buffer_without_counts(fake: dict[str, Any], tmp_path: Path) -> None:
    ref = reference()
    pin = tmp_path / "pin"
    pin.write_bytes(android(bpf_buffers(ref)))
    fake["bpf"] = FakeBpf(bpf_buffers(ref), fixture_holders())
    snap = collect(live_roots(debugfs=tmp_path / "none", bpf_iter=str(pin)))
    assert snap.sources["bpf"] == "ok" and fake["bpf"].calls == ["holders"]  # --bpf-iter: not ours
    got = {b.inode: (b.size_bytes, b.exporter, b.name, b.holders) for b in snap.buffers}
    want = {b.inode: (b.size_bytes, b.exporter, b.name, b.holders) for b in ref.buffers}
    assert got == want  # the held ones' names from fdinfo, exact; the rest from the pin
    by = {b.inode: b for b in snap.buffers}
    assert (by[40004].size_source, by[40004].count, by[40004].kernel_refs) == ("bpf", None, None)  # kernel-only
    assert by[40005].size_source == "bpf"  # held by a mapping only: its size from the pin, not the mapping
    assert snap.totals.kernel_only_bytes == ref.totals.kernel_only_bytes == 262144


def test_the_pin_at_androids_path_is_read_when_ours_cannot_load(
    fake: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = reference()
    pin = tmp_path / "dmabuf" / "prog_dmabufIter_iter_dmabuf"
    pin.parent.mkdir()
    pin.write_bytes(android(bpf_buffers(ref)))
    monkeypatch.setattr(bpfscan, "DEFAULT_PIN", str(pin))
    fake["bpf"] = FakeBpf(NEEDS_ROOT, NEEDS_ROOT)
    snap = collect(live_roots(debugfs=tmp_path / "none"))
    assert fake["bpf"].calls == ["buffers", "holders"]
    assert snap.sources["bpf"] == "ok"
    assert {b.inode for b in snap.buffers} == {b.inode for b in ref.buffers}


def test_a_process_that_cannot_be_read_makes_kernel_only_unknown(
    fake: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a normal user: the pin lists every buffer, but a process we may not read may hold the
    ones no process was seen holding."""
    pin = tmp_path / "pin"
    pin.write_bytes(android(bpf_buffers(reference())))
    fake["bpf"] = FakeBpf(NEEDS_ROOT, NEEDS_ROOT)
    real_open_dir = Tree.open_dir

    def denied(self: Tree, rel: str) -> int:
        if rel == "2003/fd":
            raise PermissionError(13, "Permission denied", rel)
        return real_open_dir(self, rel)

    monkeypatch.setattr(Tree, "open_dir", denied)
    snap = collect(live_roots(debugfs=tmp_path / "none", bpf_iter=str(pin)))
    assert snap.denied_pids == (2003,)
    assert snap.totals.kernel_only_bytes is None
    kernel_only = next(b for b in snap.buffers if b.inode == 40004)
    assert kernel_only.holders == () and kernel_only.kernel_only is None  # unknown, not "the kernel's"


@pytest.mark.parametrize(
    ("text", "state", "skipped"),
    [
        (b"\x1b[31mgarbage\nmore garbage\n", "unavailable: {pin}: not a dma-buf iterator's output", None),
        (b"", "ok", None),
        (b"junk\n40001\n4096\n\ndrm\n40004\n262144\n\ndrm\n40005\n10485", "ok", "2 lines"),
        (b"40001\n4096\nna\nme\ndrm\n", "ok", None),  # a name with a newline, put back together
    ],
)
def test_bad_pinned_files_never_crash_the_scan(
    fake: dict[str, Any], tmp_path: Path, text: bytes, state: str, skipped: str | None
) -> None:
    pin = tmp_path / "pin"
    pin.write_bytes(text)
    fake["bpf"] = FakeBpf(NEEDS_ROOT, NEEDS_ROOT)
    snap = collect(live_roots(debugfs=tmp_path / "none", bpf_iter=str(pin)))
    assert snap.sources["bpf"].startswith(state.format(pin=pin))
    assert "\n" not in snap.sources["bpf"]
    broken = [e for e in snap.errors if e.source == "bpf"]
    if skipped is None:
        assert broken == []
    else:
        assert [e.kind for e in broken] == ["broken"] and f"{skipped} fit no buffer record" in broken[0].error


def test_a_name_with_newlines_in_a_pin(fake: dict[str, Any], tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_bytes(b"40004\n262144\nna\nme\ndrm\n")
    fake["bpf"] = FakeBpf(NEEDS_ROOT, NEEDS_ROOT)
    snap = collect(live_roots(debugfs=tmp_path / "none", bpf_iter=str(pin)))
    assert next(b for b in snap.buffers if b.inode == 40004).name == "na\nme"


# --- capture: the iterator's output kept in the tree ----------------------------------------------------


@pytest.fixture
def live_copy(tmp_path: Path) -> Path:
    """A copy of the fixture to capture from, as if live (its fd links are text)."""
    tree = tmp_path / "src"
    shutil.copytree(FIXTURE, tree, symlinks=True)
    return tree


def test_capture_keeps_the_iterators_output_and_tree_reads_it_back(
    fake: dict[str, Any], live_copy: Path, tmp_path: Path
) -> None:
    ref = reference()
    fake["bpf"] = FakeBpf(bpf_buffers(ref), fixture_holders())
    report = capture(str(tmp_path / "cap"), live_roots(live_copy, debugfs=tmp_path / "none"))
    assert report.sources["bpf"] == "ok"
    kept = tmp_path / "cap/sys/fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf"
    assert kept.read_bytes() == android(bpf_buffers(ref))
    snap = collect(Roots.from_tree(str(tmp_path / "cap")))
    assert snap.sources["bpf"] == "ok (captured)"
    jsonschema.validate(json.loads(dumps(snap)), schemas.load(schemas.SNAPSHOT))
    assert snap.sources["bufinfo"].startswith("unavailable")
    assert {b.inode for b in snap.buffers} == {b.inode for b in ref.buffers}
    assert snap.totals.kernel_only_bytes == 262144
    assert collect(Roots.from_tree(str(tmp_path / "cap"), bpf=False)).totals.kernel_only_bytes is None
    # a capture of that capture keeps it too
    again = capture(str(tmp_path / "cap2"), Roots.from_tree(str(tmp_path / "cap")))
    assert again.sources["bpf"] == "ok"
    assert (tmp_path / "cap2/sys/fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf").read_bytes() == kept.read_bytes()


def test_capture_says_why_bpf_is_missing(fake: dict[str, Any], live_copy: Path, tmp_path: Path) -> None:
    fake["bpf"] = FakeBpf(NO_DMABUF_ITER, NEEDS_ROOT)
    report = capture(str(tmp_path / "cap"), live_roots(live_copy))
    assert report.sources["bpf"].startswith(f"unavailable: {NO_DMABUF_ITER}")
    assert not (tmp_path / "cap/sys/fs").exists()
    snap = collect(Roots.from_tree(str(tmp_path / "cap")))
    assert snap.sources["bpf"] == bpfscan.NOT_CAPTURED


def test_a_capture_without_bpf_output_is_read_as_before() -> None:
    snap = collect(Roots.from_tree(str(FIXTURE)))
    ref = reference()
    assert snap.sources["bpf"] == bpfscan.NOT_CAPTURED
    assert snap.sources["bpf_holders"] == bpfscan.CAPTURED_HOLDERS
    assert snap.buffers == ref.buffers and snap.totals == ref.totals


def test_bpf_applies_only_to_the_live_proc() -> None:
    roots = live_roots()  # live=True, but not the real /proc: a test's pretence
    assert not bpfscan.live(roots)
    assert bpfscan.read_buffers(roots).state == bpfscan.NOT_LIVE_PROC
    assert bpfscan.read_holders(roots, include_maps=True) == (None, bpfscan.NOT_LIVE_PROC)


def test_the_shared_source_is_not_inherited_over_fork() -> None:
    first = bpfscan.shared_source()
    assert bpfscan.shared_source() is first
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, b"new" if bpfscan.shared_source() is not first else b"same")
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read()
    os.waitpid(pid, 0)
    assert said == b"new"
    bpfscan.close_shared()
    assert bpfscan.shared_source() is not first


def test_an_unavailable_iterator_is_raised_anew_each_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """6.12 has no dma-buf iterator: every scan asks again. Re-raising one stored exception grew
    its traceback by each scan's frames and kept every scan's data alive (48 MB over 1000 scans)."""
    from dmabuf_inspect.kernel.bpf.source import BpfSource

    source = BpfSource(cache_dir=None)
    loads: list[str] = []

    def refuse(name: str) -> Any:
        loads.append(name)
        raise BpfUnavailable(NO_DMABUF_ITER)

    monkeypatch.setattr(source, "_load", refuse)
    seen: list[BpfUnavailable] = []
    for _ in range(3):
        with pytest.raises(BpfUnavailable) as info:
            source._iterator("dmabuf")
        seen.append(info.value)
    assert loads == ["dmabuf"]  # loaded once, refused from memory after
    assert len({id(e) for e in seen}) == 3
    assert all(e.reason == NO_DMABUF_ITER for e in seen)
    depth = [len(list(_frames(e.__traceback__))) for e in seen]
    assert depth[2] == depth[1]


def _frames(tb: Any) -> Iterator[Any]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_what_the_task_iterator_read_spares_the_status_and_stat_of_each_holder(
    fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmabuf_inspect.kernel.bpf.records import TaskInfo

    ref = reference()
    hz = os.sysconf("SC_CLK_TCK")
    tasks = {
        p.pid: TaskInfo(
            p.ppid or 0, p.uid, (p.start_ticks or 0) * (10**9 // hz), p.comm.encode("utf-8", "surrogateescape")
        )
        for p in ref.processes
    }
    held = fixture_holders()
    fake["bpf"] = FakeBpf(bpf_buffers(ref), Holders(held.fds, held.maps, tasks))
    read: list[str] = []
    real_read_once = Tree.read_once

    def counting(self: Tree, rel: str, size: int) -> bytes:
        read.append(rel)
        return real_read_once(self, rel, size)

    monkeypatch.setattr(Tree, "read_once", counting)
    snap = collect(live_roots())
    assert processes(snap) == processes(ref) and [p.ppid for p in snap.processes] == [p.ppid for p in ref.processes]
    assert sorted(r for r in read if "/fdinfo/" not in r) == sorted(f"{pid}/cmdline" for pid in tasks)
    # a process the task iterator did not list (it came after the walk) is read from /proc
    fake["bpf"] = FakeBpf(bpf_buffers(ref), Holders(held.fds, held.maps, {}))
    read.clear()
    assert processes(collect(live_roots())) == processes(ref)
    assert {r.rsplit("/", 1)[1] for r in read} >= {"status", "stat", "cmdline"}
