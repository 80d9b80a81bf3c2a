"""Our BPF iterators on the lab kernels, against what bufinfo and /proc say (issue 14, phase 1).

On 7.3 the dma-buf iterator lists the same buffers as debugfs bufinfo: inodes, sizes, exporters,
names (one with a newline), file counts and attached devices, for buffers held by fd, by mapping
only, and by the kernel only (the scene's buffer imported into vgem whose fd was closed). On 6.12
it is missing, and says so. On both, task_file and task_vma find exactly the fds and mappings
that /proc shows (kernel/fdwalk.py, kernel/maps.py), each process once however many threads it has.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from scene import Scene

from dmabuf_inspect.ioctl.heaps import heap_alloc
from dmabuf_inspect.kernel import fdwalk
from dmabuf_inspect.kernel.bpf import btf as btf_mod
from dmabuf_inspect.kernel.bpf import programs
from dmabuf_inspect.kernel.bpf.records import BpfBuffer, bufinfo_table
from dmabuf_inspect.kernel.bpf.source import (
    NO_DMABUF_ITER,
    BpfSource,
    BpfUnavailable,
    load_layout,
)
from dmabuf_inspect.kernel.bpf.source import (
    Iterator as BpfIterator,
)
from dmabuf_inspect.kernel.bpf.syscall import VerifierError
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo, parse_bufinfo_table
from dmabuf_inspect.kernel.maps import parse_maps
from dmabuf_inspect.model import BufInfoEntry, MapEntry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from loadgen import load

pytestmark = pytest.mark.kernel
BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"
HAS_DMABUF_ITER = tuple(map(int, os.uname().release.split(".")[:2])) >= (6, 16)
NEWLINE_NAME = "bpf\nline two"


def bufinfo() -> dict[int, BufInfoEntry]:
    with open(BUFINFO, "rb") as f:
        entries = parse_bufinfo(f.read()).entries
    return {e.inode: e for e in entries if e.inode is not None}


def proc_holders() -> tuple[dict[int, dict[int, tuple[int, ...]]], dict[int, list[MapEntry]]]:
    """Every process's dma-buf fds and mappings as /proc shows them (the scan's own readers)."""
    dev = None
    fds: dict[int, dict[int, tuple[int, ...]]] = {}
    maps: dict[int, list[MapEntry]] = {}
    with heap_alloc("system", 4096) as probe:
        dev = os.fstat(probe.fd).st_dev
        probe_inode = probe.inode
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                held = fdwalk.fds_by_inode(dfd, dev)
            finally:
                os.close(dfd)
            if pid == os.getpid():
                held.pop(probe_inode, None)
            if held:
                fds[pid] = held
            with open(f"/proc/{pid}/maps", "rb") as f:
                mapped = parse_maps(f.read())
            if mapped:
                maps[pid] = mapped
    return fds, maps


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with Scene.start() as s:
        yield s


@pytest.fixture(scope="module")
def source() -> Iterator[BpfSource]:
    with BpfSource() as s:
        yield s


# --- BTF: the parser on the kernel's own, against facts found another way --------------------------


def test_btf_of_the_lab_kernel_gives_the_iterators_it_has() -> None:
    btf = btf_mod.Btf.load()
    layout = programs.Layout.from_btf(btf)
    assert layout.task_file_iter_id is not None and layout.task_vma_iter_id is not None
    assert [name for name, _ in btf.params(layout.task_file_iter_id)] == ["meta", "task", "fd", "file"]
    # 6.12 and 7.3 both: struct dma_buf begins size, file; exp_name and name at 64 and 72
    assert (layout.dma_buf_size, layout.dma_buf_file, layout.dma_buf_exp_name, layout.dma_buf_name) == (0, 8, 64, 72)
    if HAS_DMABUF_ITER:
        assert layout.dmabuf_iter_id is not None
        assert btf.kind(layout.dmabuf_iter_id) == btf_mod.FUNC
        assert btf.find("bpf_iter_dmabuf", btf_mod.STRUCT) not in (None, layout.dmabuf_iter_id)  # the kfuncs' state
        assert btf.find("bpf_iter_dmabuf_new", btf_mod.FUNC) is not None
        assert layout.file_count_is_ref  # file_ref_t since 6.13
    else:
        assert layout.dmabuf_iter_id is None
        assert not layout.file_count_is_ref  # atomic_long_t f_count in 6.12


# --- the dma-buf iterator ---------------------------------------------------------------------------


def test_the_dmabuf_iterator_is_there_from_6_16_or_says_why_not(source: BpfSource) -> None:
    if HAS_DMABUF_ITER:
        assert isinstance(source.buffers(), list)
        return
    with pytest.raises(BpfUnavailable) as caught:
        source.buffers()
    assert caught.value.reason == NO_DMABUF_ITER == "kernel has no dma-buf BPF iterator (6.16+)"


def _compare(ours: dict[int, BpfBuffer], theirs: dict[int, BufInfoEntry]) -> None:
    assert set(ours) == set(theirs)
    for inode, entry in theirs.items():
        mine = ours[inode]
        assert (mine.size_bytes, mine.exp_name, mine.name) == (entry.size_bytes, entry.exp_name, entry.name), inode
        assert mine.count == entry.count, (inode, mine, entry)
        assert (mine.flags, mine.mode) == (entry.flags, entry.mode), inode
        assert mine.devices == entry.attachments and mine.attachments == len(entry.attachments), inode


# Only where the kernel has the iterator: the lab counts a skip as a failure.
def test_dmabuf_iterator_lists_what_bufinfo_lists(scene: Scene, source: BpfSource) -> None:
    with heap_alloc("system", 8192) as odd:
        odd.set_name(NEWLINE_NAME)
        with open(BUFINFO, "rb") as f:
            text = f.read()
        ours = {b.inode: b for b in source.buffers()}
        with open(BUFINFO, "rb") as f:
            assert f.read() == text  # nothing moved while the iterator ran
    before = {e.inode: e for e in parse_bufinfo(text).entries if e.inode is not None}
    _compare(ours, before)
    expected = scene.expected
    for role in ("shared", "named", "mapped", "imported"):  # by fd, by name, by mapping only, kernel only
        want = expected[role]
        got = ours[want.inode]
        assert (got.size_bytes, got.exp_name, got.name) == (want.size_bytes, want.exporter, want.name), role
    assert ours[expected["imported"].inode].devices == ("vgem",)
    assert ours[odd.inode].name == NEWLINE_NAME
    # what the scan will join on when bufinfo is missing: bufinfo's own columns, fences aside
    table, real = bufinfo_table(sorted(ours.values())), parse_bufinfo_table(text)
    assert (table.total_objects, table.total_bytes) == (real.total_objects, real.total_bytes)
    columns = ("inode", "size_bytes", "flags", "mode", "count", "exp_name", "name", "attachments")
    rows = sorted(zip(*(getattr(real, c) for c in columns), strict=True))
    assert rows == list(zip(*(getattr(table, c) for c in columns), strict=True))


def test_dmabuf_iterator_reads_a_buffers_size_and_inode_as_fstat_does(source: BpfSource) -> None:
    """What the BTF offsets say, checked against the kernel's answer through another door."""
    sizes = (4096, 65536, 1 << 20)
    bufs = [heap_alloc("system", size) for size in sizes]
    try:
        ours = {b.inode: b for b in source.buffers()}
        for buf, size in zip(bufs, sizes, strict=True):
            assert ours[os.fstat(buf.fd).st_ino].size_bytes == size
            assert ours[buf.inode].exp_name == "system"
            assert ours[buf.inode].count == 1  # our one fd
    finally:
        for buf in bufs:
            buf.close()


