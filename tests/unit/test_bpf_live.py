"""The loader on this machine's kernel, where it may load BPF (root with BTF): the verifier takes
our programs, and the task iterators find what /proc shows. This machine may have no dma-bufs, so
the walk is checked with another filesystem's files (the programs take the superblock magic):
pipes for task_file, a memfd's mappings for task_vma. The lab does the same with dma-bufs
(tests/kernel/test_bpf_iterators.py). Without BPF here these tests are skipped, not passed."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from as_user import NOBODY, call_as

from dmabuf_inspect.kernel.bpf import programs, source, syscall
from dmabuf_inspect.kernel.bpf.records import parse_fd_records, parse_vma_records
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT, VerifierError

PIPEFS_MAGIC, TMPFS_MAGIC = 0x50495045, 0x01021994  # include/uapi/linux/magic.h


def _bpf_works() -> str | None:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "no BTF"
    if not source.capable():
        return "not root"
    try:
        layout = source.load_layout()
        assert layout.task_file_iter_id is not None
        source.Iterator("probe", programs.task_file_records(layout, PIPEFS_MAGIC), layout.task_file_iter_id).close()
    except Exception as exc:
        return f"BPF does not load here: {exc}"
    return None


WHY_NOT = _bpf_works()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no BPF on this machine: {WHY_NOT}")


@pytest.fixture(scope="module")
def layout() -> programs.Layout:
    return source.load_layout()


@pytest.fixture(params=["c", "ctypes"])
def call(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """bpf(2) through the C extension, and through ctypes (where it is not built)."""
    if request.param == "c":
        assert syscall._c_bpf is not None, "the C extension is built for the tests (tests/run.sh installs gcc)"
    else:
        monkeypatch.setattr(syscall, "_call", syscall._ctypes_bpf)
    return str(request.param)


def _my_pipes() -> dict[int, tuple[int, ...]]:
    """This process's pipe fds by inode, as /proc/self/fd shows them."""
    held: dict[int, list[int]] = {}
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if stat.S_ISFIFO(st.st_mode) and os.readlink(f"/proc/self/fd/{name}").startswith("pipe:"):
            held.setdefault(st.st_ino, []).append(int(name))
    return {inode: tuple(fds) for inode, fds in held.items()}


def test_task_file_finds_this_processs_pipes_by_inode(layout: programs.Layout, call: str) -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    extra = os.dup(r1)
    assert layout.task_file_iter_id is not None
    it = source.Iterator("task_file", programs.task_file_records(layout, PIPEFS_MAGIC), layout.task_file_iter_id)
    try:
        expected = _my_pipes()
        seen = parse_fd_records(it.read())
        assert _my_pipes() == expected
        inode = os.fstat(r1).st_ino
    finally:
        it.close()
        for fd in (r1, w1, r2, w2, extra):
            os.close(fd)
    assert seen[os.getpid()] == expected
    assert seen[os.getpid()][inode] == (r1, w1, extra)


