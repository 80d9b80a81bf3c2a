"""Who a process is, from its status, comm and cmdline files."""

from __future__ import annotations

import os

from dmabuf_inspect.kernel.procinfo import identify, parse_cmdline, parse_stat, parse_status
from dmabuf_inspect.kernel.reader import Roots

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
    me = identify(Roots().proc, os.getpid())
    assert me is not None and me.uid == os.getuid() and me.ppid == os.getppid() and me.comm
    assert identify(Roots().proc, 2**22 + 12345) is None


REST = b" S 1 812 812 0 -1 4194560 1200 0 0 0 35 12 0 0 20 0 1 0 1500 251658240 5120 18446744073709551615 1 1\n"


def test_stat_gives_comm_and_start_ticks() -> None:
    assert parse_stat(b"812 (weston)" + REST) == ("weston", 1500)


def test_stat_comm_with_spaces_and_parentheses_is_read_up_to_the_last_one() -> None:
    # A comm is any 15 bytes: here it imitates the fields that follow it, up to a ')'.
    assert parse_stat(b"77 (a) S 1 2 3 ) x)" + REST) == ("a) S 1 2 3 ) x", 1500)
    assert parse_stat(b"77 ( ))" + REST) == (" )", 1500)
    assert parse_stat(b"77 (\xff\n)" + REST) == ("\udcff\n", 1500)


def test_stat_cut_short_or_not_stat() -> None:
    assert parse_stat(b"77 (x) S 1 2 3") == ("x", None)
    assert parse_stat(b"77 (x) S 1 812 812 0 -1 4194560 1200 0 0 0 35 12 0 0 20 0 1 0 1500") == ("x", 1500)
    assert parse_stat(b"77 (x) S 1 812 812 0 -1 4194560 1200 0 0 0 35 12 0 0 20 0 1 0 -5 1") == ("x", None)
    assert parse_stat(b"") is None
    assert parse_stat(b"no parentheses here") is None


def test_identify_gives_the_start_time_that_tells_a_reused_pid_apart() -> None:
    me = identify(Roots().proc, os.getpid())
    with open("/proc/self/stat", "rb") as f:
        ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert me is not None and me.start_ticks == ticks