def test_dmabuf_iterator_lists_thousands_of_buffers_whole() -> None:
    """Past one read() of the iterator (32 KiB): the 6.19 fix for reads after the first."""
    with load(20, 100, shared=0, map_every=0), BpfSource() as fresh:
        ours = fresh.buffers()
        theirs = bufinfo()
    assert len(ours) == len(theirs) >= 2000
    assert {b.inode for b in ours} == set(theirs)


if not HAS_DMABUF_ITER:
    del test_dmabuf_iterator_lists_what_bufinfo_lists
    del test_dmabuf_iterator_reads_a_buffers_size_and_inode_as_fstat_does
    del test_dmabuf_iterator_lists_thousands_of_buffers_whole


def test_a_refused_program_gives_the_verifiers_line() -> None:
    layout = load_layout()
    wrong = layout._replace(inode_i_ino=1 << 14)  # far past struct inode's end
    assert layout.task_file_iter_id is not None
    with pytest.raises(VerifierError) as caught:
        BpfIterator("task_file", programs.task_file_records(wrong), layout.task_file_iter_id)
    reason = caught.value.reason
    assert "\n" not in reason and "inode" in reason and "16384" in reason, reason
    assert str(caught.value).startswith("the verifier refused the task_file program: ")


# --- the task iterators -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threaded_holder() -> Iterator[int]:
    """This process holds one more mapped buffer, named, with three extra threads running."""
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in threads:
        t.start()
    with heap_alloc("system", 16384) as buf:
        buf.set_name("bpf-mapped")  # the VMA program reads it through file->private_data
        m = buf.mmap()
        try:
            yield buf.inode
        finally:
            m.close()
            stop.set()
            for t in threads:
                t.join()


def test_task_iterators_find_what_proc_shows(scene: Scene, threaded_holder: int, source: BpfSource) -> None:
    with load(10, 20, shared=2):
        proc_fds, proc_maps = proc_holders()
        held = source.holders()
        proc_fds_after, proc_maps_after = proc_holders()
    assert (proc_fds, proc_maps) == (proc_fds_after, proc_maps_after)  # quiet while we looked
    assert held.fds == proc_fds
    assert held.maps == proc_maps
    me = os.getpid()
    assert threaded_holder in held.fds[me] and [m.inode for m in held.maps[me]].count(threaded_holder) == 1
    assert [m.name for m in held.maps[me] if m.inode == threaded_holder] == ["bpf-mapped"]
    for pid in scene.pids.values():
        assert pid in held.fds
    mapped_only = scene.expected["mapped"].inode
    owner = scene.pids["scene-owner"]
    assert mapped_only not in held.fds[owner] and any(m.inode == mapped_only for m in held.maps[owner])


def test_task_iterator_says_who_each_process_is_as_proc_does(scene: Scene, source: BpfSource) -> None:
    """iter/task stands in for /proc/PID/status and stat in a scan with BPF holders: the same
    ppid, real uid, start ticks and comm, for every user process both saw (kernel threads it
    leaves out: stat names those by their worker)."""
    from dmabuf_inspect.kernel.procinfo import identify
    from dmabuf_inspect.kernel.reader import Tree

    with load(10, 20, shared=2) as children:
        tasks = source.tasks()
        proc = Tree("/proc", live=True)
        compared = 0
        for pid in sorted(tasks):
            from_proc = identify(proc, pid)
            if from_proc is None:
                continue  # gone since
            assert identify(proc, pid, tasks[pid]) == from_proc, pid
            compared += 1
        for pid in [*children, *scene.pids.values(), os.getpid()]:
            assert pid in tasks
    assert compared >= 10 + len(scene.pids)
    kthreadd = 2
    assert kthreadd not in tasks
