"""Who a process is, from its status, comm and cmdline files."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_what_bpf_read_of_a_process_stands_in_for_status_and_stat(tmp_path: Path) -> None:
    from dmabuf_inspect.kernel.bpf.records import TaskInfo
    from dmabuf_inspect.kernel.procinfo import start_ticks_of

    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cmdline").write_bytes(b"weston\0--backend=drm\0")
    proc = Roots(proc_root=str(tmp_path), live=True).proc
    hz = os.sysconf("SC_CLK_TCK")
    known = TaskInfo(ppid=7, uid=0, start_boottime_ns=123 * 10**9 // hz + 5, comm=b"wes\xfften")
    ident = identify(proc, 42, known)  # no status nor stat in the tree: only cmdline is read
    assert ident is not None
    assert (ident.pid, ident.ppid, ident.uid, ident.user, ident.cmdline) == (42, 7, 0, "root", "weston --backend=drm")
    assert ident.comm == b"wes\xfften".decode("utf-8", "surrogateescape") and ident.start_ticks == 123
    assert start_ticks_of(10**9) == hz and start_ticks_of(10**9 // hz - 1) == 0
    assert identify(proc, 43, known) is None  # gone before its cmdline was read
    unknown_uid = identify(proc, 42, known._replace(uid=None))
    assert unknown_uid is not None and (unknown_uid.uid, unknown_uid.user) == (None, "?")


def test_what_bpf_read_is_not_used_for_a_capture(tmp_path: Path) -> None:
    from dmabuf_inspect.kernel.bpf.records import TaskInfo

    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_bytes(STATUS)
    (tmp_path / "42" / "stat").write_bytes(b"42 (cap) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0\n")
    proc = Roots(proc_root=str(tmp_path)).proc
    ident = identify(proc, 42, TaskInfo(7, 5, 10**12, b"bpf"))
    assert ident is not None and (ident.comm, ident.ppid, ident.uid, ident.start_ticks) == ("cap", 1, 1000, 99)
