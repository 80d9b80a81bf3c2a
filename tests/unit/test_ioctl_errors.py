"""Every errno of the ioctl wrappers becomes one line naming the step and the likely cause.

The kernel lab produces the real ones (tests/kernel/test_*_selftest.py); here fcntl.ioctl and
os.open are replaced to raise each errno, and a few real ENOTTY/ENOENT come from this kernel:
a memfd is no dma-buf, no heap and no udmabuf device.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from dmabuf_inspect.errors import DmabufInspectError, InvalidArgumentError, SyscallError, UsageError
from dmabuf_inspect.ioctl import buffer as dmabuf_fd
from dmabuf_inspect.ioctl import heaps as heaps_alloc
from dmabuf_inspect.ioctl import uapi, udmabuf
from dmabuf_inspect.ioctl.handle import OwnedFd

PAGE = mmap.PAGESIZE


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = udmabuf.make_memfd(4 * PAGE)
    yield fd
    os.close(fd)


@pytest.fixture
def plain_memfd() -> Iterator[int]:
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 4 * PAGE)
    yield fd
    os.close(fd)


class IoctlRecorder:
    """Replaces fcntl.ioctl: records each call, raises `errno_` or runs `effect`."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Any]] = []
        self.errno_: int | None = None

    def __call__(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> Any:
        self.calls.append((fd, request, arg))
        if self.errno_ is not None:
            raise OSError(self.errno_, os.strerror(self.errno_))
        return 0


@pytest.fixture
def ioctl(monkeypatch: pytest.MonkeyPatch) -> IoctlRecorder:
    recorder = IoctlRecorder()
    monkeypatch.setattr(fcntl, "ioctl", recorder)
    return recorder


def fails(ioctl: IoctlRecorder, code: int) -> IoctlRecorder:
    ioctl.errno_ = code
    return ioctl


def assert_one_line(exc: SyscallError, code: int) -> str:
    message = str(exc)
    assert "\n" not in message
    assert exc.errno == code
    assert isinstance(exc, OSError)
    assert isinstance(exc, DmabufInspectError)
    assert f"({errno.errorcode[code]})" in message
    return message


def device(fd: int, limits: udmabuf.UdmabufLimits | None = None) -> udmabuf.UdmabufDevice:
    return udmabuf.UdmabufDevice(os.dup(fd), "/dev/udmabuf", limits or udmabuf.UdmabufLimits(64, 1024))


# ---- udmabuf: UDMABUF_CREATE / UDMABUF_CREATE_LIST -------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size", "why"),
    [
        (PAGE // 2, PAGE, f"offset {PAGE // 2} is not a multiple of the page size ({PAGE})"),
        (0, PAGE // 2, f"size {PAGE // 2} is not a multiple of the page size ({PAGE})"),
        (0, 0, "the size must not be zero"),
        (0, 65 << 20, "is over the module's size_limit_mb (64 MiB; raise /sys/module/udmabuf"),
    ],
    ids=["misaligned-offset", "misaligned-size", "zero-size", "over-size-limit"],
)
def test_udmabuf_einval_says_which_rule(ioctl: IoctlRecorder, memfd: int, offset: int, size: int, why: str) -> None:
    fails(ioctl, errno.EINVAL)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, offset, size)
    message = assert_one_line(info.value, errno.EINVAL)
    assert message.startswith(f"Creating udmabuf ({size} bytes at offset {offset} of memfd {memfd}): ")
    assert "Invalid argument (EINVAL): " in message
    assert why in message
    assert info.value.step.startswith("Creating udmabuf")


def test_udmabuf_einval_unsealed_memfd(ioctl: IoctlRecorder, plain_memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with device(plain_memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(plain_memfd, 0, PAGE)
    assert assert_one_line(info.value, errno.EINVAL).endswith(f"memfd {plain_memfd} is not sealed with F_SEAL_SHRINK")


def test_udmabuf_einval_write_seal(ioctl: IoctlRecorder, memfd: int) -> None:
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    fails(ioctl, errno.EINVAL)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 0, PAGE)
    assert assert_one_line(info.value, errno.EINVAL).endswith(f"memfd {memfd} has F_SEAL_WRITE, which udmabuf refuses")


def test_udmabuf_einval_future_write_seal(ioctl: IoctlRecorder, memfd: int) -> None:
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, udmabuf.F_SEAL_FUTURE_WRITE)
    fails(ioctl, errno.EINVAL)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 0, PAGE)
    assert assert_one_line(info.value, errno.EINVAL).endswith(
        f"memfd {memfd} has F_SEAL_FUTURE_WRITE, which udmabuf refuses"
    )


