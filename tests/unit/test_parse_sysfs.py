"""/sys/kernel/dmabuf/buffers (5.13+, Android 5.10) and the udmabuf module parameters."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from paths import FIXTURES as FIXTURES_PATH

from dmabuf_inspect.kernel.devices import read_udmabuf, read_udmabuf_param
from dmabuf_inspect.kernel.reader import OutsideRootError, Roots, Tree
from dmabuf_inspect.kernel.sysfs import SysfsParseError, parse_sysfs_buffer, read_sysfs_buffers
from dmabuf_inspect.model import SysfsBuffer

FIXTURES = str(FIXTURES_PATH)


def test_parse() -> None:
    assert parse_sysfs_buffer(2048, b"system\n", b"3145728\n") == SysfsBuffer(2048, "system", 3145728)
    assert parse_sysfs_buffer(7, "videobuf2_dma_contig\n", "1843200") == SysfsBuffer(7, "videobuf2_dma_contig", 1843200)


def test_parse_keeps_odd_bytes_of_the_exporter() -> None:
    b = parse_sysfs_buffer(1, b"we\xffird\tname\n", b"1\n")
    assert b.exporter_name.encode("utf-8", "surrogateescape") == b"we\xffird\tname"


@pytest.mark.parametrize(
    ("exporter", "size"),
    [
        (b"system\n", b""),
        (b"system\n", b"-1\n"),
        (b"system\n", b"12k\n"),
        (b"\n", b"4096\n"),
        (b"", b"4096\n"),
        (b"system\n", b"9" * 21 + b"\n"),
        (b"system\n", "٣".encode()),
    ],
)
def test_parse_rejects(exporter: bytes, size: bytes) -> None:
    with pytest.raises(SysfsParseError):
        parse_sysfs_buffer(1, exporter, size)


def test_walker_on_the_5_10_tree() -> None:
    tree = Roots.from_tree(os.path.join(FIXTURES, "k5.10-sysfs"))
    assert read_sysfs_buffers(tree.sys) == [
        SysfsBuffer(2048, "system", 3145728),
        SysfsBuffer(2049, "udmabuf", 65536),
        SysfsBuffer(2050, "system", 1048576),
        SysfsBuffer(2051, "videobuf2_dma_contig", 1843200),
    ]


def test_walker_without_the_directory_raises_file_not_found() -> None:
    tree = Roots.from_tree(os.path.join(FIXTURES, "k6.12"))
    with pytest.raises(FileNotFoundError):
        read_sysfs_buffers(tree.sys)


def _buffers(tmp_path: Path) -> Path:
    top = tmp_path / "kernel" / "dmabuf" / "buffers"
    for ino, exp, size in ((5, "system", "4096"), (6, "udmabuf", "8192")):
        (top / str(ino)).mkdir(parents=True)
        (top / str(ino) / "exporter_name").write_text(exp + "\n")
        (top / str(ino) / "size").write_text(size + "\n")
    return top


def test_walker_skips_vanished_foreign_and_garbled_entries(tmp_path: Path) -> None:
    top = _buffers(tmp_path)
    (top / "7").mkdir()  # freed between listdir and read: its files are gone
    (top / "8").write_text("not a directory")
    (top / "uevent").write_text("")
    (top / "9").mkdir()
    (top / "9" / "exporter_name").write_text("system\n")
    (top / "9" / "size").write_text("garbage\n")
    assert read_sysfs_buffers(Tree(str(tmp_path), live=False)) == [
        SysfsBuffer(5, "system", 4096),
        SysfsBuffer(6, "udmabuf", 8192),
    ]


def test_walker_skips_a_buffer_freed_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _buffers(tmp_path)
    real = Tree.read

    def racing(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        if "/5/" in rel:
            raise OSError(errno.EIO, "Input/output error")  # the kernel's answer once dmabuf is NULL
        return real(self, rel, limit)

    monkeypatch.setattr(Tree, "read", racing)
    assert read_sysfs_buffers(Tree(str(tmp_path), live=False)) == [SysfsBuffer(6, "udmabuf", 8192)]


def test_walker_lets_other_errors_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _buffers(tmp_path)

    def denied(self: Tree, rel: str, limit: int = 1 << 24) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Tree, "read", denied)
    with pytest.raises(PermissionError):
        read_sysfs_buffers(Tree(str(tmp_path), live=False))


def test_walker_refuses_links_out_of_the_tree() -> None:
    tree = Roots.from_tree(os.path.join(FIXTURES, "hostile-links"))
    with pytest.raises(OutsideRootError):
        read_sysfs_buffers(tree.sys)


def _params(tree: str) -> tuple[int | None, int | None]:
    u = read_udmabuf(Roots.from_tree(os.path.join(FIXTURES, tree)))
    return u.size_limit_mb, u.list_limit


def test_udmabuf_params() -> None:
    assert _params("k6.12") == (64, 1024)
    assert _params("no-dmabufs") == (None, None)
    # the hostile tree's size_limit_mb leads outside: refused, so unknown
    assert _params("hostile-links") == (None, None)


def test_udmabuf_params_garbage(tmp_path: Path) -> None:
    params = tmp_path / "module" / "udmabuf" / "parameters"
    params.mkdir(parents=True)
    (params / "size_limit_mb").write_text("--5\n")
    (params / "list_limit").write_text("-1\n")
    sys = Tree(str(tmp_path), live=False)
    assert (read_udmabuf_param(sys, "size_limit_mb"), read_udmabuf_param(sys, "list_limit")) == (None, -1)
    for text in ("+5", "1_000", "\u0663", "", "99999999999999999999"):
        (params / "size_limit_mb").write_text(text + "\n")
        assert read_udmabuf_param(sys, "size_limit_mb") is None, text


def test_udmabuf_params_have_one_reader(tmp_path: Path) -> None:
    """The scan, the device (ioctl) and a capture read the parameters the same way."""
    from dmabuf_inspect.ioctl.udmabuf import read_limits

    params = tmp_path / "module" / "udmabuf" / "parameters"
    params.mkdir(parents=True)
    (params / "size_limit_mb").write_text("1_000\n")  # int() alone would take it
    (params / "list_limit").write_text("77\n")
    limits = read_limits(str(tmp_path))
    assert (limits.size_limit_mb, limits.list_limit) == (None, 77)
