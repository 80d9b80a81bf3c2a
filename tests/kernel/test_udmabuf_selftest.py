"""tools/testing/selftests/drivers/dma-buf/udmabuf.c, through dmabuf_inspect.ioctl.udmabuf, in the lab.

Tests 1-4 of the selftest (misaligned offset, misaligned size, not a memfd, a sealed memfd), its
create_list data check (test 5, 4 KiB pages; test 6 with 2 MiB huge pages, scaled down to what
the lab VM can reserve), and the real errno and message of every refusal the kernel makes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from dmabuf_inspect.errors import SyscallError
from dmabuf_inspect.ioctl import buffer as dmabuf_fd
from dmabuf_inspect.ioctl import udmabuf
from dmabuf_inspect.kernel.fdinfo import parse_fdinfo
from dmabuf_inspect.model import FdInfo

pytestmark = pytest.mark.kernel

PAGE = mmap.PAGESIZE
NUM_PAGES = 4
NUM_ENTRIES = 4
MEMFD_PAGES = 1024
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DMABUF_INSPECT = (sys.executable, "-m", "dmabuf_inspect")


@pytest.fixture
def dev() -> Iterator[udmabuf.UdmabufDevice]:
    with udmabuf.UdmabufDevice.open() as d:
        yield d


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = udmabuf.make_memfd(PAGE * NUM_PAGES)
    yield fd
    os.close(fd)


def read_fdinfo(path: str) -> FdInfo:
    with open(path, "rb") as f:
        return parse_fdinfo(f.read())


def fdinfo(fd: int) -> dict[str, str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def refusal(call: object, code: int) -> str:
    """Run `call`, which must fail with `code`; its one-line message."""
    with pytest.raises(SyscallError) as info:
        call()  # type: ignore[operator]
    assert info.value.errno == code, str(info.value)
    message = str(info.value)
    assert "\n" not in message
    assert f"({errno.errorcode[code]})" in message
    return message


# ---- the selftest's tests 1-4 ----------------------------------------------------------------


def test_1_misaligned_offset_fails(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    message = refusal(lambda: dev.create(memfd, PAGE // 2, PAGE), errno.EINVAL)
    assert message == (
        f"Creating udmabuf ({PAGE} bytes at offset {PAGE // 2} of memfd {memfd}): Invalid argument (EINVAL): "
        f"offset {PAGE // 2} is not a multiple of the page size ({PAGE})"
    )


def test_2_misaligned_size_fails(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    message = refusal(lambda: dev.create(memfd, 0, PAGE // 2), errno.EINVAL)
    assert message.endswith(f"size {PAGE // 2} is not a multiple of the page size ({PAGE})")


@pytest.mark.parametrize("kind", ["dev-null", "tmp-file", "closed"])
def test_3_not_a_memfd_fails_ebadfd(dev: udmabuf.UdmabufDevice, kind: str) -> None:
    if kind == "dev-null":
        fd, target = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC), "/dev/null"
    elif kind == "tmp-file":
        # /tmp is the host's, over 9p; not unlinked, because 9p cannot truncate an unlinked file
        with tempfile.NamedTemporaryFile(dir="/tmp") as f:
            os.ftruncate(f.fileno(), PAGE * NUM_PAGES)
            fd, target = os.dup(f.fileno()), None
    else:
        fd, target = 999, "not open"
    try:
        message = refusal(lambda: dev.create(fd, 0, PAGE * NUM_PAGES), errno.EBADFD)
    finally:
        if kind != "closed":
            os.close(fd)
    assert message.startswith(f"Creating udmabuf ({PAGE * NUM_PAGES} bytes at offset 0 of memfd {fd}): ")
    assert "File descriptor in bad state (EBADFD): " in message
    assert message.endswith(": not a shmem or hugetlb memfd (make one with memfd_create)")
    if target is not None:
        assert f"fd {fd} ({target}): " in message


def test_4_sealed_memfd_succeeds_and_shares_its_pages(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    size = PAGE * NUM_PAGES
    src = mmap.mmap(memfd, size)
    for i in range(NUM_PAGES):
        src[i * PAGE] = ord("a")
    with dev.create(memfd, 0, size) as buf:
        assert os.readlink(f"/proc/self/fd/{buf.fd}").startswith("/dmabuf:")
        info = read_fdinfo(f"/proc/self/fdinfo/{buf.fd}")
        assert (info.exp_name, info.size_bytes, info.inode) == ("udmabuf", size, buf.inode)
        assert buf.size_bytes == size
        assert fcntl.fcntl(buf.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        view = buf.mmap()
        with buf.sync("read"):
            assert all(view[i * PAGE] == ord("a") for i in range(NUM_PAGES))
        for i in range(NUM_PAGES):  # the same pages: a write through the memfd shows through the buffer
            src[i * PAGE] = ord("b")
        with buf.sync("read"):
            assert all(view[i * PAGE] == ord("b") for i in range(NUM_PAGES))
    src.close()


# ---- create_list with a data check (tests 5 and 6) -------------------------------------------


def _check_list(dev: udmabuf.UdmabufDevice, page: int, *, hugetlb: bool, memfd_pages: int) -> None:
    size = memfd_pages * page
    memfd = udmabuf.make_memfd(size, hugetlb=hugetlb)
    try:
        src = mmap.mmap(memfd, size)
        for i in range(memfd_pages):
            src[i * page] = ord("a")
        items = [(memfd, i * (size // NUM_ENTRIES), page * NUM_PAGES) for i in range(NUM_ENTRIES)]
        with dev.create_list(items) as buf:
            assert buf.size_bytes == NUM_ENTRIES * NUM_PAGES * page
            assert fdinfo(buf.fd)["exp_name"].strip() == "udmabuf"
            view = buf.mmap()
            for i in range(memfd_pages):
                src[i * page] = ord("b")
            k = 0
            for i in range(NUM_ENTRIES):
                off = i * (size // NUM_ENTRIES)
                for j in range(NUM_PAGES):
                    assert view[k * page] == src[off + j * page] == ord("b"), (i, j)
                    k += 1
            view[0] = ord("c")  # and the other way: the buffer's first page is the memfd's
            assert src[0] == ord("c")
        src.close()
    finally:
        os.close(memfd)


def test_5_create_list_data_check(dev: udmabuf.UdmabufDevice) -> None:
    _check_list(dev, PAGE, hugetlb=False, memfd_pages=MEMFD_PAGES)


@pytest.fixture
def huge_pages() -> Iterator[int]:
    """Reserve 2 MiB huge pages for test 6 (the selftest's 1024 would need 2 GiB; 16 make the same layout)."""
    path = "/proc/sys/vm/nr_hugepages"
    with open(path) as f:
        before = int(f.read())
    wanted = NUM_ENTRIES * NUM_PAGES  # the list's entries sit at quarters of the memfd, NUM_PAGES each
    with open(path, "w") as f:
        f.write(str(before + wanted))
    with open(path) as f:
        got = int(f.read()) - before
    assert got >= wanted, f"the lab VM reserved {got} of {wanted} huge pages"
    yield wanted
    with open(path, "w") as f:
        f.write(str(before))


def test_6_create_list_data_check_huge_pages(dev: udmabuf.UdmabufDevice, huge_pages: int) -> None:
    _check_list(dev, 2 << 20, hugetlb=True, memfd_pages=huge_pages)


# ---- every refusal, as the kernel makes it -----------------------------------------------------


def test_unsealed_memfd_fails_einval(dev: udmabuf.UdmabufDevice) -> None:
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, PAGE)
        message = refusal(lambda: dev.create(fd, 0, PAGE), errno.EINVAL)
    finally:
        os.close(fd)
    assert message.endswith(f"memfd {fd} is not sealed with F_SEAL_SHRINK")


