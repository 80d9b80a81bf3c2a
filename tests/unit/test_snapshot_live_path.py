"""The live scan path (stat per fd, fdinfo once per inode, bufinfo first) on a fake /proc.

This machine's kernel has no dma-bufs, so `os.stat` is stood in for: it answers for fd links
whose text says `/dmabuf:` with a dev/inode taken from the fake tree; all else is real I/O.
The scan walks fd tables with os.stat() here; tests/test_fdwalk.py shows the C walk agrees.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dmabuf_inspect.kernel import fdwalk
from dmabuf_inspect.kernel.reader import Roots, Tree
from dmabuf_inspect.scan.snapshot import collect

DMABUF_DEV = 0xD4B

FDINFO = "pos:\t0\nflags:\t02\nmnt_id:\t9\nino:\t{ino}\nsize:\t{size}\ncount:\t{count}\nexp_name:\tsystem\n"
BUFINFO = (
    "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
    "{rows}\nTotal {n} objects, {total} bytes\n"
)
ROW = (
    "{size:08d}\t00000002\t00080007\t{count:08d}\tsystem\t{ino:08d}\t<none>\n"
    "\tAttached Devices:\nTotal 0 devices attached\n\n"
)


def make_tree(tmp_path: Path, fds: dict[int, str], inodes: dict[int, int], bufinfo_rows: list[dict[str, int]]) -> Roots:
    pid = os.getpid()  # identify() asks psutil about the live pid: use our own
    proc = tmp_path / "proc" / str(pid)
    (proc / "fd").mkdir(parents=True)
    (proc / "fdinfo").mkdir()
    (proc / "maps").write_text("")
    for fd, target in fds.items():
        os.symlink(target, proc / "fd" / str(fd))
        if fd in inodes:
            (proc / "fdinfo" / str(fd)).write_text(FDINFO.format(ino=inodes[fd], size=4096, count=2))
    debug = tmp_path / "sys" / "kernel" / "debug" / "dma_buf"
    debug.mkdir(parents=True)
    if bufinfo_rows:
        rows = "".join(ROW.format(**r) for r in bufinfo_rows)
        (debug / "bufinfo").write_text(BUFINFO.format(rows=rows, n=len(bufinfo_rows), total=0))
    (tmp_path / "dev").mkdir()
    return Roots(
        proc_root=str(tmp_path / "proc"),
        sys_root=str(tmp_path / "sys"),
        debugfs_root=str(tmp_path / "sys" / "kernel" / "debug"),
        dev_root=str(tmp_path / "dev"),
        live=True,  # pretend the tree is /proc: fd links are stat()ed
    )


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Pretend the tree is /proc: fd links are stat()ed, with dev/ino from a table."""
    calls: dict[str, Any] = {"stat": 0, "readlink": 0, "fdinfo": [], "inodes": {}}
    real_stat, real_readlink, real_read, real_read_once = os.stat, os.readlink, Tree.read, Tree.read_once

    def fake_stat(path: Any, *, dir_fd: int | None = None, follow_symlinks: bool = True) -> os.stat_result:
        if dir_fd is None:
            return real_stat(path, follow_symlinks=follow_symlinks)
        calls["stat"] += 1
        target = real_readlink(path, dir_fd=dir_fd)
        if target.startswith("/dmabuf:"):
            ino = calls["inodes"][int(path)]
            return os.stat_result((0o600, ino, DMABUF_DEV, 1, 0, 0, 4096, 0, 0, 0))
        if target == "gone":
            raise FileNotFoundError(path)
        return os.stat_result((0o600, 1, 1, 1, 0, 0, 0, 0, 0, 0))

    def fake_readlink(path: Any, *, dir_fd: int | None = None) -> str:
        calls["readlink"] += 1
        return str(real_readlink(path, dir_fd=dir_fd))

    def counting_read(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        if "/fdinfo/" in rel:
            calls["fdinfo"].append(rel.rsplit("/", 1)[1])
        return real_read(self, rel, limit)

    def counting_read_once(self: Tree, rel: str, size: int) -> bytes:
        if "/fdinfo/" in rel:
            calls["fdinfo"].append(rel.rsplit("/", 1)[1])
        return real_read_once(self, rel, size)

    monkeypatch.setattr(os, "stat", fake_stat)
    monkeypatch.setattr(fdwalk, "fds_by_inode", fdwalk.fds_by_inode_py)  # the C walk would not see fake_stat
    monkeypatch.setattr(os, "readlink", fake_readlink)
    monkeypatch.setattr(Tree, "read", counting_read)
    monkeypatch.setattr(Tree, "read_once", counting_read_once)
    calls["tmp"] = tmp_path
    return calls


def test_fdinfo_is_read_once_per_inode_and_stat_replaces_readlink(live: dict[str, Any]) -> None:
    fds = {3: "/dmabuf:", 4: "/dmabuf:", 5: "pipe:[77]", 6: "/dmabuf:", 7: "/dev/null", 8: "gone"}
    live["inodes"].update({3: 100, 4: 100, 6: 101})
    roots = make_tree(live["tmp"], fds, {3: 100, 4: 100, 6: 101}, [])
    snap = collect(roots)
    assert {b.inode: [h.fds for h in b.holders] for b in snap.buffers} == {100: [(3, 4)], 101: [(6,)]}
    assert sorted(live["fdinfo"]) in (["3", "6"], ["4", "6"])  # one read per inode
    # readlink only until the first dma-buf taught us its st_dev (listdir order is arbitrary)
    assert live["readlink"] < len(fds)
    assert snap.sources["bufinfo"].startswith("unavailable")
    assert {b.inode: b.kernel_refs for b in snap.buffers} == {100: 0, 101: 1}


def test_bufinfo_first_means_no_fdinfo_reads_for_unnamed_buffers(live: dict[str, Any]) -> None:
    live["inodes"].update({3: 200, 4: 201})
    roots = make_tree(
        live["tmp"],
        {3: "/dmabuf:", 4: "/dmabuf:"},
        {3: 200, 4: 201},
        [
            {"size": 8192, "count": 1, "ino": 200},
            {"size": 4096, "count": 3, "ino": 201},
            {"size": 65536, "count": 1, "ino": 202},
        ],
    )
    snap = collect(roots)
    assert live["fdinfo"] == []
    got = {b.inode: (b.size_bytes, b.size_source, b.count, b.kernel_refs, len(b.holders)) for b in snap.buffers}
    assert got == {200: (8192, "bufinfo", 1, 0, 1), 201: (4096, "bufinfo", 3, 2, 1), 202: (65536, "bufinfo", 1, 1, 0)}
    assert snap.totals.kernel_only_bytes == 65536


def test_legacy_anon_inode_fds_are_reported_not_merged(live: dict[str, Any]) -> None:
    roots = make_tree(live["tmp"], {3: "anon_inode:dmabuf", 4: "anon_inode:[eventfd]", 5: "anon_inode:dmabuf"}, {}, [])
    snap = collect(roots)
    assert snap.buffers == ()
    assert [e.error for e in snap.errors if "before 5.3" in e.error] == [
        "2 dma-buf fd(s) (3, 5) on a kernel before 5.3: nothing tells which buffer they hold"
    ]


def test_one_buffer_under_three_fds_and_two_buffers_under_two(live: dict[str, Any]) -> None:
    fds = {3: "/dmabuf:", 9: "/dmabuf:", 5: "/dmabuf:", 6: "/dmabuf:", 7: "/dmabuf:", 4: "/dmabuf:"}
    inodes = {3: 300, 9: 300, 5: 300, 6: 301, 7: 302, 4: 301}
    live["inodes"].update(inodes)
    snap = collect(make_tree(live["tmp"], fds, inodes, []))
    assert {b.inode: [h.fds for h in b.holders] for b in snap.buffers} == {
        300: [(3, 5, 9)],
        301: [(4, 6)],
        302: [(7,)],
    }
    assert {b.inode: b.kernel_refs for b in snap.buffers} == {300: 0, 301: 0, 302: 1}


def test_bufinfo_is_read_in_a_thread_of_its_own_meanwhile(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dmabuf_inspect.kernel import bufinfo

    readers: list[int] = []
    read = Tree.read

    def noting_thread(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        if rel == bufinfo.BUFINFO:
            readers.append(threading.get_ident())
        return read(self, rel, limit)

    monkeypatch.setattr(Tree, "read", noting_thread)
    live["inodes"].update({3: 200})
    roots = make_tree(live["tmp"], {3: "/dmabuf:"}, {3: 200}, [{"size": 8192, "count": 1, "ino": 200}])
    snap = collect(roots)
    assert len(readers) == 1 and readers[0] != threading.get_ident()
    assert snap.sources["bufinfo"] == "ok" and [b.size_source for b in snap.buffers] == ["bufinfo"]
    assert list(snap.sources)[:5] == ["fdinfo", "bpf", "bufinfo", "sysfs", "bpf_holders"]


def test_an_error_of_the_bufinfo_thread_is_the_scans(live: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from dmabuf_inspect.kernel import bufinfo

    read = Tree.read

    def denied(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        if rel == bufinfo.BUFINFO:
            raise PermissionError(13, "Permission denied", self.path(rel))
        return read(self, rel, limit)

    monkeypatch.setattr(Tree, "read", denied)
    live["inodes"].update({3: 200})
    roots = make_tree(live["tmp"], {3: "/dmabuf:"}, {3: 200}, [{"size": 8192, "count": 1, "ino": 200}])
    snap = collect(roots)
    assert snap.sources["bufinfo"].startswith("unavailable") and "ermission" in snap.sources["bufinfo"]
    assert [b.size_source for b in snap.buffers] == ["fdinfo"]


def test_with_no_thread_to_be_had_bufinfo_is_read_in_the_scans(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import _thread

    def refused(*_args: object) -> int:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", refused)
    live["inodes"].update({3: 200})
    roots = make_tree(live["tmp"], {3: "/dmabuf:"}, {3: 200}, [{"size": 8192, "count": 1, "ino": 200}])
    snap = collect(roots)
    assert snap.sources["bufinfo"] == "ok" and [b.size_source for b in snap.buffers] == ["bufinfo"]
