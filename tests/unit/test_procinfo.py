"""Who a process is, from its status, comm and cmdline files."""

from __future__ import annotations

import os

from dmabuf_inspect.kernel.procinfo import identify, parse_cmdline, parse_status

STATUS = (
    b"Name:\tUid:\t7 PPid:\t9\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n"
    b"PPid:\t1\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t100\t100\t100\t100\n"
)


def test_status_gives_the_real_uid_and_ppid_not_a_name_that_imitates_them() -> None:
    assert parse_status(STATUS) == (1000, 1)


def test_status_without_the_fields_or_cut_short() -> None:
    assert parse_status(b"Name:\tx\n") == (None, None)
    assert parse_status(b"Name:\tx\nPPid:\t") == (None, None)
    assert parse_status(b"Name:\tx\nPPid:\t12") == (None, 12)
    assert parse_status(b"") == (None, None)


def test_cmdline_joins_arguments() -> None:
    assert parse_cmdline(b"weston\0--backend=drm\0") == "weston --backend=drm"


def test_identify_this_process_and_a_vanished_one() -> None:
    me = identify("/proc", os.getpid(), live=True)
    assert me is not None and me.uid == os.getuid() and me.ppid == os.getppid() and me.comm
    assert identify("/proc", 2**22 + 12345, live=True) is None
