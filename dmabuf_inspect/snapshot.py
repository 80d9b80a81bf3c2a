"""One full scan: every dma-buf, who holds it by fd or mapping, and what debugfs adds.

Policy for races and permissions (as psutil does it): a process or fd that vanishes
mid-scan is skipped silently; a process whose fd table or maps we may not read is
counted in `denied_pids` and gets one `ScanError`; a source that cannot be read at all
is marked `"unavailable: why"` in `sources`.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import bufinfo as bufinfo_mod
from . import devices
from .classes import exporter_class
from .fdinfo import FdinfoParseError, parse_fdinfo
from .maps import parse_maps
from .model import (
    Buffer,
    BufInfo,
    BufInfoEntry,
    FdInfo,
    Heap,
    Holder,
    MapEntry,
    Process,
    ScanError,
    Snapshot,
    SysfsBuffer,
    Totals,
    Udmabuf,
)
from .procinfo import identify
from .roots import OutsideRootError, Roots, listdir, read_bytes
from .sysfs import read_sysfs_buffers

_DMABUF_PREFIX = "/dmabuf:"
_DMABUF_ANON = "anon_inode:dmabuf"  # before 5.3 (commit bb2bb9030425, "dma-buf: add DMA_BUF_SET_NAME")


_LEGACY_INODE_BASE = -(1 << 33)


def synthetic_inode(pid: int, fd: int) -> int:
    """A stand-in key for a captured pre-5.14 fd whose inode nobody recorded (negative, stable)."""
    return -(zlib.crc32(f"{pid}/{fd}".encode()) + 1)


@dataclass(slots=True)
class _ProcScan:
    fds: dict[int, list[int]] = field(default_factory=dict)  # inode -> fds
    maps: dict[int, list[MapEntry]] = field(default_factory=dict)  # inode -> mappings


@dataclass(slots=True)
class _Scan:
    roots: Roots
    live: bool
    fdinfo: dict[int, FdInfo] = field(default_factory=dict)
    procs: dict[int, _ProcScan] = field(default_factory=dict)
    errors: list[ScanError] = field(default_factory=list)
    denied: set[int] = field(default_factory=set)
    dmabuf_dev: int | None = None
    legacy_fds: dict[int, list[int]] = field(default_factory=dict)  # pid -> anon_inode:dmabuf fds
    by_identity: dict[tuple[int, str, str | None, int], int] = field(default_factory=dict)
    by_size_exporter: dict[tuple[int, str], int] = field(default_factory=dict)
    known_inodes: set[int] = field(default_factory=set)  # fdinfo read, or bufinfo entry trusted
    maps_readable: bool = False

    def deny(self, pid: int, source: str, exc: OSError) -> None:
        if pid not in self.denied:
            self.denied.add(pid)
            self.errors.append(ScanError(pid, source, os.strerror(exc.errno or errno.EACCES)))

    # -- fds -------------------------------------------------------------------------------

    def scan_fds(self, pid: int, scan: _ProcScan) -> None:
        fd_dir = f"{self.roots.proc_root}/{pid}/fd"
        if self.live:
            self._live_fds(pid, fd_dir, scan)
            return
        try:
            names = listdir(self.roots.proc_root, fd_dir, live=False)
        except FileNotFoundError:
            return
        except PermissionError as exc:
            self.deny(pid, "fd", exc)
            return
        except OSError:
            return
        for name in names:
            if name.isdigit():
                self._captured_fd(pid, int(name), f"{fd_dir}/{name}", scan)

    def _live_fds(self, pid: int, fd_dir: str, scan: _ProcScan) -> None:
        # One directory fd per process, and fd-relative stat()s: no path walk per fd.
        try:
            dfd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError as exc:
            self.deny(pid, "fd", exc)
            return
        except OSError:
            return  # exited, or a kernel thread's empty table
        try:
            try:
                names = os.listdir(dfd)
            except OSError:
                return
            stat = os.stat
            dev = self.dmabuf_dev
            known = self.known_inodes
            fds = scan.fds
            for name in names:
                try:
                    if dev is None:
                        target = os.readlink(name, dir_fd=dfd)
                        if not target.startswith(_DMABUF_PREFIX):
                            if target == _DMABUF_ANON:
                                self.legacy_fds.setdefault(pid, []).append(int(name))
                            continue
                        st = stat(name, dir_fd=dfd)
                        dev = self.dmabuf_dev = st.st_dev
                    else:
                        st = stat(name, dir_fd=dfd)
                        if st.st_dev != dev:
                            continue
                except OSError:
                    continue  # closed meanwhile
                inode = st.st_ino
                if inode not in known:
                    info = self._read_fdinfo(pid, int(name))
                    if info is None:
                        continue
                    self.fdinfo[inode] = info
                    known.add(inode)
                fds.setdefault(inode, []).append(int(name))
        finally:
            os.close(dfd)

    def _captured_fd(self, pid: int, fd: int, path: str, scan: _ProcScan) -> None:
        try:
            target = os.readlink(path)
        except OSError:
            return
        if not target.startswith(_DMABUF_PREFIX):
            if target == _DMABUF_ANON:
                self.legacy_fds.setdefault(pid, []).append(fd)
            return
        info = self._read_fdinfo(pid, fd)
        if info is None:
            return
        inode = info.inode if info.inode is not None else self._join(pid, fd, info)
        self.fdinfo.setdefault(inode, info)
        scan.fds.setdefault(inode, []).append(fd)

    def index_for_join(self, bufinfo: BufInfo | None, sysfs_buffers: list[SysfsBuffer]) -> None:
        """Before 5.14 fdinfo has no `ino:`; a capture can't stat the link. Index the buffers
        whose (size, exporter, name, count) or (size, exporter) is unique, to join fds on."""
        seen: dict[tuple[int, str, str | None, int], int | None] = {}
        for e in bufinfo.entries if bufinfo else ():
            if e.inode is not None:
                key = (e.size_bytes, e.exp_name, e.name, e.count)
                seen[key] = None if key in seen else e.inode
        self.by_identity = {k: v for k, v in seen.items() if v is not None}
        seen2: dict[tuple[int, str], int | None] = {}
        for sb in sysfs_buffers:
            key2 = (sb.size_bytes, sb.exporter_name)
            seen2[key2] = None if key2 in seen2 else sb.inode
        self.by_size_exporter = {k: v for k, v in seen2.items() if v is not None}

    def _join(self, pid: int, fd: int, info: FdInfo) -> int:
        inode = self.by_identity.get((info.size_bytes, info.exp_name, info.name, info.count))
        if inode is None:
            inode = self.by_size_exporter.get((info.size_bytes, info.exp_name))
        return inode if inode is not None else synthetic_inode(pid, fd)

    def legacy_errors(self) -> None:
        for pid, fds in sorted(self.legacy_fds.items()):
            self.errors.append(ScanError(pid, "fdinfo", (
                f"{len(fds)} dma-buf fd(s) ({', '.join(map(str, sorted(fds)))}) on a kernel before 5.3: "
                "nothing tells which buffer they hold"
            )))

    def _read_fdinfo(self, pid: int, fd: int) -> FdInfo | None:
        path = f"{self.roots.proc_root}/{pid}/fdinfo/{fd}"
        try:
            data = read_bytes(self.roots.proc_root, path, live=self.live, limit=8192)
        except PermissionError as exc:
            self.deny(pid, "fdinfo", exc)
            return None
        except OSError:
            return None
        try:
            return parse_fdinfo(data)
        except FdinfoParseError as exc:
            self.errors.append(ScanError(pid, "fdinfo", f"fd {fd}: {exc}"))
            return None

    # -- maps ------------------------------------------------------------------------------

    def scan_maps(self, pid: int, scan: _ProcScan) -> None:
        path = f"{self.roots.proc_root}/{pid}/maps"
        try:
            data = read_bytes(self.roots.proc_root, path, live=self.live)
        except PermissionError as exc:
            self.deny(pid, "maps", exc)
            return
        except OSError:
            return
        self.maps_readable = True
        for entry in parse_maps(data):
            scan.maps.setdefault(entry.inode, []).append(entry)


def _pids(roots: Roots, live: bool) -> list[int]:
    names = os.listdir(roots.proc_root) if live else listdir(roots.proc_root, roots.proc_root, live=False)
    return sorted(int(n) for n in names if n.isdigit())


def _kernel_release(roots: Roots, live: bool) -> str:
    if live:
        return os.uname().release
    try:
        path = os.path.join(roots.proc_root, "sys", "kernel", "osrelease")
        return read_bytes(roots.proc_root, path, live=False, limit=256).decode("utf-8", "replace").strip()
    except OSError:
        return "unknown"


def _unavailable(exc: OSError, what: str) -> str:
    if isinstance(exc, OutsideRootError):
        return f"unavailable: {exc} (refused: a captured tree may not lead outside itself)"
    if isinstance(exc, PermissionError):
        return f"unavailable: permission denied reading {what} (run as root)"
    if isinstance(exc, FileNotFoundError):
        return f"unavailable: {what} does not exist"
    return f"unavailable: {what}: {os.strerror(exc.errno or 0) or exc}"


def _read_bufinfo(roots: Roots, live: bool, sources: dict[str, str]) -> BufInfo | None:
    path = os.path.join(roots.debugfs_root, "dma_buf", "bufinfo")
    try:
        info = bufinfo_mod.read_bufinfo(roots.debugfs_root, live=live)
    except FileNotFoundError:
        mounted = os.path.isdir(os.path.join(roots.debugfs_root, "dma_buf"))
        sources["bufinfo"] = (
            f"unavailable: {path} does not exist"
            if mounted
            else f"unavailable: debugfs is not mounted at {roots.debugfs_root} (or the kernel has no CONFIG_DEBUG_FS)"
        )
        return None
    except OSError as exc:
        sources["bufinfo"] = _unavailable(exc, path)
        return None
    except ValueError as exc:
        sources["bufinfo"] = f"unavailable: {path}: {exc}"
        return None
    sources["bufinfo"] = "ok"
    return info


def _read_sysfs(roots: Roots, live: bool, sources: dict[str, str]) -> list[SysfsBuffer]:
    path = os.path.join(roots.sys_root, "kernel", "dmabuf", "buffers")
    try:
        found = read_sysfs_buffers(roots.sys_root, live=live)
    except OSError as exc:
        sources["sysfs"] = (
            f"unavailable: {path} does not exist (CONFIG_DMABUF_SYSFS_STATS, deprecated since 5.19)"
            if isinstance(exc, FileNotFoundError)
            else _unavailable(exc, path)
        )
        return []
    sources["sysfs"] = "ok"
    return found


def _read_devices(roots: Roots, live: bool, sources: dict[str, str]) -> tuple[tuple[Heap, ...], Udmabuf]:
    heaps = devices.read_heaps(roots.dev_root, live=live, sys_root=roots.sys_root)
    sources["heaps"] = (
        "ok" if heaps else f"unavailable: no heaps in {roots.dev_root}/dma_heap (CONFIG_DMABUF_HEAPS)"
    )
    udmabuf = devices.read_udmabuf(roots.dev_root, roots.sys_root, live=live)
    sources["udmabuf"] = (
        "ok" if udmabuf.present else f"unavailable: no {udmabuf.dev_path} (CONFIG_UDMABUF)"
    )
    return heaps, udmabuf


def _build_buffers(
    scan: _Scan,
    bufinfo: BufInfo | None,
    sysfs_buffers: Iterable[SysfsBuffer],
    heap_names: frozenset[str],
) -> list[Buffer]:
    by_inode_bufinfo: dict[int, BufInfoEntry] = {}
    if bufinfo is not None:
        by_inode_bufinfo = {
            e.inode if e.inode is not None else _LEGACY_INODE_BASE - i: e for i, e in enumerate(bufinfo.entries)
        }
    by_inode_sysfs = {s.inode: s for s in sysfs_buffers}

    holders: dict[int, list[Holder]] = {}
    refs: dict[int, int] = {}
    map_extent: dict[int, tuple[int, str | None]] = {}
    for pid in sorted(scan.procs):
        pscan = scan.procs[pid]
        pfds, pmaps = pscan.fds, pscan.maps
        for inode in sorted(pfds.keys() | pmaps.keys()):
            fds = pfds.get(inode, ())
            maps = pmaps.get(inode, ())
            holders.setdefault(inode, []).append(
                Holder(pid, tuple(sorted(fds)), len(maps), sum(m.end - m.start for m in maps))
            )
            refs[inode] = refs.get(inode, 0) + len(fds) + len(maps)
            for m in maps:
                extent = m.offset_bytes + m.length_bytes
                if extent > map_extent.get(inode, (0, None))[0]:
                    map_extent[inode] = (extent, m.name)

    classes: dict[str, str] = {}
    fdinfo = scan.fdinfo
    buffers: list[Buffer] = []
    for inode in sorted(holders.keys() | by_inode_bufinfo.keys() | by_inode_sysfs.keys()):
        fdi = fdinfo.get(inode)
        bi = by_inode_bufinfo.get(inode)
        count: int | None
        if fdi is not None:
            size, size_source, exporter, name, count = fdi.size_bytes, "fdinfo", fdi.exp_name, fdi.name, fdi.count
        elif bi is not None:
            size, size_source, exporter, name, count = bi.size_bytes, "bufinfo", bi.exp_name, bi.name, bi.count
        elif (sy := by_inode_sysfs.get(inode)) is not None:
            size, size_source, exporter, name, count = sy.size_bytes, "sysfs", sy.exporter_name, None, None
        else:
            size, name = map_extent.get(inode, (0, None))
            size_source, exporter, count = "maps", "unknown", None
        cls = classes.get(exporter)
        if cls is None:
            cls = classes[exporter] = exporter_class(exporter, heap_names)
        buffers.append(
            Buffer(
                inode,
                size,
                size_source,
                exporter,
                cls,
                name,
                count,
                tuple(holders.get(inode, ())),
                () if bi is None else bi.attachments,
                () if bi is None else bi.fences,
                None if count is None or inode <= _LEGACY_INODE_BASE else max(count - refs.get(inode, 0), 0),
            )
        )
    return buffers


def _build_processes(scan: _Scan, buffers: list[Buffer]) -> list[Process]:
    sharers: dict[int, int] = {b.inode: len(b.holders) for b in buffers}
    size_of: dict[int, int] = {b.inode: b.size_bytes for b in buffers}
    processes: list[Process] = []
    for pid, pscan in scan.procs.items():
        inodes = set(pscan.fds) | set(pscan.maps)
        if not inodes:
            continue
        ident = identify(scan.roots.proc_root, pid, live=scan.live)
        if ident is None:
            continue
        rss = sum(size_of.get(i, 0) for i in inodes)
        pss = sum(size_of.get(i, 0) // max(sharers.get(i, 1), 1) for i in inodes)
        processes.append(
            Process(
                pid=pid,
                ppid=ident.ppid,
                comm=ident.comm,
                cmdline=ident.cmdline,
                uid=ident.uid,
                user=ident.user,
                buffers=len(inodes),
                rss_bytes=rss,
                pss_bytes=pss,
            )
        )
    processes.sort(key=lambda p: (-p.rss_bytes, p.pid))
    return processes


def _totals(buffers: list[Buffer], bufinfo: BufInfo | None) -> Totals:
    user = sum(b.size_bytes for b in buffers if b.holders)
    kernel_only: int | None = None
    # Before 5.3 bufinfo has no ino column: its objects can't be matched to holders.
    if bufinfo is not None and all(e.inode is not None for e in bufinfo.entries):
        kernel_only = sum(b.size_bytes for b in buffers if not b.holders)
    return Totals(
        buffers=len(buffers),
        bytes=sum(b.size_bytes for b in buffers),
        userspace_bytes=user,
        kernel_only_bytes=kernel_only,
    )


def collect(roots: Roots | None = None, *, include_maps: bool = True) -> Snapshot:
    """Scan once. Never raises for vanished processes or denied files; see the module doc."""
    roots = roots or Roots()
    live = roots.live
    sources: dict[str, str] = {}
    scan = _Scan(roots=roots, live=live)
    try:
        pids = _pids(roots, live)
        sources["fdinfo"] = "ok"
    except OSError as exc:
        pids = []
        sources["fdinfo"] = _unavailable(exc, roots.proc_root)
    bufinfo = _read_bufinfo(roots, live, sources)
    sysfs_buffers = _read_sysfs(roots, live, sources)
    if not live:
        scan.index_for_join(bufinfo, sysfs_buffers)
    if bufinfo is not None:
        # bufinfo already gives size, exporter and count: skip fdinfo for those buffers. A name is
        # printed raw there (tabs, newlines), so named buffers still get their exact fdinfo.
        scan.known_inodes.update(e.inode for e in bufinfo.entries if e.inode is not None and e.name is None)
    for pid in pids:
        pscan = _ProcScan()
        scan.scan_fds(pid, pscan)
        if include_maps:
            scan.scan_maps(pid, pscan)
        if pscan.fds or pscan.maps:
            scan.procs[pid] = pscan
    if include_maps:
        sources["maps"] = "ok" if scan.maps_readable or not pids else "unavailable: no maps file was readable"
    else:
        sources["maps"] = "unavailable: not requested"

    scan.legacy_errors()
    heaps, udmabuf = _read_devices(roots, live, sources)
    heap_names = frozenset(h.name for h in heaps)

    buffers = _build_buffers(scan, bufinfo, sysfs_buffers, heap_names)
    processes = _build_processes(scan, buffers)
    return Snapshot(
        kernel=_kernel_release(roots, live),
        taken_at=time.time(),
        sources=sources,
        buffers=tuple(buffers),
        processes=tuple(processes),
        totals=_totals(buffers, bufinfo),
        errors=tuple(scan.errors),
        heaps=heaps,
        udmabuf=udmabuf,
        denied_pids=tuple(sorted(scan.denied)),
    )
