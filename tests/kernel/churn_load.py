"""The churn load of test_churn.py, as its own small process (forking 100 children from pytest
would copy pytest's memory 100 times over in a 2 GiB guest).

    python3 churn_load.py PROCESSES LOG_PATH

Each child loops until the parent (this process) is killed: allocates 1-4 system-heap or udmabuf
buffers, logs `INODE SIZE EXPORTER` for each, maps some, passes one to its partner over a unix
socket, sometimes forks a short-lived child, then frees them all. Prints `ready` once started.

The tests start it with `running()`, which returns only when every buffer the load made is freed:
the load's children die after it, and a file closed by a dying task may be released later by a
kernel worker (fput's delayed_fput_list), so a test after the churn could see its last buffers.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo

SIZES = (4096, 8192, 65536)
F_ADD_SEALS, F_SEAL_SHRINK = 1033, 0x0002


def heap_alloc(heap_fd: int, size: int) -> int:
    buf = bytearray(bytes(uapi.dma_heap_allocation_data(len=size, fd=0, fd_flags=os.O_RDWR | os.O_CLOEXEC)))
    fcntl.ioctl(heap_fd, uapi.DMA_HEAP_IOCTL_ALLOC, buf)
    return int(uapi.dma_heap_allocation_data.from_buffer(buf).fd)


def udmabuf_alloc(dev_fd: int, size: int) -> int:
    memfd = os.memfd_create("churn", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        os.ftruncate(memfd, size)
        fcntl.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
        arg = bytearray(bytes(uapi.udmabuf_create(memfd=memfd, flags=uapi.UDMABUF_FLAGS_CLOEXEC, offset=0, size=size)))
        return int(fcntl.ioctl(dev_fd, uapi.UDMABUF_CREATE, arg))
    finally:
        os.close(memfd)


def churn(seed: int, log_fd: int, sock: socket.socket) -> None:
    rng = random.Random(seed)
    heap_fd = os.open("/dev/dma_heap/system", os.O_RDWR | os.O_CLOEXEC)
    dev_fd = os.open("/dev/udmabuf", os.O_RDWR | os.O_CLOEXEC)
    sock.setblocking(False)
    while os.getppid() != 1:
        held: list[int] = []
        for _ in range(rng.randint(1, 4)):
            size = rng.choice(SIZES)
            udma = rng.random() < 0.4
            fd = udmabuf_alloc(dev_fd, size) if udma else heap_alloc(heap_fd, size)
            os.write(log_fd, f"{os.fstat(fd).st_ino} {size} {'udmabuf' if udma else 'system'}\n".encode())
            held.append(fd)
        maps = [mmap.mmap(held[0], 4096)] if rng.random() < 0.3 else []
        if rng.random() < 0.3:
            with contextlib.suppress(BlockingIOError):
                socket.send_fds(sock, [b"x"], [held[-1]])
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 4)
            for fd in fds:
                os.close(fd)
        except BlockingIOError:
            pass
        if rng.random() < 0.2:
            child = os.fork()
            if child == 0:
                time.sleep(rng.random() * 0.05)
                os._exit(0)
            os.waitpid(child, 0)
        time.sleep(2 + rng.random() * 2)  # 100 Python churners must not starve a TCG guest
        for m in maps:
            m.close()
        for fd in held:
            os.close(fd)


def main() -> None:
    processes, log_path = int(sys.argv[1]), sys.argv[2]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    os.setpgid(0, 0)
    for i in range(0, processes, 2):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for j, end in ((i, a), (i + 1, b)):
            if os.fork() == 0:
                code = 0
                try:
                    churn(j, log_fd, end)
                except BaseException as exc:
                    code = 1
                    print(f"churn child {j}: {exc!r}", file=sys.stderr, flush=True)
                os._exit(code)
        a.close()
        b.close()
    print("ready", flush=True)
    while True:
        signal.pause()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group PGID lives (a zombie has closed its files: it does not count)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    state, _ppid, pgrp = f.read().rsplit(b")", 1)[1].split()[:3]
            except OSError:
                continue
            if int(pgrp) == pgid and state != b"Z":
                return True
    return False


def _live_inodes() -> set[int]:
    with open("/sys/kernel/debug/dma_buf/bufinfo", "rb") as f:
        return {e.inode for e in parse_bufinfo(f.read()).entries if e.inode is not None}


@contextlib.contextmanager
def running(processes: int, log_path: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """The load running while the block runs; after it, the load gone and all its buffers freed."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, __file__, str(processes), str(log_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.terminate()  # the load kills its whole process group
        proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        made = {int(line.split()[0]) for line in log_path.read_text().splitlines()} if log_path.exists() else set()
        while (left := made & _live_inodes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"{len(left)} buffers of the dead churn load still live {timeout_s:.0f} s after it"


if __name__ == "__main__":
    main()
