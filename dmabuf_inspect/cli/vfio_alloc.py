"""`alloc --vfio PCI_ADDR --region N --range OFF:LEN ...`: export BAR ranges of a vfio-pci device
as dma-bufs in this process and hold them, as a known load of device memory (Linux 6.19+).

Kept apart from commands/alloc.py, which only adds the arguments and calls `run()` when --vfio
is given. The device stays open while the buffers are held: closing it would revoke them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import ExitStack

from dmabuf_inspect.errors import InvalidArgumentError, UsageError
from dmabuf_inspect.ioctl.buffer import DmaBuf, encode_name
from dmabuf_inspect.ioctl.vfio import check_pci_address, open_device, parse_range
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import human_bytes


def _range_arg(text: str) -> tuple[int, int]:
    try:
        return parse_range(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _region_arg(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 5:
        raise argparse.ArgumentTypeError(f"region {escape(text)!s} must be a BAR number, 0 to 5")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--region and --range; --vfio itself joins alloc's group of sources."""
    parser.add_argument(
        "--region", type=_region_arg, metavar="N", help="with --vfio: the BAR to export from, 0-5 (default 0)"
    )
    parser.add_argument(
        "--range",
        type=_range_arg,
        action="append",
        metavar="OFF:LEN",
        help="with --vfio: a page-aligned range of the BAR, e.g. 0:4K; repeat it for a buffer of several ranges",
    )


def wanted(args: argparse.Namespace) -> bool:
    """True when alloc was given --vfio."""
    return getattr(args, "vfio", None) is not None


def check_arguments(args: argparse.Namespace) -> None:
    """UsageError for VFIO options given without --vfio, or alloc options that --vfio does not take."""
    if not wanted(args):
        given = [f"--{flag}" for flag in ("region", "range") if getattr(args, flag, None) is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} go with --vfio PCI_ADDR only")
        return
    if args.size is not None:
        raise UsageError("--vfio takes no --size: the buffer's size is the sum of its --range lengths")
    if args.map:
        raise UsageError("--vfio takes no --map: VFIO dma-bufs cannot be mapped by the CPU (no mmap op in 7.3)")
    if not args.range:
        raise UsageError("--vfio needs at least one --range OFF:LEN (e.g. --range 0:4K)")
    try:
        check_pci_address(args.vfio)
    except InvalidArgumentError as exc:
        raise UsageError(f"--vfio: {exc}") from None


def run(args: argparse.Namespace, *, hold_signals: tuple[signal.Signals, ...]) -> int:
    """Export args.count buffers of args.range of BAR args.region, print them, hold them (as
    alloc does: --hold seconds; by default until Ctrl-C on a terminal, at once otherwise)."""
    from dmabuf_inspect.cli.commands.alloc import _drain_signals, _hold

    check_arguments(args)
    hold: float | None = args.hold
    if hold is None:
        hold = None if sys.stdin.isatty() and sys.stdout.isatty() else 0.0
    name: str | None = args.name
    if name is not None:
        try:
            encode_name(name)
        except InvalidArgumentError as exc:
            raise UsageError(f"--name: {exc}") from None
    region: int = 0 if args.region is None else args.region
    ranges: list[tuple[int, int]] = args.range
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, hold_signals)
    try:
        with ExitStack() as stack:
            device = stack.enter_context(open_device(args.vfio, dev_root=args.roots.dev_root))
            bufs: list[DmaBuf] = []
            for _ in range(args.count):
                buf = stack.enter_context(device.export_dma_buf(region, ranges))
                bufs.append(buf)
                if name is not None:
                    buf.set_name(name)
            where = " ".join(f"{o}:{n}" for o, n in ranges)
            total = sum(b.size_bytes for b in bufs)
            print(
                f"pid {os.getpid()}: {len(bufs)} buffer{'s' if len(bufs) != 1 else ''} from VFIO device "
                f"{device.address} (device fd {device.fd}) BAR {region}, ranges {where}, "
                f"{human_bytes(total)} of device memory in all"
            )
            for buf in bufs:
                parts = [f"fd {buf.fd}", f"inode {buf.inode}", f"{buf.size_bytes} bytes", f"exporter {buf.exporter}"]
                if name is not None:
                    parts.append(f"name {escape(name)}")
                print("  " + "  ".join(parts))
            _hold(hold)
        return 0
    finally:
        _drain_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