def test_task_file_reports_a_process_once_whatever_its_threads(layout: programs.Layout) -> None:
    """A child with four threads and one pipe fd: one record, under its pid."""
    code = (
        "import os, sys, threading\n"
        "for _ in range(3): threading.Thread(target=sys.stdin.read, daemon=True).start()\n"
        "print(os.getpid(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(r,))
    try:
        assert child.stdout is not None and child.stdin is not None
        pid = int(child.stdout.readline())
        assert len(os.listdir(f"/proc/{pid}/task")) >= 4
        assert layout.task_file_iter_id is not None
        it = source.Iterator("task_file", programs.task_file_records(layout, PIPEFS_MAGIC), layout.task_file_iter_id)
        try:
            raw = it.read()
        finally:
            it.close()
        records = [rec for rec in programs.FD.iter_unpack(raw) if rec[0] == pid]
        assert len(records) == len(set(records))  # each (fd, inode) once, not once per thread
        assert os.fstat(r).st_ino in {inode for _, fd, inode in records if fd == r}
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(30)
        child.stdout.close()  # type: ignore[union-attr]
        os.close(r)
        os.close(w)


def test_task_vma_finds_this_processs_memfd_mappings(layout: programs.Layout) -> None:
    fd = os.memfd_create("bpf-live-test")
    os.ftruncate(fd, 4 * mmap.PAGESIZE)
    whole = mmap.mmap(fd, 4 * mmap.PAGESIZE)
    tail = mmap.mmap(fd, mmap.PAGESIZE, offset=2 * mmap.PAGESIZE, prot=mmap.PROT_READ)
    inode = os.fstat(fd).st_ino
    assert layout.task_vma_iter_id is not None
    it = source.Iterator("task_vma", programs.task_vma_records(layout, TMPFS_MAGIC), layout.task_vma_iter_id)
    try:
        maps = parse_vma_records(it.read())[os.getpid()]
        with open("/proc/self/maps") as f:
            lines = [line.split() for line in f if f" {inode} " in line and "memfd:bpf-live-test" in line]
    finally:
        it.close()
        whole.close()
        tail.close()
        os.close(fd)
    ours = [(m.start, m.end, m.perms, m.offset_bytes) for m in maps if m.inode == inode]
    proc = [(int(a.split("-")[0], 16), int(a.split("-")[1], 16), p, int(o, 16)) for a, p, o, *_ in lines]
    assert ours == proc and len(ours) == 2
    assert {p for _, _, p, _ in ours} == {"rw-s", "r--s"}


def test_a_program_the_verifier_refuses_is_one_line_with_its_reason(layout: programs.Layout, call: str) -> None:
    wrong = layout._replace(inode_i_ino=1 << 14)
    assert layout.task_file_iter_id is not None
    with pytest.raises(VerifierError) as caught:
        source.Iterator("task_file", programs.task_file_records(wrong, PIPEFS_MAGIC), layout.task_file_iter_id)
    assert "\n" not in caught.value.reason and "16384" in caught.value.reason
    assert "processed" in caught.value.log or "R" in caught.value.log
    assert source.reason_of(caught.value).startswith("the verifier refused the task_file program: ")


def test_an_unprivileged_user_is_told_it_needs_root() -> None:
    def try_it() -> str:
        with source.BpfSource() as bpf:
            try:
                bpf.holders()
            except source.BpfUnavailable as exc:
                return exc.reason
        return "loaded"

    code, out = call_as(NOBODY, try_it)
    assert (code, out) == (0, NEEDS_ROOT)


@pytest.fixture
def bpffs() -> Iterator[Path]:
    """A bpffs of our own, where nobody can reach it (pytest's tmp_path is root's alone)."""
    mount = Path(tempfile.mkdtemp(prefix="dmabuf-inspect-bpffs-"))
    if subprocess.run(["mount", "-t", "bpf", "bpf", str(mount)], capture_output=True).returncode != 0:
        mount.rmdir()
        pytest.skip("cannot mount bpffs here")
    try:
        mount.chmod(0o711)  # as an admin opens /sys/fs/bpf: others may pass, not list
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def test_pin_then_read_as_nobody_then_unpin(layout: programs.Layout, bpffs: Path) -> None:
    if layout.dmabuf_iter_id is None:
        with pytest.raises(source.BpfUnavailable, match=r"kernel has no dma-buf BPF iterator \(6\.16\+\)"):
            source.pin(str(bpffs / "dmabuf" / "iter"))
        return
    path = str(bpffs / "dmabuf" / "iter")
    source.pin(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
        assert stat.S_IMODE(os.stat(bpffs / "dmabuf").st_mode) == 0o755
        with pytest.raises(Exception, match="exists"):
            source.pin(path)
        code, out = call_as(NOBODY, lambda: len(source.read_pinned(path).buffers))
        assert code == 0, out
        assert int(out) == len(source.read_pinned(path).buffers)
    finally:
        source.unpin(path)
    assert not os.path.exists(path) and not os.path.exists(bpffs / "dmabuf")


def test_unpin_leaves_files_off_bpffs_alone(tmp_path: Path) -> None:
    victim = tmp_path / "file"
    victim.write_text("keep me")
    with pytest.raises(Exception, match="not on bpffs"):
        source.unpin(str(victim))
    assert victim.read_text() == "keep me"
    with contextlib.suppress(Exception):
        source.unpin(str(tmp_path / "missing"))


def test_in_a_pid_namespace_of_its_own_the_task_iterators_say_why_not() -> None:
    code = (
        "from dmabuf_inspect.kernel.bpf import source\n"
        "try:\n    source.BpfSource().holders()\nexcept source.BpfUnavailable as exc:\n    print(exc.reason)\n"
    )
    try:
        out = subprocess.run(
            ["unshare", "--pid", "--fork", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if out.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {out.stderr.strip()}")
    assert out.stdout.strip() == source.NOT_INITIAL_PIDNS


def test_a_scan_whose_program_the_verifier_refuses_says_why_and_walks_proc(
    layout: programs.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real refusal (an offset past struct inode's end): sources says the verifier's line, and
    the scan walks /proc instead."""
    from dmabuf_inspect.scan import bpfscan
    from dmabuf_inspect.scan.snapshot import collect

    wrong = layout._replace(inode_i_ino=1 << 14)
    real = programs.task_file_records
    monkeypatch.setattr(programs, "task_file_records", lambda _layout, magic=programs.DMA_BUF_MAGIC: real(wrong, magic))
    walked: list[int] = []
    from dmabuf_inspect.scan import snapshot

    real_scan = snapshot._Scan.scan_fds

    def walk(self: snapshot._Scan, pid: int, s: Any) -> Any:
        walked.append(pid)
        return real_scan(self, pid, s)

    monkeypatch.setattr(snapshot._Scan, "scan_fds", walk)
    bpfscan.close_shared()
    try:
        snap = collect()
    finally:
        bpfscan.close_shared()
    reason = snap.sources["bpf_holders"]
    assert reason.startswith("unavailable: the verifier refused the task_file program: ") and "\n" not in reason
    assert os.getpid() in walked  # the fallback ran
