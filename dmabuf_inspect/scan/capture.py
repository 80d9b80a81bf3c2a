"""Copy the kernel files a snapshot reads into a tree that `Roots.from_tree()` reads back.

    DIR/uname                                   the kernel release (also DIR/proc/sys/kernel/osrelease)
    DIR/capture.txt                             when and from where, and what was left out
    DIR/proc/PID/fd/N                           a symlink with the fd link's exact target text
    DIR/proc/PID/fdinfo/N
    DIR/proc/PID/maps                           only the dma-buf lines
    DIR/proc/PID/{comm,cmdline,status,stat}
    DIR/proc/PID/cgroup                         where readable (the process's cgroup)
    DIR/sys/kernel/debug/dma_buf/bufinfo
    DIR/sys/fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf   the dma-buf BPF iterator's output (6.16+): every
                                                buffer, in Android's format (4 lines per buffer), read
                                                back as sources.bpf "ok (captured)"
    DIR/sys/kernel/dmabuf/buffers/INO/{exporter_name,size}   where the kernel has them (< 6.10)
    DIR/sys/module/udmabuf/parameters/{size_limit_mb,list_limit}
    DIR/sys/module/dma_heap/parameters/mem_accounting   where the kernel has it (7.0+)
    DIR/sys/class/dma_heap/NAME/dev
    DIR/dev/dma_heap/NAME, DIR/dev/udmabuf      empty files standing for the devices

Only processes that hold a dma-buf (by fd or by mapping) are copied, and of them only their
dma-buf fds and mappings: a capture says nothing about other files. Processes that exit
meanwhile are skipped; processes that cannot be read are counted. The source may itself be a
captured tree (its links are read as text, never followed).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dmabuf_inspect.errors import UsageError, describe_oserror
from dmabuf_inspect.kernel.bpf import BpfUnavailable
from dmabuf_inspect.kernel.cgroup import MEM_ACCOUNTING
from dmabuf_inspect.kernel.devices import HEAP_DIR, UDMABUF_DEVICE, UDMABUF_PARAMETER_NAMES, read_udmabuf_param
from dmabuf_inspect.kernel.reader import DENIED, GONE, OUTSIDE, Roots, gap_kind
from dmabuf_inspect.kernel.vfio import is_vfio_device_link
from dmabuf_inspect.scan import bpfscan

DMABUF_LINK_PREFIX = b"/dmabuf:"
DMABUF_LINK_LEGACY = b"anon_inode:dmabuf"  # before 5.3
PROC_FILES = ("comm", "cmdline", "status", "stat")
# start-end perms offset dev inode, then the path: a dma-buf's is `/dmabuf:NAME`
# (`anon_inode:dmabuf` before 5.3).
_MAPS_DMABUF = re.compile(rb"^\S+ \S+ \S+ \S+ \d+ +(?:/dmabuf:|anon_inode:dmabuf$)")


@dataclass(slots=True)
class CaptureReport:
    """What a capture copied, and what it could not."""

    directory: str
    kernel: str
    processes: int = 0
    fds: int = 0
    mappings: int = 0
    vanished: int = 0
    denied_pids: list[int] = field(default_factory=list)
    outside_pids: list[int] = field(default_factory=list)  # a source capture's links lead outside it
    sources: dict[str, str] = field(default_factory=dict)  # NAME -> "ok" | "unavailable: why"


@dataclass(frozen=True, slots=True)
class _Process:
    pid: int
    links: tuple[tuple[int, bytes, bytes], ...]  # fd, link target, fdinfo
    maps: bytes
    files: dict[str, bytes]


def dmabuf_maps_lines(maps: bytes) -> list[bytes]:
    """The lines of /proc/PID/maps that map a dma-buf, each with its newline."""
    return [line for line in maps.splitlines(keepends=True) if _MAPS_DMABUF.match(line)]


def is_dmabuf_link(target: bytes) -> bool:
    return target.startswith(DMABUF_LINK_PREFIX) or target == DMABUF_LINK_LEGACY


class _Writer:
    def __init__(self, top: str) -> None:
        self.top = top

    def path(self, *parts: str) -> str:
        return os.path.join(self.top, *parts)

    def file(self, data: bytes, *parts: str) -> None:
        path = self.path(*parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def link(self, target: bytes, *parts: str) -> None:
        path = self.path(*parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, os.fsencode(path))


def _prepare(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        if os.listdir(directory):
            raise UsageError(f"capture directory {directory} is not empty")
    except OSError as exc:
        raise UsageError(describe_oserror(f"Creating capture directory {directory}", exc)) from None


def _kernel_release(roots: Roots) -> str:
    if roots.live:
        return os.uname().release
    try:
        return roots.proc.read("sys/kernel/osrelease", 256).decode("utf-8", "replace").strip()
    except OSError:
        return "unknown"


def _read_process(roots: Roots, pid: int) -> _Process | None:
    """A process's dma-buf fds and mappings and who it is; None when it holds none.

    Raises OSError when it can't be read (reader.gap_kind says why); an fd closed meanwhile is
    skipped.
    """
    proc = roots.proc
    links = []
    for name in sorted(proc.listdir(f"{pid}/fd"), key=lambda n: (len(n), n)):
        if not name.isdigit():
            continue
        try:
            target = os.fsencode(proc.readlink(f"{pid}/fd/{name}"))
            # VFIO device fds too: their fdinfo names the device of the VFIO dma-bufs held beside them
            if not is_dmabuf_link(target) and not is_vfio_device_link(os.fsdecode(target)):
                continue
            info = proc.read(f"{pid}/fdinfo/{name}", 8192)
        except OSError as exc:
            if gap_kind(exc) == GONE:
                continue  # closed meanwhile
            raise
        links.append((int(name), target, info))
    maps = b"".join(dmabuf_maps_lines(proc.read(f"{pid}/maps")))
    if not maps and not any(is_dmabuf_link(target) for _, target, _ in links):
        return None
    files = {name: proc.read(f"{pid}/{name}", 1 << 16) for name in PROC_FILES}
    with contextlib.suppress(OSError):  # optional: the process's cgroup stays unknown without it
        files["cgroup"] = proc.read(f"{pid}/cgroup", 1 << 16)
    return _Process(pid, tuple(links), maps, files)


def _capture_processes(roots: Roots, out: _Writer, report: CaptureReport) -> None:
    pids = sorted(int(n) for n in roots.proc.listdir() if n.isdigit())
    for pid in pids:
        try:
            proc = _read_process(roots, pid)
        except OSError as exc:
            kind = gap_kind(exc)
            if kind == GONE:
                report.vanished += 1
            elif kind == DENIED:
                report.denied_pids.append(pid)
            elif kind == OUTSIDE:
                report.outside_pids.append(pid)
            else:
                raise
            continue
        if proc is None:
            continue
        d = str(pid)
        for fd, target, info in proc.links:
            out.link(target, "proc", d, "fd", str(fd))
            out.file(info, "proc", d, "fdinfo", str(fd))
        out.file(proc.maps, "proc", d, "maps")
        for name, data in proc.files.items():
            out.file(data, "proc", d, name)
        report.processes += 1
        report.fds += len(proc.links)
        report.mappings += proc.maps.count(b"\n")


def _unavailable(exc: OSError, what: str) -> str:
    return "unavailable: " + describe_oserror(what, exc)


def _copy_optional(
    report: CaptureReport, source: str, read: Callable[[], None], what: str, *, missing_ok: bool = False
) -> None:
    try:
        read()
    except OSError as exc:
        if missing_ok and exc.errno == errno.ENOENT:
            report.sources[source] = f"unavailable: {what} does not exist"
        else:
            report.sources[source] = _unavailable(exc, f"reading {what}")
        return
    report.sources[source] = "ok"


def capture(directory: str, roots: Roots | None = None) -> CaptureReport:
    """Copy what a snapshot of `roots` (the live system by default) reads into `directory`.

    `directory` must be empty or not exist yet.
    """
    roots = roots or Roots()
    _prepare(directory)
    out = _Writer(directory)
    kernel = _kernel_release(roots)
    report = CaptureReport(directory=directory, kernel=kernel)
    out.file(kernel.encode() + b"\n", "uname")
    out.file(kernel.encode() + b"\n", "proc", "sys", "kernel", "osrelease")

    try:
        _capture_processes(roots, out, report)
        report.sources["proc"] = "ok"
    except OSError as exc:
        report.sources["proc"] = _unavailable(exc, f"listing {roots.proc_root}")

    bufinfo = "dma_buf/bufinfo"

    def copy_bufinfo() -> None:
        out.file(roots.debugfs.read(bufinfo), "sys", "kernel", "debug", "dma_buf", "bufinfo")

    _copy_optional(report, "bufinfo", copy_bufinfo, roots.debugfs.path(bufinfo))
    _copy_bpf(roots, out, report)

    buffers_dir = "kernel/dmabuf/buffers"

    def copy_sysfs() -> None:
        for ino in sorted(roots.sys.listdir(buffers_dir)):
            for name in ("exporter_name", "size"):
                try:
                    data = roots.sys.read(f"{buffers_dir}/{ino}/{name}")
                except FileNotFoundError:
                    continue  # freed meanwhile
                out.file(data, "sys", "kernel", "dmabuf", "buffers", ino, name)

    _copy_optional(report, "sysfs", copy_sysfs, roots.sys.path(buffers_dir), missing_ok=True)

    def copy_heaps() -> None:
        names = sorted(roots.dev.listdir(HEAP_DIR))
        if not names:
            raise FileNotFoundError(errno.ENOENT, "no heaps", roots.dev.path(HEAP_DIR))
        for name in names:
            out.file(b"", "dev", "dma_heap", name)
            with contextlib.suppress(OSError):  # only the device numbers; the heap itself is known
                data = roots.sys.read(f"class/{HEAP_DIR}/{name}/dev", 64)
                out.file(data, "sys", "class", "dma_heap", name, "dev")

    _copy_optional(report, "heaps", copy_heaps, roots.dev.path(HEAP_DIR), missing_ok=True)

    def copy_udmabuf() -> None:
        if not roots.dev.lexists(UDMABUF_DEVICE):
            raise FileNotFoundError(errno.ENOENT, "no udmabuf", roots.dev.path(UDMABUF_DEVICE))
        out.file(b"", "dev", "udmabuf")
        for name in UDMABUF_PARAMETER_NAMES:
            value = read_udmabuf_param(roots.sys, name)
            if value is not None:
                out.file(f"{value}\n".encode(), "sys", "module", "udmabuf", "parameters", name)

    _copy_optional(report, "udmabuf", copy_udmabuf, roots.dev.path(UDMABUF_DEVICE), missing_ok=True)
    with contextlib.suppress(OSError):  # 7.0+ only; absent: the kernel has no such parameter
        out.file(roots.sys.read(MEM_ACCOUNTING, 64), "sys", *MEM_ACCOUNTING.split("/"))

    out.file(_note(roots, report).encode(), "capture.txt")
    return report


def _copy_bpf(roots: Roots, out: _Writer, report: CaptureReport) -> None:
    """The dma-buf iterator's output (ours, or a pin: scan/bpfscan.py), or a source capture's copy of it."""
    where = ("sys", *bpfscan.CAPTURED_ITER.split("/"))
    if not roots.live and roots.bpf:

        def copy() -> None:
            out.file(roots.sys.read(bpfscan.CAPTURED_ITER), *where)

        _copy_optional(report, "bpf", copy, roots.sys.path(bpfscan.CAPTURED_ITER), missing_ok=True)
        return
    try:
        text = bpfscan.capture_text(roots)
    except BpfUnavailable as exc:
        report.sources["bpf"] = f"unavailable: {exc.reason}"
        return
    out.file(text, *where)
    report.sources["bpf"] = "ok"


def _note(roots: Roots, report: CaptureReport) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    lines = [
        f"dmabuf-inspect capture of kernel {report.kernel} at {when}",
        f"from {roots.proc_root} {roots.sys_root} {roots.debugfs_root} {roots.dev_root}",
        f"{report.processes} processes holding dma-bufs: {report.fds} fds, {report.mappings} mappings",
        "kept: dma-buf fds only, and only the dma-buf lines of maps",
    ]
    if report.denied_pids:
        lines.append(f"not readable: pids {' '.join(map(str, report.denied_pids))}")
    if report.outside_pids:
        lines.append(f"links lead outside the source capture: pids {' '.join(map(str, report.outside_pids))}")
    lines.extend(f"{name}: {state}" for name, state in sorted(report.sources.items()))
    return "\n".join(lines) + "\n"
