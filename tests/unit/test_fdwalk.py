"""The C walk of fd tables (`_fdwalk.c`) against the os.stat() one, on a real process's fds.

This kernel has no dma-bufs, but the walk only compares st_dev: memfds (one shmem device) stand
in for dma-bufs, among pipes, sockets and files on other devices. The kernel lab runs the scan
with the C walk on real dma-bufs (tests/kernel/test_fdwalk_kernel.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from dmabuf_inspect.kernel import fdwalk

HOLDER = textwrap.dedent("""
    import os, socket, sys
    keep = []
    for i in range(300):
        keep.append(os.memfd_create(f"m{i}"))
        if i % 7 == 0:
            keep.extend(os.pipe())
        if i % 50 == 0:
            keep.extend(s.detach() for s in socket.socketpair())
            keep.append(os.open("/dev/null", os.O_RDONLY))
    for fd in keep[10::9]:
        os.close(fd)                    # holes in the table
    closed = set(keep[10::9])
    memfds = [fd for fd in keep[:40] if fd not in closed and os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")]
    os.dup2(memfds[0], 900)             # one buffer under two fds, one far past the others
    os.dup(memfds[1]); os.dup(memfds[1])  # one under three
    print(os.fstat(keep[0]).st_dev, memfds[0], memfds[1], flush=True)
    sys.stdin.read()
""")


@pytest.fixture(scope="module")
def holder() -> Iterator[tuple[int, int, int, int]]:
    """A child process holding memfds among other fds: (pid, the memfds' st_dev, a memfd dup()ed
    once, a memfd dup()ed twice)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    dev, twice, thrice = map(int, child.stdout.readline().split())
    try:
        yield child.pid, dev, twice, thrice
    finally:
        child.kill()
        child.wait()


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _c() -> fdwalk.FdWalk:
    assert fdwalk.fds_by_inode_c is not None
    return fdwalk.fds_by_inode_c


def test_the_c_walk_is_built() -> None:
    # tests/run.sh installs a compiler: a build that silently fell back would measure os.stat().
    assert fdwalk.fds_by_inode_c is not None
    assert fdwalk.fds_by_inode is fdwalk.fds_by_inode_c


def test_c_and_python_walks_agree_on_a_real_fd_table(holder: tuple[int, int, int, int]) -> None:
    pid, dev, twice, thrice = holder
    dfd = _open_dir(f"/proc/{pid}/fd")
    try:
        c = _c()(dfd, dev)
        py = fdwalk.fds_by_inode_py(dfd, dev)
        again = _c()(dfd, dev)  # the shared directory offset was left as found
    finally:
        os.close(dfd)
    assert list(c.items()) == list(py.items()) == list(again.items())  # order too: by first fd
    assert 250 < len(c) < 300  # memfds only, less the closed ones
    for inode, fds in c.items():
        assert list(fds) == sorted(fds)
        for fd in fds:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            assert (st.st_dev, st.st_ino) == (dev, inode)
    groups = {fds[0]: fds for fds in c.values() if len(fds) > 1}
    assert groups[twice][1:] == (900,) and len(groups[thrice]) == 3 and len(groups) == 2
    firsts = [fds[0] for fds in c.values()]
    assert firsts == sorted(firsts)


def test_a_device_nobody_uses_gives_nothing(holder: tuple[int, int, int, int]) -> None:
    dfd = _open_dir(f"/proc/{holder[0]}/fd")
    try:
        assert _c()(dfd, 0xFFFF_FFFF) == fdwalk.fds_by_inode_py(dfd, 0xFFFF_FFFF) == {}
    finally:
        os.close(dfd)


def test_bad_directory_fds_raise_oserror_with_errno() -> None:
    walk = _c()
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(NotADirectoryError):
            walk(r, 1)
    finally:
        os.close(r)
    with pytest.raises(OSError) as bad:
        walk(r, 1)  # closed
    assert bad.value.errno == 9  # EBADF
    with pytest.raises(OverflowError):
        walk(1 << 40, 1)


def test_own_table_with_a_socket_pair() -> None:
    """/proc/self/fd: the walk's own directory fd is in the table it walks, and is not on `dev`."""
    a, b = socket.socketpair()
    mem = os.memfd_create("own")
    dfd = _open_dir("/proc/self/fd")
    try:
        st = os.fstat(mem)
        found = _c()(dfd, st.st_dev)
        assert found[st.st_ino] == (mem,)
        assert all(a.fileno() not in fds and dfd not in fds for fds in found.values())
        assert found == fdwalk.fds_by_inode_py(dfd, st.st_dev)
    finally:
        os.close(dfd)
        os.close(mem)
        a.close()
        b.close()


def test_any_directory_order_gives_ascending_fds(tmp_path: os.PathLike[str]) -> None:
    """/proc lists fds in order; the walk does not count on it. A plain directory stands in, with
    hard links for fds of one buffer and names that are no fd."""
    base = os.fspath(tmp_path)
    for name in ("12", "4", "30", "9", "100"):
        with open(os.path.join(base, name), "w"):
            pass
    os.link(os.path.join(base, "30"), os.path.join(base, "2"))  # one inode under 2, 30 and 7
    os.link(os.path.join(base, "30"), os.path.join(base, "7"))
    os.link(os.path.join(base, "9"), os.path.join(base, "50"))
    for junk in ("x1", "-3", "4a"):
        os.mkdir(os.path.join(base, junk))
    dfd = _open_dir(base)
    try:
        dev = os.fstat(dfd).st_dev
        c, py = _c()(dfd, dev), fdwalk.fds_by_inode_py(dfd, dev)
    finally:
        os.close(dfd)
    ino = {n: os.stat(os.path.join(base, n)).st_ino for n in ("2", "4", "9", "12", "100")}
    expected = {ino["2"]: (2, 7, 30), ino["4"]: (4,), ino["9"]: (9, 50), ino["12"]: (12,), ino["100"]: (100,)}
    assert list(c.items()) == list(py.items()) == list(expected.items())
