"""The C walk of an fd table (`_fdwalk.c`) against the os.stat() one, on a real process's fds.

This kernel has no dma-bufs, but the walk only compares st_dev: memfds (one shmem device) stand
in for dma-bufs, among pipes, sockets and files on other devices. The kernel lab runs the scan
with the C walk on real dma-bufs (tests/kernel).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from dmabuf_inspect import fdwalk

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
    os.dup2(keep[-1], 900)              # one fd far past the others
    print(os.fstat(keep[0]).st_dev, flush=True)
    sys.stdin.read()
""")


@pytest.fixture(scope="module")
def holder() -> Iterator[tuple[int, int]]:
    """A child process holding memfds among other fds: (pid, the memfds' st_dev)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    dev = int(child.stdout.readline())
    try:
        yield child.pid, dev
    finally:
        child.kill()
        child.wait()


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def test_the_c_walk_is_built() -> None:
    # tests/run.sh installs a compiler: a build that silently fell back would measure os.stat().
    assert fdwalk.fds_on_dev_c is not None
    assert fdwalk.fds_on_dev is fdwalk.fds_on_dev_c


def test_c_and_python_walks_agree_on_a_real_fd_table(holder: tuple[int, int]) -> None:
    assert fdwalk.fds_on_dev_c is not None
    pid, dev = holder
    dfd = _open_dir(f"/proc/{pid}/fd")
    try:
        c_fds, c_inodes = fdwalk.fds_on_dev_c(dfd, dev)
        py_fds, py_inodes = fdwalk.fds_on_dev_py(dfd, dev)
        again = fdwalk.fds_on_dev_c(dfd, dev)  # the shared directory offset was left as found
    finally:
        os.close(dfd)
    assert (c_fds, c_inodes) == (py_fds, py_inodes) == again
    by_fd = dict(zip(c_fds, c_inodes, strict=True))
    assert 250 < len(by_fd) < 300  # memfds only, less the closed ones
    for fd in (c_fds[0], c_fds[-1]):
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        assert (st.st_dev, st.st_ino) == (dev, by_fd[fd])
    assert os.readlink(f"/proc/{pid}/fd/{c_fds[0]}").startswith("/memfd:")


def test_a_device_nobody_uses_gives_nothing(holder: tuple[int, int]) -> None:
    assert fdwalk.fds_on_dev_c is not None
    dfd = _open_dir(f"/proc/{holder[0]}/fd")
    try:
        assert fdwalk.fds_on_dev_c(dfd, 0xFFFF_FFFF) == fdwalk.fds_on_dev_py(dfd, 0xFFFF_FFFF) == ([], [])
    finally:
        os.close(dfd)


def test_bad_directory_fds_raise_oserror_with_errno() -> None:
    assert fdwalk.fds_on_dev_c is not None
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(NotADirectoryError):
            fdwalk.fds_on_dev_c(r, 1)
    finally:
        os.close(r)
    with pytest.raises(OSError) as bad:
        fdwalk.fds_on_dev_c(r, 1)  # closed
    assert bad.value.errno == 9  # EBADF
    with pytest.raises(OverflowError):
        fdwalk.fds_on_dev_c(1 << 40, 1)


def test_own_table_with_a_socket_pair() -> None:
    """/proc/self/fd: the walk's own directory fd is in the table it walks, and is not on `dev`."""
    assert fdwalk.fds_on_dev_c is not None
    a, b = socket.socketpair()
    mem = os.memfd_create("own")
    dfd = _open_dir("/proc/self/fd")
    try:
        dev = os.fstat(mem).st_dev
        fds, inodes = fdwalk.fds_on_dev_c(dfd, dev)
        assert mem in fds and a.fileno() not in fds and dfd not in fds
        assert inodes[fds.index(mem)] == os.fstat(mem).st_ino
        assert (fds, inodes) == fdwalk.fds_on_dev_py(dfd, dev)
    finally:
        os.close(dfd)
        os.close(mem)
        a.close()
        b.close()