def test_udmabuf_einval_range_past_the_end(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 2 * PAGE, 4 * PAGE)
    assert assert_one_line(info.value, errno.EINVAL).endswith(
        f"offset {2 * PAGE} + size {4 * PAGE} runs past the end of memfd {memfd} ({4 * PAGE} bytes)"
    )


def test_udmabuf_einval_falls_back_to_every_rule(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 0, PAGE)
    assert str(info.value) == (
        f"Creating udmabuf ({PAGE} bytes at offset 0 of memfd {memfd}): Invalid argument (EINVAL): "
        "the memfd must be sealed with F_SEAL_SHRINK and have no write seal, and offset and size "
        "must be page aligned and within size_limit_mb"
    )


def test_udmabuf_list_einval_over_list_limit(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    items = [(memfd, 0, PAGE)] * 3
    with device(memfd, udmabuf.UdmabufLimits(64, 2)) as dev, pytest.raises(SyscallError) as info:
        dev.create_list(items)
    message = assert_one_line(info.value, errno.EINVAL)
    assert message.startswith(f"Creating udmabuf from a list of 3 items ({3 * PAGE} bytes): ")
    assert "3 items is over the module's list_limit (2;" in message


def test_udmabuf_ebadfd_names_the_fd(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EBADFD)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with device(memfd) as dev, pytest.raises(SyscallError) as info:
            dev.create(null, 0, PAGE)
    finally:
        os.close(null)
    message = assert_one_line(info.value, errno.EBADFD)
    assert message.endswith(f"fd {null} (/dev/null): not a shmem or hugetlb memfd (make one with memfd_create)")


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (errno.ENOTTY, "is not the udmabuf device"),
        (errno.ENOMEM, "the kernel could not pin the memfd's pages"),
        (errno.EMFILE, "too many open files; raise the limit (ulimit -n)"),
        (errno.EBADF, "not an open file descriptor"),
    ],
)
def test_udmabuf_other_errnos(ioctl: IoctlRecorder, memfd: int, code: int, why: str) -> None:
    fails(ioctl, code)
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 0, PAGE)
    assert why in assert_one_line(info.value, code)


