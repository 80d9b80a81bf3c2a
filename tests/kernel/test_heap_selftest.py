"""tools/testing/selftests/dmabuf-heaps/dmabuf-heap.c, through dmabuf_inspect.ioctl.heaps, in the lab.

For every heap in /dev/dma_heap: allocate and import into vgem (PRIME), buffers come back
zeroed at 4 KiB and 1 MiB, the older and newer allocation structs still work, and invalid fd
flags, invalid heap flags and a non-heap fd are refused. Then the dma-buf ioctls on a heap
buffer: DMA_BUF_IOCTL_SYNC, DMA_BUF_SET_NAME, EXPORT/IMPORT_SYNC_FILE, and `heaps`/`alloc`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import vgem as vgem_lab

from dmabuf_inspect.errors import InvalidArgumentError, SyscallError
from dmabuf_inspect.ioctl import buffer as dmabuf_fd
from dmabuf_inspect.ioctl import heaps as heaps_alloc
from dmabuf_inspect.ioctl import uapi
from dmabuf_inspect.kernel.devices import read_heaps
from dmabuf_inspect.kernel.fdinfo import parse_fdinfo
from dmabuf_inspect.kernel.maps import parse_maps
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import FdInfo

pytestmark = pytest.mark.kernel

ONE_MEG = 1 << 20
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DMABUF_INSPECT = (sys.executable, "-m", "dmabuf_inspect")
HEAPS = sorted(os.listdir("/dev/dma_heap")) if os.path.isdir("/dev/dma_heap") else ["system"]


@pytest.fixture(params=HEAPS)
def heap(request: pytest.FixtureRequest) -> Iterator[heaps_alloc.DmaHeap]:
    with heaps_alloc.DmaHeap.open(request.param) as h:
        yield h


@pytest.fixture
def system() -> Iterator[heaps_alloc.DmaHeap]:
    with heaps_alloc.DmaHeap.open("system") as h:
        yield h


def refusal(call: object, code: int) -> str:
    with pytest.raises(SyscallError) as info:
        call()  # type: ignore[operator]
    assert info.value.errno == code, str(info.value)
    assert "\n" not in str(info.value)
    return str(info.value)


def read_fdinfo(path: str) -> FdInfo:
    with open(path, "rb") as f:
        return parse_fdinfo(f.read())


def fdinfo(fd: int) -> dict[str, str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


# ---- the selftest ----------------------------------------------------------------------------


def test_alloc_and_import(heap: heaps_alloc.DmaHeap, vgem: vgem_lab.Vgem) -> None:
    with heap.alloc(ONE_MEG) as buf:
        assert (buf.size_bytes, buf.exporter) == (ONE_MEG, heap.name)
        info = read_fdinfo(f"/proc/self/fdinfo/{buf.fd}")
        assert (info.exp_name, info.size_bytes, info.inode) == (heap.name, ONE_MEG, buf.inode)
        p = buf.mmap()
        with buf.sync("rw"):
            p[: ONE_MEG // 2] = b"\x01" * (ONE_MEG // 2)
            p[ONE_MEG // 2 :] = bytes(ONE_MEG // 2)
        handle = vgem.fd_to_handle(buf.fd)
        try:
            assert handle > 0
            assert vgem.fd_to_handle(buf.fd) == handle  # the same buffer: the same GEM object
            with buf.sync("rw"):
                p[:] = b"\xff" * ONE_MEG
            with buf.sync("read"):
                assert p[:16] == p[-16:] == b"\xff" * 16
        finally:
            vgem.gem_close(handle)


@pytest.mark.parametrize("size", [4096, ONE_MEG], ids=["4K", "1M"])
def test_alloc_zeroed(heap: heaps_alloc.DmaHeap, size: int) -> None:
    for _ in range(32):
        with heap.alloc(size) as buf:
            p = buf.mmap(size)
            with buf.sync("write"):
                p[:] = b"\xff" * size
    for i in range(32):
        with heap.alloc(size) as buf:
            p = buf.mmap(size)
            with buf.sync("read"):
                assert p[:] == bytes(size), f"buffer {i} not zeroed"


class dma_heap_allocation_data_smaller(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint64), ("fd", ctypes.c_uint32), ("fd_flags", ctypes.c_uint32))


class dma_heap_allocation_data_bigger(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_uint64),
        ("fd", ctypes.c_uint32),
        ("fd_flags", ctypes.c_uint32),
        ("heap_flags", ctypes.c_uint64),
        ("garbage1", ctypes.c_uint64),
        ("garbage2", ctypes.c_uint64),
        ("garbage3", ctypes.c_uint64),
    )


def test_alloc_compat(heap: heaps_alloc.DmaHeap) -> None:
    older = dma_heap_allocation_data_smaller(len=ONE_MEG, fd_flags=os.O_RDWR | os.O_CLOEXEC)
    request = uapi._IOWR(uapi.DMA_HEAP_IOC_MAGIC, 0x0, dma_heap_allocation_data_smaller)
    assert request == 0xC0104800
    assert fcntl.ioctl(heap.fd, request, older, True) == 0
    os.close(older.fd)
    newer = dma_heap_allocation_data_bigger(
        len=ONE_MEG, fd_flags=os.O_RDWR | os.O_CLOEXEC, garbage1=0xFFFFFFFF, garbage2=0x88888888, garbage3=0x11111111
    )
    request = uapi._IOWR(uapi.DMA_HEAP_IOC_MAGIC, 0x0, dma_heap_allocation_data_bigger)
    assert fcntl.ioctl(heap.fd, request, newer, True) == 0
    assert int(fdinfo(newer.fd)["size"]) == ONE_MEG
    os.close(newer.fd)


def test_alloc_errors_invalid_fd() -> None:
    with heaps_alloc.DmaHeap(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), "null", "/dev/null") as wrong:
        message = refusal(lambda: wrong.alloc(ONE_MEG, heap_flags=0x111111), errno.ENOTTY)
    assert message == (
        f"Allocating {ONE_MEG} bytes from dma-buf heap null: Inappropriate ioctl for device (ENOTTY): "
        "/dev/null (/dev/null) is not a dma-buf heap"
    )


def test_alloc_errors_invalid_heap_flags(heap: heaps_alloc.DmaHeap) -> None:
    message = refusal(lambda: heap.alloc(ONE_MEG, heap_flags=0x111111), errno.EINVAL)
    assert message == (
        f"Allocating {ONE_MEG} bytes from dma-buf heap {heap.name}: Invalid argument (EINVAL): "
        "heap_flags 0x111111 must be 0: no heap flags are defined (DMA_HEAP_VALID_HEAP_FLAGS)"
    )


def test_alloc_errors_invalid_fd_flags(heap: heaps_alloc.DmaHeap) -> None:
    message = refusal(lambda: heap.alloc(ONE_MEG, fd_flags=~(os.O_RDWR | os.O_CLOEXEC)), errno.EINVAL)
    assert message.endswith(
        "fd_flags 0xfff7fffd may hold only O_RDONLY/O_WRONLY/O_RDWR and O_CLOEXEC (DMA_HEAP_VALID_FD_FLAGS 0x80003)"
    )


def test_alloc_errors_zero_size(heap: heaps_alloc.DmaHeap) -> None:
    assert refusal(lambda: heap.alloc(0), errno.EINVAL).endswith("the size must not be zero")


def test_missing_heap_lists_the_heaps() -> None:
    message = refusal(lambda: heaps_alloc.DmaHeap.open("no-such-heap"), errno.ENOENT)
    assert message == (
        "Opening dma-buf heap no-such-heap (/dev/dma_heap/no-such-heap): No such file or directory (ENOENT): "
        f"no heap no-such-heap in /dev/dma_heap (heaps here: {', '.join(HEAPS)})"
    )


def test_unprivileged_open_fails_eacces() -> None:
    assert not os.stat("/dev/dma_heap/system").st_mode & 0o007
    code = (
        "import grp, os, pwd\n"  # before giving up root, which cannot read /root/.pyenv afterwards
        "from dmabuf_inspect.ioctl.heaps import heap_alloc\n"
        "from dmabuf_inspect.errors import SyscallError\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    heap_alloc('system', 4096)\n"
        "except SyscallError as exc:\n"
        "    print(exc.errno, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": CHECKOUT}
    ).stdout.strip()
    assert out.startswith(
        f"{errno.EACCES} Opening dma-buf heap system (/dev/dma_heap/system): Permission denied (EACCES): "
        "no permission to open /dev/dma_heap/system (/dev/dma_heap/system is root:"
    )
    assert 'udev rule such as SUBSYSTEM=="dma_heap", KERNEL=="system", GROUP="video", MODE="0660"' in out


def test_read_only_fd_refuses_a_writable_mapping(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(4096, fd_flags=os.O_RDONLY | os.O_CLOEXEC) as buf:
        assert fcntl.fcntl(buf.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        message = refusal(lambda: buf.mmap(), errno.EACCES)
        assert message.endswith("the fd's access mode does not allow this mapping (e.g. O_RDONLY and write)")
        assert buf.mmap(access="read")[:8] == bytes(8)


def test_heap_alloc_rounds_up_to_pages() -> None:
    with heaps_alloc.heap_alloc("system", 1000) as buf:
        assert buf.size_bytes == 4096 == int(fdinfo(buf.fd)["size"])


# ---- DMA_BUF_IOCTL_SYNC ----------------------------------------------------------------------


@pytest.mark.parametrize("access", ["read", "write", "rw"])
def test_sync_begin_end(system: heaps_alloc.DmaHeap, access: dmabuf_fd.Access) -> None:
    with system.alloc(4096) as buf:
        p = buf.mmap()
        with dmabuf_fd.sync(buf.fd, access):
            p[0] = 7
        dmabuf_fd.sync_start(buf.fd, access)
        dmabuf_fd.sync_end(buf.fd, access)


@pytest.mark.parametrize("flags", [0, uapi.DMA_BUF_SYNC_END, 8 | uapi.DMA_BUF_SYNC_RW], ids=["none", "no-rw", "bit3"])
def test_sync_invalid_flags(system: heaps_alloc.DmaHeap, flags: int) -> None:
    with system.alloc(4096) as buf:
        message = refusal(lambda: dmabuf_fd.sync_flags(buf.fd, flags), errno.EINVAL)
        assert message == (
            f"Syncing dma-buf fd {buf.fd} for CPU flags 0x{flags:x} (raw): Invalid argument (EINVAL): "
            "the flags must ask for read, write or both, with START or END, and nothing else; "
            "some exporters also refuse END without an earlier START"
        )


def test_sync_on_a_memfd_fails_enotty() -> None:
    fd = os.memfd_create("not-a-dmabuf", os.MFD_CLOEXEC)
    try:
        message = refusal(lambda: dmabuf_fd.sync_start(fd, "rw"), errno.ENOTTY)
    finally:
        os.close(fd)
    assert message.endswith(f"fd {fd} (/memfd:not-a-dmabuf (deleted)) is not a dma-buf")


# ---- DMA_BUF_SET_NAME ------------------------------------------------------------------------


def test_set_name_shows_in_fdinfo_and_maps(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(8192) as buf:
        assert read_fdinfo(f"/proc/self/fdinfo/{buf.fd}").name is None
        name = "n" * (uapi.DMA_BUF_NAME_LEN - 1)
        buf.set_name(name)
        assert read_fdinfo(f"/proc/self/fdinfo/{buf.fd}").name == name
        buf.set_name("renamed")
        assert fdinfo(buf.fd)["name"] == "renamed"
        buf.mmap()
        with open("/proc/self/maps", "rb") as f:
            entries = [e for e in parse_maps(f.read()) if e.inode == buf.inode]
        assert [(e.name, e.length_bytes) for e in entries] == [("renamed", 8192)]


def test_set_name_too_long_is_refused_like_the_kernel_does(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(4096) as buf:
        with pytest.raises(InvalidArgumentError, match="is 32 bytes; the kernel takes at most 31"):
            buf.set_name("x" * uapi.DMA_BUF_NAME_LEN)
        with pytest.raises(OSError) as raw:  # the kernel's own answer to the same name
            fcntl.ioctl(buf.fd, uapi.DMA_BUF_SET_NAME_B, b"x" * uapi.DMA_BUF_NAME_LEN + b"\0")
        assert raw.value.errno == errno.EINVAL
        assert "name" not in fdinfo(buf.fd)


def test_set_name_while_attached(system: heaps_alloc.DmaHeap, vgem: vgem_lab.Vgem) -> None:
    # Older kernels refused to rename an attached buffer (EBUSY); both lab kernels allow it.
    with system.alloc(4096) as buf:
        handle = vgem.fd_to_handle(buf.fd)
        try:
            buf.set_name("attached")
            assert fdinfo(buf.fd)["name"] == "attached"
        finally:
            vgem.gem_close(handle)


# ---- EXPORT_SYNC_FILE / IMPORT_SYNC_FILE -----------------------------------------------------


def test_export_and_import_sync_file(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(4096) as buf:
        with buf.export_sync_file("rw") as sync_file:
            assert os.readlink(f"/proc/self/fd/{sync_file.fd}") == "anon_inode:sync_file"
            assert fcntl.fcntl(sync_file.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            buf.import_sync_file(sync_file, "write")
            buf.import_sync_file(sync_file.fd, "read")
        assert sync_file.closed
        with buf.export_sync_file("read") as again:
            assert again.fd >= 0


def test_import_a_non_sync_file_fails_einval(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(4096) as buf, system.alloc(4096) as other:
        message = refusal(lambda: buf.import_sync_file(other.fd, "write"), errno.EINVAL)
        assert message == (
            f"Importing sync_file fd {other.fd} into dma-buf fd {buf.fd}: Invalid argument (EINVAL): "
            f"the flags must be DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE or both, and fd {other.fd} "
            "(/dmabuf:) must be a sync_file"
        )


def test_export_sync_file_invalid_flags_fails_einval(system: heaps_alloc.DmaHeap) -> None:
    with system.alloc(4096) as buf:
        for flags in (0, 4):
            arg = uapi.dma_buf_export_sync_file(flags=flags, fd=-1)
            with pytest.raises(SyscallError) as info:
                dmabuf_fd.checked_ioctl(
                    buf.fd,
                    uapi.DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
                    arg,
                    step="export",
                    causes={errno.EINVAL: "flags"},
                )
            assert info.value.errno == errno.EINVAL


# ---- `heaps` and `alloc --heap` on the real kernel ---------------------------------------------


def test_read_heaps_live_matches_the_device_nodes() -> None:
    heaps = read_heaps(Roots())
    assert [h.name for h in heaps] == HEAPS
    for h in heaps:
        rdev = os.stat(h.dev_path).st_rdev
        assert (h.major, h.minor) == (os.major(rdev), os.minor(rdev))


def test_heaps_cli() -> None:
    env = {"PYTHONPATH": CHECKOUT}
    text = subprocess.run([*DMABUF_INSPECT, "heaps"], capture_output=True, text=True, check=True, env=env).stdout
    rdev = os.stat("/dev/dma_heap/system").st_rdev
    assert f"system  /dev/dma_heap/system  {os.major(rdev)}:{os.minor(rdev)}" in text
    with open("/sys/module/udmabuf/parameters/size_limit_mb") as f:
        limit = int(f.read())
    assert f"udmabuf: /dev/udmabuf  size_limit_mb {limit}  list_limit " in text
    doc = json.loads(
        subprocess.run(
            [*DMABUF_INSPECT, "heaps", "--json"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    )
    assert {
        "name": "system",
        "dev_path": "/dev/dma_heap/system",
        "major": os.major(rdev),
        "minor": os.minor(rdev),
    } in doc["heaps"]
    assert doc["udmabuf"]["present"] is True and doc["udmabuf"]["size_limit_mb"] == limit


def test_alloc_cli_heap_until_sigint() -> None:
    proc = subprocess.Popen(
        [*DMABUF_INSPECT, "alloc", "--heap", "system", "--size", "64K", "--count", "3", "--hold", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        assert lines[0] == f"pid {proc.pid}: 3 buffers from heap system (/dev/dma_heap/system), 192.0 KiB in all\n"
        sizes = []
        for line in lines[1:4]:
            fd = int(line.split()[1])
            info = read_fdinfo(f"/proc/{proc.pid}/fdinfo/{fd}")
            assert line == f"  fd {fd}  inode {info.inode}  65536 bytes  exporter system\n"
            sizes.append(info.size_bytes)
        assert sizes == [65536] * 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_alloc_cli_missing_heap_is_one_line() -> None:
    result = subprocess.run(
        [*DMABUF_INSPECT, "alloc", "--heap", "nope", "--size", "4K", "--hold", "0"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    assert result.returncode == 1
    assert result.stderr == (
        "dmabuf-inspect: Opening dma-buf heap nope (/dev/dma_heap/nope): No such file or directory (ENOENT): "
        f"no heap nope in /dev/dma_heap (heaps here: {', '.join(HEAPS)})\n"
    )


def test_alloc_cli_refuses_what_the_memory_available_cannot_hold() -> None:
    import psutil

    available = psutil.virtual_memory().available
    result = subprocess.run(
        [*DMABUF_INSPECT, "alloc", "--heap", "system", "--size", str(available), "--hold", "0"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("dmabuf-inspect: refusing to allocate: --count 1 x --size ")
    assert "is more than the memory available (" in result.stderr
    assert result.stderr.endswith("kept for the rest of the machine; add --force to try anyway\n")
