"""Pin our dma-buf BPF iterator for every user (Android's format), unpin it, or say what BPF can read here.

    dmabuf-inspect bpf status          what this kernel and this user can have, one line each
    dmabuf-inspect bpf pin [PATH]      root: pin the iterator (default: Android's path)
    dmabuf-inspect bpf unpin [PATH]    root: remove it

A pinned iterator is a file on bpffs: each read of it walks every dma-buf and prints 4 lines per
buffer (inode, size, name with newlines as spaces, exporter), the format of Android's
dmabufIter.c, so dmabuf_dump and libdmabufinfo read ours as we read theirs. Reading needs no
privilege, only permission: the pin is made mode 0444 (--mode), its new directories 0755, and
bpffs itself is mounted 0700 by systemd, so an admin who wants every user to read it runs
`chmod o+x /sys/fs/bpf` (or mounts bpffs with mode=0711). The dma-buf iterator is in 6.16+.
"""

from __future__ import annotations

import argparse
import os

from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.kernel.bpf import source
from dmabuf_inspect.kernel.bpf.btf import VMLINUX
from dmabuf_inspect.kernel.bpf.syscall import BPF_FS_MAGIC, NEEDS_ROOT, BpfError
from dmabuf_inspect.textsafe import escape

NAME = "bpf"


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no octal mode such as 0444") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is no file mode (0000-0777)")
    return mode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="bpf_action", metavar="ACTION", required=True)
    actions.add_parser("status", help="what BPF can read on this kernel, as this user")
    pin = actions.add_parser("pin", help="pin the dma-buf iterator in Android's format (root)")
    pin.add_argument("path", nargs="?", default=source.DEFAULT_PIN, metavar="PATH", help="default: %(default)s")
    pin.add_argument("--mode", type=_mode, default=0o444, help="the pin's permissions, octal (default: 0444)")
    unpin = actions.add_parser("unpin", help="remove a pin (root)")
    unpin.add_argument("path", nargs="?", default=source.DEFAULT_PIN, metavar="PATH", help="default: %(default)s")


def _searchable_by_others(path: str) -> str | None:
    """The first directory above `path` that others may not enter, or None."""
    here = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            if not os.stat(here).st_mode & 0o001:
                return here
        except OSError:
            return here
        if here == "/":
            return None
        here = os.path.dirname(here)


def _status() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    rows.append(("privileges", "ok" if source.capable() else f"unavailable: {NEEDS_ROOT}"))
    with source.BpfSource() as bpf:
        for name, walk in (
            ("dma-buf iterator", bpf.buffers),
            ("task iterators", bpf.holders),
            ("task iterator", bpf.tasks),  # who each process is, for a scan with BPF holders
        ):
            try:
                walk()
                rows.append((name, "ok"))
            except (source.BpfUnavailable, BpfError) as exc:
                rows.append((name, f"unavailable: {source.reason_of(exc)}"))
    if not os.path.exists(VMLINUX):
        rows.append(("BTF", f"unavailable: {source.NO_BTF}"))
    try:
        mounted = source.fs_magic(source.BPFFS) == BPF_FS_MAGIC
    except OSError:
        mounted = False
    rows.append(("bpffs", f"mounted at {source.BPFFS}" if mounted else f"not mounted at {source.BPFFS}"))
    try:
        pinned = source.read_pinned(source.DEFAULT_PIN)
        rows.append(("pinned", f"{source.DEFAULT_PIN}: {len(pinned.buffers)} buffers"))
    except source.BpfUnavailable as exc:
        rows.append(("pinned", exc.reason))
    return rows


def run(args: argparse.Namespace) -> int:
    roots = getattr(args, "roots", None)
    if roots is not None and not roots.live:
        raise UsageError("bpf works on the running kernel only, not on a captured tree")
    if args.bpf_action == "status":
        rows = _status()
        width = max(len(name) for name, _ in rows)
        for name, state in rows:
            print(f"{name:<{width}}  {escape(state)}")
        return 0
    path = args.path
    if args.bpf_action == "pin":
        source.pin(path, mode=args.mode)
        print(f"pinned the dma-buf iterator at {escape(path)} (mode {args.mode:04o})")
        closed = _searchable_by_others(path)
        if args.mode & 0o004 and closed is not None:
            print(f"  others can't reach it yet: {escape(closed)} is not searchable (chmod o+x {escape(closed)})")
        return 0
    source.unpin(path)
    print(f"unpinned {escape(path)}")
    return 0