def test_udmabuf_request_and_argument(ioctl: IoctlRecorder, memfd: int) -> None:
    ioctl.calls.clear()
    # the recorder returns 0 as the "new fd": point it at a real fd so DmaBuf can fstat it
    with device(memfd) as dev:
        target = os.dup(memfd)
        ioctl_result = target

        def create(fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
            ioctl.calls.append((fd, request, bytes(arg)))
            return ioctl_result

        fcntl.ioctl = create  # type: ignore[assignment]  # monkeypatch restores it
        with dev.create(memfd, PAGE, 2 * PAGE, cloexec=False) as buf:
            assert buf.fd == target
            assert buf.exporter == "udmabuf"
    (_, request, raw) = ioctl.calls[-1]
    assert request == uapi.UDMABUF_CREATE
    arg = uapi.udmabuf_create.from_buffer_copy(raw)
    assert (arg.memfd, arg.flags, arg.offset, arg.size) == (memfd, 0, PAGE, 2 * PAGE)


# ---- opening /dev/udmabuf and heaps ----------------------------------------------------------


def test_open_udmabuf_enoent_is_real(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SyscallError) as info:
        udmabuf.UdmabufDevice.open(str(tmp_path))
    assert str(info.value) == (
        f"Opening {tmp_path}/udmabuf: No such file or directory (ENOENT): the kernel lacks CONFIG_UDMABUF, "
        "or the udmabuf module is not loaded (modprobe udmabuf)"
    )
    assert info.value.errno == errno.ENOENT


def _deny(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    real_open = os.open

    def fake_open(path: str, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if "udmabuf" in str(path) or "dma_heap" in str(path):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_open_udmabuf_permission(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    _deny(monkeypatch, code)
    with pytest.raises(SyscallError) as info:
        udmabuf.UdmabufDevice.open("/dev")
    message = assert_one_line(info.value, code)
    assert message.startswith("Opening /dev/udmabuf: ")
    assert "no permission to open /dev/udmabuf" in message
    assert "run as root" in message
    assert 'udev rule such as KERNEL=="udmabuf", GROUP="video", MODE="0660" and join that group' in message


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_open_heap_permission(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    _deny(monkeypatch, code)
    with pytest.raises(SyscallError) as info:
        heaps_alloc.DmaHeap.open("system")
    message = assert_one_line(info.value, code)
    assert message.startswith("Opening dma-buf heap system (/dev/dma_heap/system): ")
    assert 'SUBSYSTEM=="dma_heap", KERNEL=="system", GROUP="video"' in message


def test_permission_message_says_who_owns_the_device(tmp_path: os.PathLike[str]) -> None:
    from dmabuf_inspect.errors import device_permission_cause

    node = os.path.join(tmp_path, "udmabuf")
    with open(node, "w"):
        pass
    os.chmod(node, 0o600)
    assert f"({node} is root:root mode 0600)" in device_permission_cause(node, 'KERNEL=="udmabuf"') or (
        os.geteuid() != 0
    )


def test_open_heap_enoent_without_heaps(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SyscallError) as info:
        heaps_alloc.DmaHeap.open("system", str(tmp_path))
    assert str(info.value) == (
        f"Opening dma-buf heap system ({tmp_path}/dma_heap/system): No such file or directory (ENOENT): "
        f"no {tmp_path}/dma_heap: this kernel has no dma-buf heaps "
        "(CONFIG_DMABUF_HEAPS with CONFIG_DMABUF_HEAPS_SYSTEM or another heap driver)"
    )


def test_open_heap_enoent_lists_the_heaps(tmp_path: os.PathLike[str]) -> None:
    heap_dir = os.path.join(tmp_path, "dma_heap")
    os.mkdir(heap_dir)
    with pytest.raises(SyscallError, match="which is empty"):
        heaps_alloc.DmaHeap.open("x", str(tmp_path))
    for name in ("system", "linux,cma"):
        with open(os.path.join(heap_dir, name), "w"):
            pass
    with pytest.raises(SyscallError) as info:
        heaps_alloc.DmaHeap.open("sytem", str(tmp_path))
    assert str(info.value).endswith(f"no heap sytem in {heap_dir} (heaps here: linux,cma, system)")
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("name", ["", "..", "a/b", "x\0y"])
def test_heap_name_is_checked_before_open(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a heap name"):
        heaps_alloc.DmaHeap.open(name)


# ---- heaps: DMA_HEAP_IOCTL_ALLOC -------------------------------------------------------------


def heap(fd: int) -> heaps_alloc.DmaHeap:
    return heaps_alloc.DmaHeap(os.dup(fd), "system", "/dev/dma_heap/system")


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        (
            {"fd_flags": ~(os.O_RDWR | os.O_CLOEXEC)},
            "fd_flags 0xfff7fffd may hold only O_RDONLY/O_WRONLY/O_RDWR and O_CLOEXEC "
            "(DMA_HEAP_VALID_FD_FLAGS 0x80003)",
        ),
        ({"heap_flags": 0x111111}, "heap_flags 0x111111 must be 0: no heap flags are defined"),
        ({}, "the size must not be zero"),
    ],
    ids=["fd-flags", "heap-flags", "zero-size"],
)
def test_heap_einval_says_which_rule(ioctl: IoctlRecorder, memfd: int, kwargs: dict[str, int], why: str) -> None:
    fails(ioctl, errno.EINVAL)
    size = 0 if not kwargs else 1 << 20
    with heap(memfd) as h, pytest.raises(SyscallError) as info:
        h.alloc(size, **kwargs)
    message = assert_one_line(info.value, errno.EINVAL)
    assert message.startswith(f"Allocating {size} bytes from dma-buf heap system: Invalid argument (EINVAL): ")
    assert why in message


def test_heap_enomem(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.ENOMEM)
    with heap(memfd) as h, pytest.raises(SyscallError) as info:
        h.alloc(1 << 30)
    assert assert_one_line(info.value, errno.ENOMEM).endswith(
        f"heap system could not find {1 << 30} bytes; free some memory or ask for less"
    )


def test_heap_alloc_argument(ioctl: IoctlRecorder, memfd: int) -> None:
    target = os.dup(memfd)

    def alloc(fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
        ioctl.calls.append((fd, request, bytes(arg)))
        arg.fd = target
        return 0

    fcntl.ioctl = alloc  # type: ignore[assignment]  # the fixture's monkeypatch restores it
    with heap(memfd) as h, h.alloc(PAGE, fd_flags=os.O_RDONLY) as buf:
        assert (buf.fd, buf.exporter) == (target, "system")
    (_, request, raw) = ioctl.calls[-1]
    assert request == uapi.DMA_HEAP_IOCTL_ALLOC
    arg = uapi.dma_heap_allocation_data.from_buffer_copy(raw)
    assert (arg.len, arg.fd_flags, arg.heap_flags) == (PAGE, os.O_RDONLY, 0)


# ---- real ENOTTY from this kernel: a memfd is none of these ----------------------------------


def test_real_enotty_udmabuf_create_on_a_memfd(memfd: int) -> None:
    with device(memfd) as dev, pytest.raises(SyscallError) as info:
        dev.create(memfd, 0, PAGE)
    assert "(/memfd:dmabuf-inspect (deleted)) is not the udmabuf device" in assert_one_line(info.value, errno.ENOTTY)


def test_real_enotty_heap_alloc_on_a_memfd(memfd: int) -> None:
    with heap(memfd) as h, pytest.raises(SyscallError) as info:
        h.alloc(PAGE)
    assert "/dev/dma_heap/system (/memfd:dmabuf-inspect (deleted)) is not a dma-buf heap" in assert_one_line(
        info.value, errno.ENOTTY
    )


@pytest.mark.parametrize(
    ("call", "step"),
    [
        (lambda fd: dmabuf_fd.sync_start(fd, "read"), "Syncing dma-buf fd {fd} for CPU read (start)"),
        (lambda fd: dmabuf_fd.sync_end(fd, "rw"), "Syncing dma-buf fd {fd} for CPU read/write (end)"),
        (lambda fd: dmabuf_fd.set_name(fd, "x"), "Naming dma-buf fd {fd}"),
        (lambda fd: dmabuf_fd.export_sync_file(fd), "Exporting a sync_file from dma-buf fd {fd}"),
        (lambda fd: dmabuf_fd.import_sync_file(fd, 0), "Importing sync_file fd 0 into dma-buf fd {fd}"),
    ],
    ids=["sync-start", "sync-end", "set-name", "export", "import"],
)
def test_real_enotty_dmabuf_ioctls_on_a_memfd(memfd: int, call: Any, step: str) -> None:
    with pytest.raises(SyscallError) as info:
        call(memfd)
    message = assert_one_line(info.value, errno.ENOTTY)
    assert message.startswith(step.format(fd=memfd) + ": Inappropriate ioctl for device (ENOTTY): ")
    assert f"fd {memfd} (/memfd:dmabuf-inspect (deleted)) is not a dma-buf" in message


# ---- dma-buf ioctls: sync, set_name, sync_file -----------------------------------------------


def test_sync_einval(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with pytest.raises(SyscallError) as info:
        dmabuf_fd.sync_flags(memfd, 0)
    message = assert_one_line(info.value, errno.EINVAL)
    assert message.startswith(f"Syncing dma-buf fd {memfd} for CPU flags 0x0 (raw): ")
    assert "the flags must ask for read, write or both, with START or END" in message


def test_sync_context_brackets_even_on_error(ioctl: IoctlRecorder, memfd: int) -> None:
    with pytest.raises(RuntimeError), dmabuf_fd.sync(memfd, "write"):
        raise RuntimeError("inside")
    flags = [arg.flags for _, request, arg in ioctl.calls if request == uapi.DMA_BUF_IOCTL_SYNC]
    assert flags == [
        uapi.DMA_BUF_SYNC_WRITE | uapi.DMA_BUF_SYNC_START,
        uapi.DMA_BUF_SYNC_WRITE | uapi.DMA_BUF_SYNC_END,
    ]


def test_sync_access_is_checked(memfd: int) -> None:
    with pytest.raises(InvalidArgumentError, match="access must be read, write or rw, not 'both'"):
        dmabuf_fd.sync_start(memfd, "both")  # type: ignore[arg-type]


def test_set_name_too_long_is_refused_before_the_ioctl(ioctl: IoctlRecorder, memfd: int) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        dmabuf_fd.set_name(memfd, "n" * 32)
    assert str(info.value) == (
        f"dma-buf name {'n' * 32} is 32 bytes; the kernel takes at most 31 (DMA_BUF_NAME_LEN 32 with its NUL)"
    )
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)
    with pytest.raises(InvalidArgumentError, match="is 32 bytes"):
        dmabuf_fd.set_name(memfd, "é" * 16)  # 16 characters, 32 bytes
    with pytest.raises(InvalidArgumentError, match="contains a NUL byte"):
        dmabuf_fd.set_name(memfd, "a\0b")
    assert ioctl.calls == []


def test_set_name_escapes_what_it_echoes(memfd: int) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        dmabuf_fd.set_name(memfd, "\x1b]0;pwned\x07" + "x" * 30)
    assert "\x1b" not in str(info.value) and "\\x1b]0;pwned\\x07" in str(info.value)


def test_set_name_passes_the_string_itself(ioctl: IoctlRecorder, memfd: int) -> None:
    dmabuf_fd.set_name(memfd, "n" * 31)
    dmabuf_fd.set_name(memfd, b"raw\xff")
    assert [(r, a) for _, r, a in ioctl.calls] == [
        (uapi.DMA_BUF_SET_NAME_B, b"n" * 31 + b"\0"),
        (uapi.DMA_BUF_SET_NAME_B, b"raw\xff\0"),
    ]


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (errno.EBUSY, "the buffer is attached to a device, and this kernel refuses to rename it then"),
        (errno.EINVAL, "the name must be shorter than 32 bytes"),
    ],
)
def test_set_name_errnos(ioctl: IoctlRecorder, memfd: int, code: int, why: str) -> None:
    fails(ioctl, code)
    with pytest.raises(SyscallError) as info:
        dmabuf_fd.set_name(memfd, "x")
    assert assert_one_line(info.value, code).endswith(why)


def test_export_sync_file_einval(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with pytest.raises(SyscallError) as info:
        dmabuf_fd.export_sync_file(memfd, "read")
    assert assert_one_line(info.value, errno.EINVAL).endswith(
        "the flags must be DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE or both"
    )


def test_import_sync_file_einval_names_the_sync_fd(ioctl: IoctlRecorder, memfd: int) -> None:
    fails(ioctl, errno.EINVAL)
    with pytest.raises(SyscallError) as info:
        dmabuf_fd.import_sync_file(memfd, memfd, "write")
    assert assert_one_line(info.value, errno.EINVAL).endswith(
        f"fd {memfd} (/memfd:dmabuf-inspect (deleted)) must be a sync_file"
    )


def test_export_returns_the_new_fd_and_import_sends_it(ioctl: IoctlRecorder, memfd: int) -> None:
    new_fd = os.dup(memfd)

    def fake(fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
        ioctl.calls.append((fd, request, bytes(arg)))
        if request == uapi.DMA_BUF_IOCTL_EXPORT_SYNC_FILE:
            arg.fd = new_fd
        return 0

    fcntl.ioctl = fake  # type: ignore[assignment]  # the fixture's monkeypatch restores it
    with dmabuf_fd.export_sync_file(memfd, "write") as sync_file:
        assert sync_file.fd == new_fd
        dmabuf_fd.import_sync_file(memfd, sync_file, "read")
    assert sync_file.closed
    sync_file.close()
    exported = uapi.dma_buf_export_sync_file.from_buffer_copy(ioctl.calls[0][2])
    imported = uapi.dma_buf_import_sync_file.from_buffer_copy(ioctl.calls[1][2])
    assert (exported.flags, exported.fd) == (uapi.DMA_BUF_SYNC_WRITE, -1)
    assert (imported.flags, imported.fd) == (uapi.DMA_BUF_SYNC_READ, new_fd)
    with pytest.raises(OSError):
        os.fstat(new_fd)


# ---- handles ---------------------------------------------------------------------------------


def test_dmabuf_close_is_safe_twice_and_closes_memfd_and_maps(memfd: int) -> None:
    fd, inner = os.dup(memfd), os.dup(memfd)
    buf = dmabuf_fd.DmaBuf(fd, exporter="udmabuf", memfd=inner)
    assert (buf.size_bytes, buf.inode) == (4 * PAGE, os.fstat(memfd).st_ino)
    m = buf.mmap()
    assert len(m) == 4 * PAGE
    with buf:
        pass
    buf.close()
    assert buf.closed and m.closed
    for gone in (fd, inner):
        with pytest.raises(OSError):
            os.fstat(gone)
    with pytest.raises(ValueError, match="closed"):
        _ = buf.fd


def handles(fd: int) -> list[OwnedFd]:
    """One of each fd-owning class, each over its own dup of FD."""
    return [
        device(fd),
        heap(fd),
        dmabuf_fd.DmaBuf(os.dup(fd), exporter="system"),
        dmabuf_fd.SyncFile(os.dup(fd)),
    ]


@pytest.mark.parametrize("kind", ["UdmabufDevice", "DmaHeap", "DmaBuf", "SyncFile"])
def test_every_handle_closes_once_as_a_context_manager(memfd: int, kind: str) -> None:
    (handle,) = [h for h in handles(memfd) if type(h).__name__ == kind]
    for other in handles(memfd):
        if other is not handle:
            other.close()
    fd = handle.fd
    assert isinstance(handle, OwnedFd) and not handle.closed
    with handle as entered:
        assert entered is handle
    assert handle.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    handle.close()  # twice: nothing happens, even once the number is reused
    reused = os.dup(memfd)
    try:
        handle.close()
        os.fstat(reused)
    finally:
        os.close(reused)


@pytest.mark.parametrize(
    ("index", "label"),
    [
        (0, "udmabuf device /dev/udmabuf is closed"),
        (1, "dma-buf heap system (/dev/dma_heap/system) is closed"),
        (2, "dma-buf INODE (system, 16384 bytes) is closed"),
        (3, "sync_file is closed"),
    ],
)
def test_use_after_close_is_a_clear_error(memfd: int, index: int, label: str) -> None:
    all_of_them = handles(memfd)
    for h in all_of_them:
        h.close()
    handle = all_of_them[index]
    message = label.replace("INODE", str(os.fstat(memfd).st_ino))
    with pytest.raises(ValueError) as info:
        _ = handle.fd
    assert str(info.value) == message
    with pytest.raises(ValueError, match=re.escape(message)), handle:
        pass
    with pytest.raises(ValueError, match=re.escape(message)):
        handle.detach()


def test_closing_in_a_with_block_on_error(memfd: int) -> None:
    h = heap(memfd)
    with pytest.raises(RuntimeError), h:
        raise RuntimeError("boom")
    assert h.closed


def test_reprs_show_the_fd_or_closed(memfd: int) -> None:
    dev, hp, buf, sf = handles(memfd)
    ino = os.fstat(memfd).st_ino
    assert repr(dev) == f"UdmabufDevice(fd={dev.fd}, path='/dev/udmabuf', size_limit_mb=64, list_limit=1024)"
    assert repr(hp) == f"DmaHeap(fd={hp.fd}, name='system', path='/dev/dma_heap/system')"
    assert repr(buf) == f"DmaBuf(fd={buf.fd}, exporter='system', size_bytes={4 * PAGE}, inode={ino})"
    assert repr(sf) == f"SyncFile(fd={sf.fd})"
    for h in (dev, hp, buf, sf):
        h.close()
    assert repr(hp) == "DmaHeap(closed, name='system', path='/dev/dma_heap/system')"
    assert repr(sf) == "SyncFile(closed)"
    with_memfd = dmabuf_fd.DmaBuf(os.dup(memfd), exporter="udmabuf", memfd=os.dup(memfd))
    assert repr(with_memfd).endswith(f"inode={ino}, memfd={with_memfd.memfd})")
    with_memfd.close()


def test_detach_hands_over_the_fd_and_close_leaves_it_open(memfd: int) -> None:
    inner = os.dup(memfd)
    buf = dmabuf_fd.DmaBuf(os.dup(memfd), exporter="udmabuf", memfd=inner)
    fd = buf.detach()
    try:
        assert buf.closed and buf.memfd == inner
        buf.close()
        os.fstat(fd)  # still open: the caller owns it
        with pytest.raises(OSError):
            os.fstat(inner)  # the memfd stayed with the buffer, and closed with it
    finally:
        os.close(fd)


def test_mmap_einval_message(memfd: int) -> None:
    with dmabuf_fd.DmaBuf(os.dup(memfd), exporter="system") as buf, pytest.raises(SyscallError) as info:
        fd = buf.fd
        buf.mmap(PAGE, offset=PAGE // 2)
    message = assert_one_line(info.value, errno.EINVAL)
    assert message.startswith(f"Mapping {PAGE} bytes at offset {PAGE // 2} of dma-buf fd {fd}: ")
    assert "the offset must be page aligned" in message


def test_make_memfd_seals_shrink() -> None:
    fd = udmabuf.make_memfd(2 * PAGE)
    try:
        assert os.fstat(fd).st_size == 2 * PAGE
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
        with pytest.raises(OSError):
            os.ftruncate(fd, PAGE)
    finally:
        os.close(fd)


def test_make_memfd_size_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, size: int) -> None:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(os, "ftruncate", refuse)
    with pytest.raises(SyscallError) as info:
        udmabuf.make_memfd(PAGE)
    assert str(info.value) == (
        f"Sizing memfd to {PAGE} bytes: File too large (EFBIG): the size is larger than a file may be"
    )


def test_create_with_memfd_refuses_nonpositive_size() -> None:
    with pytest.raises(InvalidArgumentError, match="must be positive"):
        udmabuf.create_with_memfd(0)


def test_read_limits(tmp_path: os.PathLike[str]) -> None:
    params = os.path.join(tmp_path, "module", "udmabuf", "parameters")
    os.makedirs(params)
    with open(os.path.join(params, "size_limit_mb"), "w") as f:
        f.write("64\n")
    assert udmabuf.read_limits(str(tmp_path)) == udmabuf.UdmabufLimits(64, None)


def test_fd_target_of_a_closed_fd() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    assert dmabuf_fd.fd_target(fd) == "/dev/null"
    os.close(fd)
    assert dmabuf_fd.fd_target(fd) == "not open"
