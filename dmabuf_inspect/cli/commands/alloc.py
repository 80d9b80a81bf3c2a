"""Allocate dma-bufs in this process (udmabuf or a heap) and hold them, as a known load for testing.

With --vfio PCI_ADDR it exports ranges of a vfio-pci device's BAR instead (cli/vfio_alloc.py).

The buffers live only as long as this command: it prints what it made, holds them for --hold
seconds (by default until Ctrl-C on a terminal, at once otherwise) and exits 0 on Ctrl-C or
SIGTERM.

Before allocating it refuses what looks absurd (more than the machine's memory, over udmabuf's
size_limit_mb, more fds than ulimit -n: a usage error) and what does not fit in the memory
available (exit 1): count x size may take at most MemAvailable (psutil.virtual_memory().available)
less a margin of an eighth of it, and at least 64 MiB, left for the rest of the machine. --force
allocates anyway.
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
import resource
import signal
import sys
from contextlib import ExitStack
from dataclasses import dataclass

from dmabuf_inspect.cli import vfio_alloc
from dmabuf_inspect.errors import DmabufInspectError, InvalidArgumentError, UsageError
from dmabuf_inspect.ioctl.buffer import DmaBuf, encode_name
from dmabuf_inspect.ioctl.heaps import DmaHeap
from dmabuf_inspect.ioctl.udmabuf import UdmabufDevice, create_with_memfd
from dmabuf_inspect.kernel.devices import read_udmabuf
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import SIZE_GRAMMAR, SizeError, human_bytes, parse_size

NAME = "alloc"

_FD_HEADROOM = 16
_HOLD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MARGIN_FRACTION = 8  # an eighth of the memory available stays free...
MARGIN_MIN_BYTES = 64 << 20  # ...and at least this much
_ROOT_OPTIONS = (
    ("tree", None),
    ("proc_root", "/proc"),
    ("sys_root", "/sys"),
    ("debugfs_root", "/sys/kernel/debug"),
    ("dev_root", "/dev"),
)


class NotEnoughMemoryError(DmabufInspectError):
    """A request that does not fit in the memory available (exit 1: the machine, not the usage)."""


def refuse_root_options(args: argparse.Namespace, what: str) -> None:
    """A usage error when a root option (--tree, --proc-root, ...) was given, before or after the
    command: WHAT ('alloc makes buffers') happens on this machine, whatever tree is named."""
    given = [
        f"--{name.replace('_', '-')}"
        for name, default in _ROOT_OPTIONS
        if getattr(args, name, None) not in (None, default)
    ]
    if given:
        raise UsageError(
            f"{what} on this machine, so it takes no --tree, --proc-root, --sys-root, --debugfs-root or "
            f"--dev-root (given: {', '.join(given)})"
        )


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"count {escape(text)!s} must be a whole number of at least 1")
    return int(text)


def _hold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"hold {escape(text)!s} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"hold {escape(text)!s} must be 0 or more seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--udmabuf", action="store_true", help="make udmabufs from sealed memfds")
    source.add_argument("--heap", metavar="NAME", help="allocate from /dev/dma_heap/NAME (e.g. system)")
    source.add_argument(
        "--vfio", metavar="PCI_ADDR", help="export BAR ranges of a vfio-pci device (6.19+; --region, --range)"
    )
    parser.add_argument(
        "--size", type=_size_arg, metavar="SIZE", help=f"per buffer, with --udmabuf or --heap: {SIZE_GRAMMAR}"
    )
    vfio_alloc.add_arguments(parser)
    parser.add_argument("--count", type=_count_arg, default=1, metavar="N", help="how many buffers (1)")
    parser.add_argument("--name", help="name each buffer (DMA_BUF_SET_NAME, at most 31 bytes)")
    parser.add_argument("--map", action="store_true", help="also map each buffer into this process")
    parser.add_argument(
        "--hold",
        type=_hold_arg,
        metavar="SECONDS",
        help="how long to hold them (default: until Ctrl-C on a terminal; 0 = exit at once)",
    )
    parser.add_argument("--force", action="store_true", help="allocate even what looks absurd")


@dataclass(frozen=True, slots=True)
class Memory:
    total_bytes: int
    available_bytes: int  # MemAvailable: what can be allocated without swapping

    @property
    def margin_bytes(self) -> int:
        """What a request must leave of the memory available."""
        return max(self.available_bytes // MARGIN_FRACTION, MARGIN_MIN_BYTES)

    @property
    def allowed_bytes(self) -> int:
        return max(0, self.available_bytes - self.margin_bytes)


def read_memory() -> Memory | None:
    """This machine's memory (psutil.virtual_memory()); None when it cannot be read."""
    import psutil

    try:
        vm = psutil.virtual_memory()
    except (OSError, RuntimeError):
        return None
    return Memory(int(vm.total), int(vm.available))


def check_memory(needed_bytes: int, what: str, memory: Memory | None) -> None:
    """NotEnoughMemoryError when NEEDED_BYTES (WHAT, e.g. '--count 2 x --size 1.0 GiB') is more
    than the memory available less the margin."""
    if memory is None or needed_bytes <= memory.allowed_bytes:
        return
    raise NotEnoughMemoryError(
        f"{what} = {human_bytes(needed_bytes)} is more than the memory available "
        f"({human_bytes(memory.available_bytes)}) less a margin of {human_bytes(memory.margin_bytes)} "
        "kept for the rest of the machine"
    )


def fds_needed(count: int, *, udmabuf: bool, mapped: bool) -> int:
    """Open fds the allocation takes: the buffer, its memfd, and the dup() that mmap makes."""
    return count * (1 + int(udmabuf) + int(mapped))


