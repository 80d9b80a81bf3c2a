"""/proc/PID/fdinfo/N of dma-buf fds, per kernel version."""

from __future__ import annotations

import pytest

from dmabuf_inspect.kernel.fdinfo import FdinfoParseError, parse_fdinfo
from dmabuf_inspect.model import FdInfo


def test_6_12_with_ino_and_name() -> None:
    info = parse_fdinfo(
        b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t30002\n"
        b"size:\t4194304\ncount:\t5\nexp_name:\tsystem\nname:\tcamera-preview\n"
    )
    assert info == FdInfo(
        pos=0,
        flags=0o2000002,
        mnt_id=15,
        inode=30002,
        size_bytes=4194304,
        count=5,
        exp_name="system",
        name="camera-preview",
    )


def test_6_12_unnamed_has_no_name_line() -> None:
    info = parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1033\nsize:\t4096\ncount:\t1\nexp_name:\tudmabuf\n")
    assert (info.inode, info.name, info.exp_name, info.flags) == (1033, None, "udmabuf", 2)


def test_5_10_has_no_ino_line() -> None:
    info = parse_fdinfo(
        b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nsize:\t3145728\ncount:\t3\nexp_name:\tsystem\nname:\tGraphicBuffer\n"
    )
    assert (info.inode, info.size_bytes, info.count, info.name) == (None, 3145728, 3, "GraphicBuffer")


def test_4_19_has_no_dmabuf_lines_at_all() -> None:
    with pytest.raises(FdinfoParseError, match="size"):
        parse_fdinfo(b"pos:\t0\nflags:\t02000002\nmnt_id:\t13\n")


def test_lock_lines_come_before_the_dmabuf_lines() -> None:
    info = parse_fdinfo(
        b"pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t7\n"
        b"lock:\t1: FLOCK  ADVISORY  WRITE 812 00:0c:7 0 EOF\n"
        b"size:\t4096\ncount:\t1\nexp_name:\tsystem\n"
    )
    assert (info.inode, info.size_bytes) == (7, 4096)


def test_name_is_exact_tabs_newlines_escapes_and_bytes() -> None:
    raw = b"\x1b[31mred\x1b[0m\ttab\nnl\xff"
    info = parse_fdinfo(
        b"pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t40002\nsize:\t1048576\ncount:\t2\n"
        b"exp_name:\tudmabuf\nname:\t" + raw + b"\n"
    )
    assert info.name is not None
    assert info.name.encode("utf-8", "surrogateescape") == raw


def test_name_that_looks_like_fdinfo_lines_or_ends_in_newline() -> None:
    info = parse_fdinfo(b"size:\t1\ncount:\t0\nexp_name:\tsystem\nname:\tx\nsize:\t99\ncount:\t9\n\n")
    assert (info.size_bytes, info.count, info.name) == (1, 0, "x\nsize:\t99\ncount:\t9\n")


def test_empty_name_and_name_without_newline() -> None:
    assert parse_fdinfo(b"size:\t1\ncount:\t0\nexp_name:\te\nname:\t\n").name == ""
    assert parse_fdinfo(b"size:\t1\ncount:\t0\nexp_name:\te\nname:\tcut").name == "cut"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"size:\t4096\ncount:\t1\n",
        b"pos:\t0\nflags:\t02\n",
        b"size:\tbig\ncount:\t1\nexp_name:\tx\n",
        b"size:\t" + b"9" * 5000 + b"\ncount:\t1\nexp_name:\tx\n",
        b"size:\t1\ncount:\t1\nexp_name:\tx\nflags:\t9\n",  # not octal
        b"size:\t1\ncount:\t1\nexp_name:\tx\nino:\t\xff\n",
    ],
)
def test_not_a_dmabuf_fdinfo(data: bytes) -> None:
    with pytest.raises(FdinfoParseError):
        parse_fdinfo(data)


def test_str_with_lone_surrogates_does_not_crash() -> None:
    info = parse_fdinfo("size:\t1\ncount:\t0\nexp_name:\tx\ud800y\nname:\t\udcff\n")
    assert info.name == "\udcff"
    assert info.exp_name == "x\ufffdy"


def test_huge_but_valid_numbers() -> None:
    info = parse_fdinfo(b"size:\t18446744073709551615\ncount:\t9223372036854775807\nexp_name:\tx\n")
    assert (info.size_bytes, info.count) == (2**64 - 1, 2**63 - 1)