@pytest.mark.parametrize(
    ("seal", "name"), [(fcntl.F_SEAL_WRITE, "F_SEAL_WRITE"), (udmabuf.F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE")]
)
def test_write_sealed_memfd_fails_einval(dev: udmabuf.UdmabufDevice, memfd: int, seal: int, name: str) -> None:
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, seal)
    message = refusal(lambda: dev.create(memfd, 0, PAGE), errno.EINVAL)
    assert message.endswith(f"memfd {memfd} has {name}, which udmabuf refuses")


def test_zero_size_fails_einval(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    assert refusal(lambda: dev.create(memfd, 0, 0), errno.EINVAL).endswith("the size must not be zero")


def test_range_past_the_memfd_fails_einval(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    message = refusal(lambda: dev.create(memfd, 2 * PAGE, NUM_PAGES * PAGE), errno.EINVAL)
    assert message.endswith(
        f"offset {2 * PAGE} + size {NUM_PAGES * PAGE} runs past the end of memfd {memfd} ({NUM_PAGES * PAGE} bytes)"
    )


def test_over_size_limit_fails_einval(dev: udmabuf.UdmabufDevice) -> None:
    limit_mb = dev.limits.size_limit_mb
    assert limit_mb is not None
    size = (limit_mb + 1) << 20  # ftruncate only: the kernel refuses before touching a page
    fd = udmabuf.make_memfd(size)
    try:
        message = refusal(lambda: dev.create(fd, 0, size), errno.EINVAL)
    finally:
        os.close(fd)
    assert message.endswith(
        f"{size} bytes is over the module's size_limit_mb ({limit_mb} MiB; "
        "raise /sys/module/udmabuf/parameters/size_limit_mb as root)"
    )


def test_over_list_limit_fails_einval(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    limit = dev.limits.list_limit
    assert limit is not None
    message = refusal(lambda: dev.create_list([(memfd, 0, PAGE)] * (limit + 1)), errno.EINVAL)
    assert message.startswith(f"Creating udmabuf from a list of {limit + 1} items")
    assert message.endswith(
        f"{limit + 1} items is over the module's list_limit ({limit}; "
        "raise /sys/module/udmabuf/parameters/list_limit as root)"
    )


def test_wrong_device_fails_enotty(memfd: int) -> None:
    with udmabuf.UdmabufDevice(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC), "/dev/null") as wrong:
        message = refusal(lambda: wrong.create(memfd, 0, PAGE), errno.ENOTTY)
    assert message.endswith("/dev/null (/dev/null) is not the udmabuf device")


def test_no_device_fails_enoent(tmp_path: os.PathLike[str]) -> None:
    message = refusal(lambda: udmabuf.UdmabufDevice.open(str(tmp_path)), errno.ENOENT)
    assert message.endswith("the kernel lacks CONFIG_UDMABUF, or the udmabuf module is not loaded (modprobe udmabuf)")


def test_unprivileged_open_fails_eacces() -> None:
    st = os.stat("/dev/udmabuf")
    assert not st.st_mode & 0o007, "the test needs /dev/udmabuf closed to others"
    code = (
        "import grp, os, pwd\n"  # before giving up root, which cannot read /root/.pyenv afterwards
        "from dmabuf_inspect.ioctl.udmabuf import UdmabufDevice\n"
        "from dmabuf_inspect.errors import SyscallError\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    UdmabufDevice.open()\n"
        "except SyscallError as exc:\n"
        "    print(exc.errno, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": CHECKOUT}
    ).stdout.strip()
    assert out.startswith(f"{errno.EACCES} Opening /dev/udmabuf: Permission denied (EACCES): no permission to open ")
    assert "(/dev/udmabuf is root:" in out
    assert 'run as root, or give a group access with a udev rule such as KERNEL=="udmabuf"' in out


# ---- the friendly API on a real buffer -------------------------------------------------------


def test_create_with_memfd_owns_both_fds(dev: udmabuf.UdmabufDevice) -> None:
    buf = udmabuf.create_with_memfd(8 * PAGE, device=dev, cloexec=False)
    fd, memfd = buf.fd, buf.memfd
    assert memfd is not None
    assert os.readlink(f"/proc/self/fd/{memfd}").startswith("/memfd:dmabuf-inspect")
    assert fcntl.fcntl(memfd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    assert not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert int(fdinfo(fd)["size"]) == buf.size_bytes == 8 * PAGE
    with buf:
        buf.set_name("selftest")
        assert fdinfo(fd)["name"] == "selftest"
    buf.close()
    for gone in (fd, memfd):
        assert not os.path.exists(f"/proc/self/fd/{gone}")


def test_create_and_create_list_open_the_device_themselves(memfd: int) -> None:
    with udmabuf.create(memfd, 0, PAGE) as one, udmabuf.create_list([(memfd, 0, PAGE), (memfd, PAGE, PAGE)]) as two:
        assert (one.size_bytes, two.size_bytes) == (PAGE, 2 * PAGE)


def test_sync_end_without_start(dev: udmabuf.UdmabufDevice, memfd: int) -> None:
    with dev.create(memfd, 0, PAGE) as buf:
        # udmabuf builds its sg table on the first START; END before any START is refused
        message = refusal(lambda: dmabuf_fd.sync_end(buf.fd, "rw"), errno.EINVAL)
        assert message.startswith(f"Syncing dma-buf fd {buf.fd} for CPU read/write (end): Invalid argument (EINVAL): ")
        with buf.sync("rw"):
            pass


# ---- `dmabuf-inspect alloc --udmabuf` on the real kernel -------------------------------------


LOAD_OPTIONS = ("--name", "lab-load", "--map", "--hold", "120")


def test_alloc_cli_holds_udmabufs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [*DMABUF_INSPECT, "alloc", "--udmabuf", "--size", "1M", "--count", "2", *LOAD_OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"pid {proc.pid}: 2 buffers from udmabuf (/dev/udmabuf), 2.0 MiB in all"), lines
        assert lines[3].startswith("holding them for 120 s"), lines
        held = {}
        for n in os.listdir(f"/proc/{proc.pid}/fd"):
            if os.readlink(f"/proc/{proc.pid}/fd/{n}").startswith("/dmabuf:"):
                held[int(n)] = read_fdinfo(f"/proc/{proc.pid}/fdinfo/{n}")
        named = {fd: i for fd, i in held.items() if i.name == "lab-load"}
        # each buffer: its own fd, and the dup() Python's mmap made of it
        assert len(named) == 4
        assert {(i.exp_name, i.size_bytes) for i in named.values()} == {("udmabuf", 1 << 20)}
        assert len({i.inode for i in named.values()}) == 2
        for line in lines[1:3]:
            fd = int(line.split()[1])
            assert f"inode {held[fd].inode}  1048576 bytes  exporter udmabuf  name lab-load  mapped" in line
        with open(f"/proc/{proc.pid}/maps") as f:
            assert sum("/dmabuf:lab-load" in line for line in f) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def size_limit_64() -> Iterator[None]:
    """udmabuf's size_limit_mb at its historical default of 64 for the test (kernels differ), then restored."""
    path = "/sys/module/udmabuf/parameters/size_limit_mb"
    with open(path) as f:
        before = f.read().strip()
    with open(path, "w") as f:
        f.write("64")
    yield
    with open(path, "w") as f:
        f.write(before)


def test_alloc_cli_refuses_over_size_limit(size_limit_64: None) -> None:
    result = subprocess.run(
        [*DMABUF_INSPECT, "alloc", "--udmabuf", "--size", "65M", "--hold", "0"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    assert result.returncode == 2
    assert result.stderr == (
        "dmabuf-inspect: refusing to allocate: --size 65.0 MiB is over udmabuf's size_limit_mb (64 MiB; "
        "raise /sys/module/udmabuf/parameters/size_limit_mb as root); add --force to try anyway\n"
    )
    forced = subprocess.run(
        [*DMABUF_INSPECT, "alloc", "--udmabuf", "--size", "65M", "--hold", "0", "--force"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": CHECKOUT},
    )
    assert forced.returncode == 1
    assert forced.stderr.startswith("dmabuf-inspect: Creating udmabuf (68157440 bytes at offset 0 of memfd ")
    assert forced.stderr.endswith(
        "over the module's size_limit_mb (64 MiB; raise /sys/module/udmabuf/parameters/size_limit_mb as root)\n"
    )
