"""classify_fd / is_udmabuf / classify without a dma-buf: errors for other fds, and the parsers.

The real dma-bufs (udmabuf, system heap, vgem PRIME) are in tests/kernel/test_classify_kernel.py.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import FIXTURES

import dmabuf_inspect
from dmabuf_inspect import classify, classify_fd, is_udmabuf
from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.snapshot import collect

classify_module = importlib.import_module("dmabuf_inspect.classify")  # the package's classify is the function

FDINFO_6_12 = b"pos:\t0\nflags:\t02000002\nmnt_id:\t12\nino:\t4\nsize:\t1048576\ncount:\t1\nexp_name:\tudmabuf\n"
FDINFO_5_10 = b"pos:\t0\nflags:\t02000002\nmnt_id:\t11\nsize:\t4096\ncount:\t2\nexp_name:\tsystem\n"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_pipe_is_not_a_dmabuf(pipe: tuple[int, int]) -> None:
    with pytest.raises(NotADmabufError, match=rf"^fd {pipe[0]} is not a dma-buf: it is a pipe$"):
        classify_fd(pipe[0])
    assert is_udmabuf(pipe[0]) is False


def test_memfd_is_not_a_dmabuf() -> None:
    fd = os.memfd_create("cam\x1b[2J", os.MFD_CLOEXEC)
    try:
        with pytest.raises(NotADmabufError) as info:
            classify_fd(fd)
        assert "is not a dma-buf: it is a memfd (/memfd:cam\\x1b[2J (deleted))" in str(info.value)
        assert "\x1b" not in str(info.value)  # the memfd's name is escaped
        assert is_udmabuf(fd) is False
    finally:
        os.close(fd)


def test_regular_file_and_socket_are_not_dmabufs(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(NotADmabufError, match="it is a regular file"):
            classify_fd(fd)
    finally:
        os.close(fd)
    with socket.socket() as s, pytest.raises(NotADmabufError, match="it is a socket"):
        classify_fd(s.fileno())


def test_closed_fd_is_an_oserror() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        classify_fd(fd)
    assert info.value.errno == errno.EBADF
    assert str(info.value) == f"[Errno {errno.EBADF}] fd {fd} is not an open file descriptor"
    assert not isinstance(info.value, NotADmabufError)
    with pytest.raises(OSError):
        is_udmabuf(fd)
    with pytest.raises(OSError, match="not an open file descriptor"):
        classify_fd(-1)


def test_an_fd_on_the_dmabuf_filesystem_is_trusted_and_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the memfd's filesystem is the dma-buf one (what the first fstatfs() would prove):
    # the parse then runs on its fdinfo, which has no exp_name line.
    fd = os.memfd_create("fake", os.MFD_CLOEXEC)
    try:
        monkeypatch.setattr(classify_module, "_dmabuf_dev", os.fstat(fd).st_dev)
        with pytest.raises(DmabufInspectError, match=rf"^fd {fd}: the fdinfo has no exp_name"):
            classify_fd(fd)
    finally:
        os.close(fd)


def test_parse_6_12_fdinfo() -> None:
    info = classify_module.parse_exporter_info(FDINFO_6_12)
    assert info == dmabuf_inspect.ExporterInfo("udmabuf", "udmabuf", 4, 1048576, None)
    assert info.details.key == "udmabuf"


def test_parse_fdinfo_without_ino_takes_the_given_inode() -> None:
    assert classify_module.parse_exporter_info(FDINFO_5_10).inode is None
    info = classify_module.parse_exporter_info(FDINFO_5_10, inode=77)
    assert (info.exporter, info.exporter_class, info.inode, info.size_bytes) == ("system", "heap", 77, 4096)


def test_parse_name_is_the_rest_of_the_text() -> None:
    # dma_buf_show_fdinfo() prints name last, unescaped: newlines and any bytes may follow.
    text = FDINFO_6_12 + b"name:\tcam\nera:\xff\n"
    info = classify_module.parse_exporter_info(text)
    assert info.name == "cam\nera:\udcff"
    assert classify_module.parse_exporter_info(FDINFO_6_12.replace(b"udmabuf", b"drm") + b"name:\t\n").name == ""


def test_parse_refuses_text_without_exp_name() -> None:
    with pytest.raises(DmabufInspectError, match="no exp_name"):
        classify_module.parse_exporter_info(b"pos:\t0\nflags:\t02\nmnt_id:\t3\nino:\t9\n")
    with pytest.raises(DmabufInspectError, match="size is not a number"):
        classify_module.parse_exporter_info(FDINFO_6_12.replace(b"1048576", b"12x"))


def _fake_proc(root: Path, pid: int, fd: int, link: str, fdinfo: bytes | None) -> None:
    (root / str(pid) / "fd").mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "fdinfo").mkdir(exist_ok=True)
    os.symlink(link, root / str(pid) / "fd" / str(fd))
    if fdinfo is not None:
        (root / str(pid) / "fdinfo" / str(fd)).write_bytes(fdinfo)


def test_classify_another_process_from_a_proc_tree(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 1234, 7, "/dmabuf:cam", FDINFO_6_12 + b"name:\tcam\n")
    _fake_proc(tmp_path, 1234, 8, "anon_inode:dmabuf", FDINFO_5_10)  # before 5.3 the link said so
    _fake_proc(tmp_path, 1234, 9, "pipe:[4242]", b"pos:\t0\nflags:\t0\nmnt_id:\t14\n")
    _fake_proc(tmp_path, 1234, 10, "/dmabuf:", None)  # closed between the readlink and the read
    root = str(tmp_path)
    assert classify(1234, 7, proc_root=root) == dmabuf_inspect.ExporterInfo("udmabuf", "udmabuf", 4, 1048576, "cam")
    old = classify(1234, 8, proc_root=root)
    assert (old.exporter, old.exporter_class, old.inode) == ("system", "heap", None)
    with pytest.raises(NotADmabufError, match=r"^pid 1234 fd 9 is not a dma-buf: it is pipe:\[4242\]$"):
        classify(1234, 9, proc_root=root)
    with pytest.raises(DmabufInspectError, match=r"^pid 1234 fd 10: the fd was closed$"):
        classify(1234, 10, proc_root=root)
    with pytest.raises(DmabufInspectError, match=r"^pid 1234 fd 11: no such fd$"):
        classify(1234, 11, proc_root=root)
    with pytest.raises(DmabufInspectError, match=r"^pid 999 fd 1: no such process$"):
        classify(999, 1, proc_root=root)


def test_classify_another_process_unknown_exporter_under_dev_dma_heap(tmp_path: Path) -> None:
    _fake_proc(tmp_path / "proc", 5, 3, "/dmabuf:", FDINFO_6_12.replace(b"udmabuf", b"carveout"))
    (tmp_path / "dev" / "dma_heap").mkdir(parents=True)
    (tmp_path / "dev" / "dma_heap" / "carveout").touch()
    info = classify(5, 3, proc_root=str(tmp_path / "proc"), dev_root=str(tmp_path / "dev"))
    assert (info.exporter, info.exporter_class) == ("carveout", "heap")
    assert classify(5, 3, proc_root=str(tmp_path / "proc"), dev_root=str(tmp_path)).exporter_class == "unknown"


def test_classify_in_a_capture_refuses_links_out_of_it_as_a_scan_does() -> None:
    """fixtures/hostile-links: the same refusal, in the same words, as the scan (and so the CLI)."""
    tree = FIXTURES / "hostile-links"
    root = str(tree / "proc")
    said = {e.error for e in collect(Roots.from_tree(str(tree))).errors if e.kind == "outside"}
    for pid, fd, link in ((666, 3, "666/fdinfo/3"), (666, 4, "666/fdinfo/4"), (667, 0, "667"), (668, 0, "668/fd")):
        with pytest.raises(DmabufInspectError) as info:
            classify(pid, fd, proc_root=root)
        message = str(info.value)
        assert message.startswith(f"pid {pid} fd {fd}: {root}/{link} leads outside the capture (to ")
        assert message.removeprefix(f"pid {pid} fd {fd}: ") in said
        assert "permission denied" not in message.lower()


def test_classify_in_a_capture_never_returns_what_a_link_out_of_it_leads_to(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "fdinfo").write_bytes(FDINFO_6_12)  # a well-formed fdinfo, outside the tree
    (outside / "fd").mkdir()
    os.symlink("/dmabuf:", outside / "fd" / "3")
    proc = tmp_path / "tree" / "proc"
    (proc / "5" / "fd").mkdir(parents=True)
    (proc / "5" / "fdinfo").mkdir()
    os.symlink("/dmabuf:", proc / "5" / "fd" / "3")
    os.symlink(outside / "fdinfo", proc / "5" / "fdinfo" / "3")
    os.symlink(outside, proc / "6")
    with pytest.raises(DmabufInspectError, match=r"^pid 5 fd 3: .*/proc/5/fdinfo/3 leads outside the capture \(to "):
        classify(5, 3, proc_root=str(proc))
    with pytest.raises(DmabufInspectError, match=r"^pid 6 fd 3: .*/proc/6 leads outside the capture \(to "):
        classify(6, 3, proc_root=str(proc))


def test_classify_own_live_pipe(pipe: tuple[int, int]) -> None:
    with pytest.raises(NotADmabufError, match=r"is not a dma-buf: it is pipe:\["):
        classify(os.getpid(), pipe[0])


def test_package_import_is_light() -> None:
    code = (
        "import sys, dmabuf_inspect\n"
        "heavy = [m for m in ('ctypes', 'textual', 'psutil', 'pyudev', 'dmabuf_inspect.bench.runner')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "assert callable(dmabuf_inspect.classify_fd) and callable(dmabuf_inspect.is_udmabuf)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