def check_sane(
    size_bytes: int,
    count: int,
    *,
    memory: Memory | None,
    udmabuf_limit_mb: int | None,
    udmabuf: bool,
    mapped: bool,
    fd_limit: int | None,
) -> str | None:
    """Why this request looks absurd (a one-line reason), or None. The memory available is
    `check_memory`'s."""
    if memory is not None and size_bytes > memory.total_bytes:
        return (
            f"--size {human_bytes(size_bytes)} is more than this machine's memory ({human_bytes(memory.total_bytes)})"
        )
    if udmabuf and udmabuf_limit_mb is not None and size_bytes > udmabuf_limit_mb << 20:
        return (
            f"--size {human_bytes(size_bytes)} is over udmabuf's size_limit_mb ({udmabuf_limit_mb} MiB; "
            "raise /sys/module/udmabuf/parameters/size_limit_mb as root)"
        )
    needed = fds_needed(count, udmabuf=udmabuf, mapped=mapped) + _FD_HEADROOM
    if fd_limit is not None and needed > fd_limit:
        return f"--count {count} needs about {needed} open files, over this process's limit (ulimit -n {fd_limit})"
    return None


def _fd_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _round_to_page(size_bytes: int) -> int:
    page = mmap.PAGESIZE
    return -(-size_bytes // page) * page


def describe(buf: DmaBuf, *, name: str | None, mapped: bool) -> str:
    parts = [f"fd {buf.fd}"]
    if buf.memfd is not None:
        parts.append(f"memfd {buf.memfd}")
    parts += [f"inode {buf.inode}", f"{buf.size_bytes} bytes", f"exporter {escape(buf.exporter)}"]
    if name is not None:
        parts.append(f"name {escape(name)}")
    if mapped:
        parts.append("mapped")
    return "  ".join(parts)


def _wait_for_signal(seconds: float | None) -> int | None:
    """Wait (SIGINT/SIGTERM blocked) up to `seconds` (None: forever); the signal that came, or None."""
    if seconds is None:
        return signal.sigwait(_HOLD_SIGNALS)
    if seconds <= 0:
        return None
    info = signal.sigtimedwait(_HOLD_SIGNALS, seconds)
    return None if info is None else info.si_signo


def _hold(seconds: float | None) -> None:
    """Say how long the buffers are held, then hold them: until SIGINT/SIGTERM, or `seconds`."""
    if seconds is None:
        print("holding them until Ctrl-C (or SIGTERM)")
    elif seconds > 0:
        print(f"holding them for {seconds:g} s (Ctrl-C or SIGTERM releases them sooner)")
    sys.stdout.flush()
    _wait_for_signal(seconds)


def _drain_signals() -> None:
    while signal.sigpending() & set(_HOLD_SIGNALS):
        signal.sigtimedwait(_HOLD_SIGNALS, 0)


def run(args: argparse.Namespace) -> int:
    refuse_root_options(args, "alloc makes buffers")
    vfio_alloc.check_arguments(args)
    if vfio_alloc.wanted(args):
        return vfio_alloc.run(args, hold_signals=_HOLD_SIGNALS)
    if args.size is None:
        raise UsageError("the following arguments are required: --size")
    roots: Roots = args.roots
    name: str | None = args.name
    if name is not None:
        try:
            encode_name(name)
        except InvalidArgumentError as exc:
            raise UsageError(f"--name: {exc}") from None
    size_bytes = _round_to_page(args.size)
    count: int = args.count
    use_udmabuf = bool(args.udmabuf)
    udmabuf_info = read_udmabuf(roots) if use_udmabuf else None
    if not args.force:
        memory = read_memory()
        why = check_sane(
            size_bytes,
            count,
            memory=memory,
            udmabuf_limit_mb=udmabuf_info.size_limit_mb if udmabuf_info else None,
            udmabuf=use_udmabuf,
            mapped=args.map,
            fd_limit=_fd_limit(),
        )
        if why:
            raise UsageError(f"refusing to allocate: {why}; add --force to try anyway")
        try:
            check_memory(size_bytes * count, f"--count {count} x --size {human_bytes(size_bytes)}", memory)
        except NotEnoughMemoryError as exc:
            raise NotEnoughMemoryError(f"refusing to allocate: {exc}; add --force to try anyway") from None

    hold: float | None = args.hold
    if hold is None:
        hold = None if sys.stdin.isatty() and sys.stdout.isatty() else 0.0

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HOLD_SIGNALS)
    try:
        with ExitStack() as stack:
            bufs: list[DmaBuf] = []
            if use_udmabuf:
                device = stack.enter_context(UdmabufDevice.open(roots.dev_root, roots.sys_root))
                source = f"udmabuf ({escape(device.path)})"
            else:
                heap = stack.enter_context(DmaHeap.open(args.heap, roots.dev_root))
                source = f"heap {escape(heap.name)} ({escape(heap.path)})"
            for _ in range(count):
                buf = create_with_memfd(size_bytes, device=device) if use_udmabuf else heap.alloc(size_bytes)
                stack.enter_context(buf)
                bufs.append(buf)
                if name is not None:
                    buf.set_name(name)
                if args.map:
                    buf.mmap()
            total = sum(b.size_bytes for b in bufs)
            rounded = ""
            if size_bytes != args.size:
                rounded = f" (rounded up from {args.size} bytes to whole pages)"
            print(
                f"pid {os.getpid()}: {count} buffer{'s' if count != 1 else ''} from {source}, "
                f"{human_bytes(total)} in all{rounded}"
            )
            for buf in bufs:
                print(f"  {describe(buf, name=name, mapped=args.map)}")
            _hold(hold)
        return 0
    finally:
        _drain_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
