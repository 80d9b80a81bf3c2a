"""One full scan: every dma-buf, who holds it by fd or mapping, and what debugfs adds.

Policy for races and permissions (as psutil does it), one function deciding (reader.gap_kind):
a process or fd that vanishes mid-scan is skipped silently; a process whose fd table or maps we
may not read is counted in `denied_pids` and gets one `ScanError` (kind "denied"); a captured
tree's link that leads outside it is refused, and gets one `ScanError` (kind "outside") per link;
any other error gets one per process and source (kind "broken"); a source that cannot be read at
all is marked `"unavailable: why"` in `sources`.

What a scan cannot tell, it says: dma-buf fds it cannot tie to a buffer (before 5.3 every one;
in a capture of a kernel before 5.14 those whose fdinfo matches no listed buffer uniquely) are
`Process.unjoined_fds` with a ScanError of kind "unjoined", and every buffer they might hold has
`holders_known` False. Without maps (`include_maps=False`), a buffer's mappings are unknown: its
`kernel_refs` is None unless its fds account for its whole count, and so is `holders_known`.
`Totals.kernel_only_bytes` is None whenever a buffer that no process was seen holding may still
be held by one (a process that could not be read may hold it).

BPF (scan/bpfscan.py, live /proc only): the dma-buf iterator lists every buffer as bufinfo does,
fences aside; debugfs bufinfo is then read only when it would add something (a buffer with fences,
or with more attached devices than the iterator names), and otherwise only opened, to say whether
it is there. The task iterators give every process's dma-buf fds and mappings without walking
/proc (root); identity is then read for the processes found only. Where BPF can't, /proc is walked.
"""

from __future__ import annotations

import _thread
import gc
import os
import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, compress, repeat
from operator import floordiv, is_, itemgetter, not_, sub

from dmabuf_inspect.exporters import exporter_class, is_device_memory
from dmabuf_inspect.kernel import bufinfo as bufinfo_mod
from dmabuf_inspect.kernel import devices, fdwalk
from dmabuf_inspect.kernel import sysfs as sysfs_mod
from dmabuf_inspect.kernel.cgroup import read_mem_accounting, read_proc_cgroup
from dmabuf_inspect.kernel.fdinfo import FdinfoParseError, parse_fdinfo
from dmabuf_inspect.kernel.maps import dmabuf_lines, parse_lines
from dmabuf_inspect.kernel.procinfo import ProcIdentity, identify
from dmabuf_inspect.kernel.reader import BROKEN, DENIED, GONE, OUTSIDE, OutsideRootError, Roots, gap_kind, gap_text
from dmabuf_inspect.model import (
    UNJOINED,
    UNKNOWN_DEVICE,
    Buffer,
    BufInfoTable,
    DeviceMemory,
    FdInfo,
    Fence,
    Heap,
    Holder,
    MapEntry,
    Process,
    ScanError,
    Snapshot,
    SysfsBuffer,
    Totals,
    Udmabuf,
    VfioDeviceFd,
)
from dmabuf_inspect.scan import bpfscan

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar, cast

    from dmabuf_inspect.kernel.bpf import BpfBuffer, Holders  # imported only where a scan uses BPF
    from dmabuf_inspect.kernel.bpf.records import TaskInfo
    from dmabuf_inspect.kernel.reader import Tree

    _T = TypeVar("_T")
else:

    def cast(_type: object, value: object) -> object:
        return value


_c_hold: (
    Callable[
        [
            dict[int, tuple[Holder, ...]],
            dict[int, int],
            int,
            dict[int, tuple[int, ...]],
            type[Holder],
            dict[int, list[MapEntry]] | None,
        ],
        None,
    ]
    | None
)
_c_held_sums: Callable[[list[Buffer], list[AbstractSet[int]]], list[tuple[int, int]] | None] | None
_c_rows: Callable[[type[Buffer], int, tuple[Iterable[object], ...]], list[Buffer]] | None
try:
    from dmabuf_inspect.kernel import _fdwalk

    _c_hold, _c_held_sums, _c_rows = _fdwalk.hold, _fdwalk.held_sums, _fdwalk.rows
except (ImportError, AttributeError):  # built only where a C compiler was at install time
    _c_hold = _c_held_sums = _c_rows = None

_DMABUF_PREFIX = fdwalk.DMABUF_PREFIX
_DMABUF_ANON = fdwalk.DMABUF_ANON


_LEGACY_INODE_BASE = -(1 << 33)
_NO_EXTENT = (0, None)


def synthetic_inode(pid: int, fd: int) -> int:
    """A stand-in key for a captured pre-5.14 fd whose inode nobody recorded (negative, stable)."""
    import zlib  # only for captures of kernels before 5.14

    return -(zlib.crc32(f"{pid}/{fd}".encode()) + 1)


class _ProcScan:
    __slots__ = ("fds", "maps")

    def __init__(self, fds: dict[int, tuple[int, ...]] | None = None) -> None:
        self.fds: dict[int, tuple[int, ...]] = {} if fds is None else fds  # inode -> fds, ascending
        self.maps: dict[int, list[MapEntry]] = {}  # inode -> mappings


class _Holdings:
    """Who holds each inode, filled one process at a time in ascending pid order."""

    __slots__ = ("_extent", "_maps", "held", "refs")

    def __init__(self) -> None:
        self.held: dict[int, tuple[Holder, ...]] = {}
        self.refs: dict[int, int] = {}  # fds + mappings, all processes
        self._maps: list[dict[int, list[MapEntry]]] = []  # each process's mappings by inode
        self._extent: dict[int, tuple[int, str | None]] | None = None

    def add(self, pid: int, pscan: _ProcScan) -> None:
        if _c_hold is None:
            self._add(pid, pscan)
            return
        if pscan.maps:
            self._maps.append(pscan.maps)
        _c_hold(self.held, self.refs, pid, pscan.fds, Holder, pscan.maps or None)

    def _add(self, pid: int, pscan: _ProcScan) -> None:
        """add(), with no C."""
        fds = pscan.fds
        # The common holder, fds and no mapping, made in C: one tuple per (pid, inode).
        holders = map(tuple.__new__, repeat(Holder), zip(repeat(pid), fds.values(), repeat(0), repeat(0)))
        held: dict[int, tuple[Holder, ...]] = dict(zip(fds, zip(holders), strict=True))
        refs = dict(zip(fds, map(len, fds.values()), strict=True))
        if pscan.maps:
            self._add_mapped(pid, pscan, held, refs)
        self._merge(held, refs)

    def _merge(self, held: dict[int, tuple[Holder, ...]], refs: dict[int, int]) -> None:
        """One process's holders (by inode) after those of the processes before it."""
        for inode in held.keys() & self.held.keys():
            held[inode] = self.held[inode] + held[inode]
            refs[inode] += self.refs[inode]
        self.held.update(held)
        self.refs.update(refs)

    def _add_mapped(
        self, pid: int, pscan: _ProcScan, held: dict[int, tuple[Holder, ...]], refs: dict[int, int]
    ) -> None:
        fds, new = pscan.fds, tuple.__new__
        self._maps.append(pscan.maps)
        for inode, entries in pscan.maps.items():
            f = fds.get(inode, ())
            if len(entries) == 1:  # most mapped buffers: one mapping
                m = entries[0]
                held[inode] = (new(Holder, (pid, f, 1, m.end - m.start)),)
                refs[inode] = len(f) + 1
                continue
            mapped = sum(m.end - m.start for m in entries)
            held[inode] = (new(Holder, (pid, f, len(entries), mapped)),)
            refs[inode] = len(f) + len(entries)

    def map_extent(self, inode: int) -> tuple[int, str | None]:
        """(the farthest byte any process mapped of `inode`, its mapping's name); (0, None) when none
        did. The size of a buffer that only mappings show: worked out for all on the first ask."""
        if self._extent is None:
            extent: dict[int, tuple[int, str | None]] = {}
            for maps in self._maps:
                for i, entries in maps.items():
                    for m in entries:
                        end = m.offset_bytes + m.end - m.start
                        if end > extent.get(i, _NO_EXTENT)[0]:
                            extent[i] = (end, m.name)
            self._extent = extent
        return self._extent.get(inode, _NO_EXTENT)


class _Scan:
    __slots__ = (
        "by_identity",
        "by_size_exporter",
        "denied",
        "dmabuf_dev",
        "errors",
        "fdinfo",
        "idents",
        "known_inodes",
        "legacy_fds",
        "listed",
        "live",
        "map_lines",
        "maps_readable",
        "procs",
        "reported",
        "roots",
        "tasks",
        "unjoined",
        "unjoined_keys",
    )

    def __init__(self, roots: Roots, live: bool) -> None:
        self.roots = roots
        self.live = live
        self.fdinfo: dict[int, FdInfo] = {}
        self.procs: dict[int, _ProcScan] = {}
        self.errors: list[ScanError] = []
        self.denied: set[int] = set()
        self.reported: set[tuple[str, object]] = set()  # (kind, what) recorded once
        self.dmabuf_dev: int | None = None
        self.legacy_fds: dict[int, list[int]] = {}  # pid -> anon_inode:dmabuf fds
        self.unjoined: dict[int, list[int]] = {}  # pid -> captured fds joined to nothing
        self.unjoined_keys: set[tuple[int, str]] = set()  # their (size, exporter)
        self.listed = False  # bufinfo or sysfs lists the buffers, so an fd must join one of them
        self.by_identity: dict[tuple[int, str, str | None, int], int] = {}
        self.by_size_exporter: dict[tuple[int, str], int] = {}
        self.known_inodes: set[int] = set()  # fdinfo read, or bufinfo entry trusted
        self.map_lines: list[tuple[int, list[bytes]]] = []  # pid -> its `/dmabuf:` lines
        self.maps_readable = False
        self.tasks: dict[int, TaskInfo] = {}  # pid -> who it is, where BPF's iter/task said
        self.idents: dict[int, ProcIdentity | None] = {}  # pid -> who it is, read ahead

    def gap(self, pid: int | None, source: str, exc: OSError) -> None:
        """Record what a failed read means (reader.gap_kind): gone is silent; a denied process,
        an outside link, and a broken (process, source) get one ScanError each."""
        kind = gap_kind(exc)
        if kind == GONE:
            return
        key = (kind, pid if kind == DENIED else cast(OutsideRootError, exc).link if kind == OUTSIDE else (pid, source))
        if key in self.reported:
            return
        self.reported.add(key)
        if kind == DENIED and pid is not None:
            self.denied.add(pid)
        self.errors.append(ScanError(pid, source, gap_text(exc), kind))

    def source_gap(self, source: str, exc: OSError, what: str) -> str:
        """The `sources` value for a source that could not be read; an outside link is recorded too."""
        kind = gap_kind(exc)
        if kind == OUTSIDE:
            self.gap(None, source, exc)
            return f"unavailable: {exc} (refused: a captured tree may not lead outside itself)"
        if kind == DENIED:
            return f"unavailable: permission denied reading {what} (run as root)"
        if kind == GONE:
            return f"unavailable: {what} does not exist"
        return f"unavailable: {what}: {gap_text(exc)}"

    # -- fds -------------------------------------------------------------------------------

    def scan_fds(self, pid: int, scan: _ProcScan) -> None:
        if self.live:
            scan.fds = self._live_fds(pid)
            return
        try:
            names = self.roots.proc.listdir(f"{pid}/fd")
        except OSError as exc:
            self.gap(pid, "fd", exc)
            return
        fds: dict[int, list[int]] = {}
        for fd in sorted(int(name) for name in names if name.isdigit()):
            self._captured_fd(pid, fd, fds)
        scan.fds = {inode: tuple(f) for inode, f in fds.items()}

    def _live_fds(self, pid: int) -> dict[int, tuple[int, ...]]:
        # One directory fd per process, and fd-relative stat()s: no path walk per fd.
        try:
            dfd = self.roots.proc.open_dir(f"{pid}/fd")
        except OSError as exc:
            self.gap(pid, "fd", exc)  # exited (gone), or another user's (denied)
            return {}
        try:
            dev = self.dmabuf_dev
            if dev is None:
                dev, legacy = fdwalk.dmabuf_dev(dfd)
                if legacy:
                    self.legacy_fds.setdefault(pid, []).extend(legacy)
                if dev is None:
                    return {}
                self.dmabuf_dev = dev
            fds = fdwalk.fds_by_inode(dfd, dev)
        except OSError as exc:
            self.gap(pid, "fd", exc)
            return {}
        finally:
            os.close(dfd)
        return self._read_new_fdinfo(pid, fds)

    def _read_new_fdinfo(self, pid: int, fds: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        """fdinfo for the buffers neither bufinfo nor an earlier process described."""
        for inode in fds.keys() - self.known_inodes:
            info = next(filter(None, map(self._read_fdinfo, repeat(pid), fds[inode])), None)
            if info is None:
                del fds[inode]  # closed meanwhile, or denied
            else:
                self.fdinfo[inode] = info
                self.known_inodes.add(inode)
        return fds

    def take_holders(self, holders: Holders) -> None:
        """The task iterators' fds and mappings, in place of the /proc walk (their fdinfo is read
        by holders_fdinfo(), once the listings say which buffers need it)."""
        procs = self.procs
        self.tasks = holders.tasks or {}
        for pid, fds in holders.fds.items():
            if fds:
                procs[pid] = _ProcScan(fds)
        for pid, entries in holders.maps.items():
            maps: dict[int, list[MapEntry]] = {}
            for entry in entries:
                maps.setdefault(entry.inode, []).append(entry)
            procs.setdefault(pid, _ProcScan()).maps = maps

    def holders_fdinfo(self) -> bool:
        """fdinfo of the held buffers no listing described, read as the /proc walk reads it; True
        when an fd was dropped (closed meanwhile, or denied)."""
        known, dropped = self.known_inodes, False
        for pid, pscan in self.procs.items():
            fds = pscan.fds
            if fds.keys() - known:
                held = len(fds)
                self._read_new_fdinfo(pid, fds)
                dropped = dropped or len(fds) < held
        return dropped

    def identify_holders(self) -> None:
        """Who each process that holds a buffer is, read ahead (while bufinfo is being read)."""
        proc, tasks = self.roots.proc, self.tasks
        self.idents.update((pid, identify(proc, pid, tasks.get(pid))) for pid in self.procs)

    def _captured_fd(self, pid: int, fd: int, fds: dict[int, list[int]]) -> None:
        try:
            target = self.roots.proc.readlink(f"{pid}/fd/{fd}")
        except OSError as exc:
            self.gap(pid, "fd", exc)
            return
        if not target.startswith(_DMABUF_PREFIX):
            if target == _DMABUF_ANON:
                self.legacy_fds.setdefault(pid, []).append(fd)
            return
        info = self._read_fdinfo(pid, fd)
        if info is None:
            return
        inode = info.inode if info.inode is not None else self._join(pid, fd, info)
        if inode is None:
            return
        self.fdinfo.setdefault(inode, info)
        fds.setdefault(inode, []).append(fd)

    def index_for_join(self, table: BufInfoTable | None, sysfs_buffers: list[SysfsBuffer]) -> None:
        """Before 5.14 fdinfo has no `ino:`; a capture can't stat the link. Index the buffers
        whose (size, exporter, name, count) or (size, exporter) is unique, to join fds on."""
        self.listed = table is not None or bool(sysfs_buffers)
        seen: dict[tuple[int, str, str | None, int], int | None] = {}
        if table is not None:
            for size, exp, name, count, inode in zip(
                table.size_bytes, table.exp_name, table.name, table.count, table.inode, strict=True
            ):
                if inode is not None:
                    key = (size, exp, name, count)
                    seen[key] = None if key in seen else inode
        self.by_identity = {k: v for k, v in seen.items() if v is not None}
        seen2: dict[tuple[int, str], int | None] = {}
        for sb in sysfs_buffers:
            key2 = (sb.size_bytes, sb.exporter_name)
            seen2[key2] = None if key2 in seen2 else sb.inode
        self.by_size_exporter = {k: v for k, v in seen2.items() if v is not None}

    def _join(self, pid: int, fd: int, info: FdInfo) -> int | None:
        """The listed buffer this fd holds; where none matches uniquely, None (the fd is unjoined)
        when buffers are listed, else a synthetic inode: the fd stands for a buffer of its own."""
        inode = self.by_identity.get((info.size_bytes, info.exp_name, info.name, info.count))
        if inode is None:
            inode = self.by_size_exporter.get((info.size_bytes, info.exp_name))
        if inode is not None:
            return inode
        if not self.listed:
            return synthetic_inode(pid, fd)
        self.unjoined.setdefault(pid, []).append(fd)
        self.unjoined_keys.add((info.size_bytes, info.exp_name))
        return None

    def unjoined_errors(self) -> None:
        for pid, fds in sorted(self.legacy_fds.items()):
            self.errors.append(
                ScanError(
                    pid,
                    "fdinfo",
                    (
                        f"{len(fds)} dma-buf fd(s) ({', '.join(map(str, sorted(fds)))}) on a kernel before 5.3: "
                        "nothing tells which buffer they hold"
                    ),
                    UNJOINED,
                )
            )
        for pid, fds in sorted(self.unjoined.items()):
            self.errors.append(
                ScanError(
                    pid,
                    "fdinfo",
                    (
                        f"{len(fds)} dma-buf fd(s) ({', '.join(map(str, sorted(fds)))}) with no inode in fdinfo "
                        "(a kernel before 5.14) match no one listed buffer: which one they hold is unknown"
                    ),
                    UNJOINED,
                )
            )

    def unjoined_fds(self, pid: int) -> tuple[int, ...]:
        return tuple(sorted(self.legacy_fds.get(pid, ()))) + tuple(sorted(self.unjoined.get(pid, ())))

    def _read_fdinfo(self, pid: int, fd: int) -> FdInfo | None:
        try:
            data = self.roots.proc.read_once(f"{pid}/fdinfo/{fd}", 8192)
        except OSError as exc:
            self.gap(pid, "fdinfo", exc)
            return None
        try:
            return parse_fdinfo(data)
        except FdinfoParseError as exc:
            self.errors.append(ScanError(pid, "fdinfo", f"fd {fd}: {exc}", BROKEN))
            return None

    # -- maps ------------------------------------------------------------------------------

    def scan_maps(self, pid: int) -> None:
        """Keep the process's `/dmabuf:` lines; map_entries() parses every process's at once."""
        try:
            data = self.roots.proc.read(f"{pid}/maps")
        except OSError as exc:
            self.gap(pid, "maps", exc)
            return
        self.maps_readable = True
        lines = dmabuf_lines(data)
        if lines:
            self.map_lines.append((pid, lines))

    def map_entries(self) -> None:
        """Parse the kept lines in one call, and hand each process its mappings by inode."""
        entries = parse_lines(list(chain.from_iterable(lines for _, lines in self.map_lines)))
        at = 0
        for pid, lines in self.map_lines:
            mine = entries[at : at + len(lines)]
            at += len(lines)
            maps: dict[int, list[MapEntry]] = {}
            for entry in mine:
                if entry is not None:
                    maps.setdefault(entry.inode, []).append(entry)
            if maps:
                self.procs.setdefault(pid, _ProcScan()).maps = maps


def _hold(scan: _Scan) -> _Holdings:
    holdings = _Holdings()
    for pid in sorted(scan.procs):
        holdings.add(pid, scan.procs[pid])
    return holdings


def _kernel_release(scan: _Scan) -> str:
    if scan.live:
        return os.uname().release
    try:
        return scan.roots.proc.read("sys/kernel/osrelease", 256).decode("utf-8", "replace").strip()
    except OSError as exc:
        if gap_kind(exc) == OUTSIDE:
            scan.gap(None, "kernel", exc)
        return "unknown"


def _bufinfo_missing(scan: _Scan) -> str:
    debugfs = scan.roots.debugfs
    if debugfs.isdir("dma_buf"):
        return f"unavailable: {debugfs.path(bufinfo_mod.BUFINFO)} does not exist"
    return f"unavailable: debugfs is not mounted at {debugfs.root} (or the kernel has no CONFIG_DEBUG_FS)"


def _bufinfo_there(scan: _Scan, sources: dict[str, str]) -> None:
    """sources["bufinfo"] for a bufinfo that need not be read (the dma-buf iterator gave all it
    would): opened, not read (a read walks every buffer under the kernel's list lock)."""
    path = scan.roots.debugfs.path(bufinfo_mod.BUFINFO)
    try:
        scan.roots.debugfs.check_open(bufinfo_mod.BUFINFO)
    except FileNotFoundError:
        sources["bufinfo"] = _bufinfo_missing(scan)
    except OSError as exc:
        sources["bufinfo"] = scan.source_gap("bufinfo", exc, path)
    else:
        sources["bufinfo"] = "ok"


def _with_bufinfo(table: BufInfoTable, info: BufInfoTable) -> BufInfoTable:
    """The dma-buf iterator's listing (exact names and counts) with bufinfo's fences and
    attached devices, by inode (a buffer made between the two reads has none)."""
    row_of = dict(zip(info.inode, range(len(info.inode)), strict=True))
    rows = list(map(row_of.get, table.inode))
    fences = tuple(() if r is None else info.fences[r] for r in rows)
    attachments = tuple(a if r is None else info.attachments[r] for r, a in zip(rows, table.attachments, strict=True))
    return table._replace(fences=fences, attachments=attachments)


class _BufinfoRead:
    """debugfs bufinfo, read in a thread of its own on a live machine while the scan reads the task
    iterators: the kernel writes the whole file out under its list lock, again each time its
    buffer doubles (seq_file single_open: some 9 times at 10 000 buffers), and that wait needs
    no Python. result() gives the bytes or raises what the read raised."""

    def __init__(self, debugfs: Tree, *, background: bool) -> None:
        self._debugfs = debugfs
        self._data = b""
        self._error: BaseException | None = None
        self._done = None
        if background:
            done = _thread.allocate_lock()
            done.acquire()
            try:
                _thread.start_new_thread(self._read, (done,))
            except RuntimeError:  # no thread to be had (RLIMIT_NPROC): result() reads it then
                return
            self._done = done

    def _read(self, done: _thread.LockType) -> None:
        try:
            self._data = self._debugfs.read(bufinfo_mod.BUFINFO)
        except BaseException as exc:  # handed to the scan's thread by result()
            self._error = exc
        finally:
            done.release()

    def result(self) -> bytes:
        if self._done is None:
            data: bytes = self._debugfs.read(bufinfo_mod.BUFINFO)
            return data
        with self._done:
            pass
        if self._error is not None:
            raise self._error
        return self._data


def _read_bufinfo(scan: _Scan, sources: dict[str, str], pending: _BufinfoRead) -> BufInfoTable | None:
    debugfs = scan.roots.debugfs
    path = debugfs.path(bufinfo_mod.BUFINFO)
    try:
        info = bufinfo_mod.parse_bufinfo_table(pending.result())
    except FileNotFoundError:
        sources["bufinfo"] = _bufinfo_missing(scan)
        return None
    except OSError as exc:
        sources["bufinfo"] = scan.source_gap("bufinfo", exc, path)
        return None
    except ValueError as exc:
        sources["bufinfo"] = f"unavailable: {path}: {exc}"
        return None
    sources["bufinfo"] = "ok"
    return info


def _read_sysfs(scan: _Scan, sources: dict[str, str]) -> list[SysfsBuffer]:
    path = scan.roots.sys.path(sysfs_mod.BUFFERS_DIR)
    try:
        found = sysfs_mod.read_sysfs_buffers(scan.roots.sys)
    except FileNotFoundError:
        sources["sysfs"] = f"unavailable: {path} does not exist (CONFIG_DMABUF_SYSFS_STATS, deprecated since 5.19)"
        return []
    except OSError as exc:
        sources["sysfs"] = scan.source_gap("sysfs", exc, path)
        return []
    sources["sysfs"] = "ok"
    return found


def _read_devices(roots: Roots, sources: dict[str, str]) -> tuple[tuple[Heap, ...], Udmabuf]:
    heaps = devices.read_heaps(roots)
    sources["heaps"] = "ok" if heaps else f"unavailable: no heaps in {roots.dev_root}/dma_heap (CONFIG_DMABUF_HEAPS)"
    udmabuf = devices.read_udmabuf(roots)
    sources["udmabuf"] = "ok" if udmabuf.present else f"unavailable: no {udmabuf.dev_path} (CONFIG_UDMABUF)"
    return heaps, udmabuf


def _pick(column: tuple[_T, ...], rows: list[int] | None) -> Sequence[_T]:
    return column if rows is None else [column[i] for i in rows]


class _Buffers:
    """The buffers of one scan, by inode; the bulk (listed by bufinfo, no fdinfo read) is made
    column by column in C, the rest one by one."""

    def __init__(
        self,
        scan: _Scan,
        holdings: _Holdings,
        table: BufInfoTable | None,
        sysfs_buffers: Sequence[SysfsBuffer],
        heap_names: frozenset[str],
        *,
        maps_read: bool,
        table_source: str = "bufinfo",
        pinned: Sequence[BpfBuffer] = (),
    ) -> None:
        self.scan, self.holdings, self.table, self.heap_names = scan, holdings, table, heap_names
        self.maps_read = maps_read
        self.table_source = table_source  # bufinfo, or bpf: our dma-buf iterator's listing
        self.sysfs = {s.inode: s for s in sysfs_buffers}
        self.pinned = {b.inode: b for b in pinned}  # a pinned iterator's listing: no counts
        # a process that could not be read may hold any buffer no other was seen holding
        self.unseen_holders = bool(scan.denied)
        self.classes: dict[str, str] = {}

    def exporter_class(self, exporter: str) -> str:
        cls = self.classes.get(exporter)
        if cls is None:
            cls = self.classes[exporter] = exporter_class(exporter, self.heap_names)
        return cls

    def build(self) -> list[Buffer]:
        table, fdinfo = self.table, self.scan.fdinfo
        bulk: list[Buffer] = []
        in_bulk: set[int | None] = set()
        by_inode: dict[int, int] = {}  # bufinfo row of an inode the bulk leaves to _one()
        if table is not None and None in table.inode:  # before 5.3: no ino column, nothing to join on
            by_inode = {_LEGACY_INODE_BASE - i: i for i in range(len(table.inode))}
        elif table is not None and table.inode:
            listed = set(table.inode)
            named = fdinfo.keys() & listed  # their fdinfo was read: it has their exact name
            rows = None
            if named:
                rows = [i for i, inode in enumerate(table.inode) if inode not in named]
                by_inode = {inode: i for i, inode in enumerate(table.inode) if inode in named}
            bulk = self._bulk(table, rows)
            in_bulk = listed - named if named else listed
        # the held keys checked against the bulk, not copied into a set of their own first
        rest = self.holdings.held.keys() - in_bulk
        rest.update(fdinfo.keys() - in_bulk, self.sysfs.keys() - in_bulk, by_inode.keys(), self.pinned.keys() - in_bulk)
        bulk.extend(self._one(inode, by_inode.get(inode)) for inode in rest)
        bulk.sort()  # by inode: the first field, unique
        return bulk

    def _bulk(self, table: BufInfoTable, rows: list[int] | None) -> list[Buffer]:
        """The buffers of these bufinfo rows (None: all), sized and named by bufinfo."""
        inodes = cast(Sequence[int], _pick(table.inode, rows))  # no None: the caller checked
        counts, exporters = _pick(table.count, rows), _pick(table.exp_name, rows)
        sizes = _pick(table.size_bytes, rows)
        classes = {e: self.exporter_class(e) for e in set(exporters)}
        held, refs = self.holdings.held, self.holdings.refs
        n = len(inodes)
        refs_left = list(map(sub, counts, map(refs.get, inodes, repeat(0))))
        if refs_left and min(refs_left) < 0:  # a count read before a process took another ref
            refs_left = [max(k, 0) for k in refs_left]
        kernel_refs: Sequence[int | None] = refs_left
        known: Iterable[bool] = repeat(True, n)
        if not self.maps_read:  # what is left may be mappings: known only when nothing is
            kernel_refs = [0 if k == 0 else None for k in refs_left]
            known = [k == 0 for k in refs_left]
        if self.scan.unjoined_keys:  # an fd joined to nothing may hold any buffer of its size and exporter
            maybe = [key in self.scan.unjoined_keys for key in zip(sizes, exporters, strict=True)]
            kernel_refs = [None if m else k for k, m in zip(kernel_refs, maybe, strict=True)]
            known = [k and not m for k, m in zip(known, maybe, strict=True)]
        if self.unseen_holders:
            known = [k and inode in held for k, inode in zip(known, inodes, strict=True)]
        columns = (
            inodes,
            sizes,
            repeat(self.table_source, n),
            exporters,
            map(classes.__getitem__, exporters),
            _pick(table.name, rows),
            counts,
            map(held.get, inodes, repeat(())),
            _pick(table.attachments, rows),
            _pick(table.fences, rows),
            kernel_refs,
            known,
        )
        if _c_rows is not None:
            return _c_rows(Buffer, n, columns)
        return list(map(tuple.__new__, repeat(Buffer), zip(*columns, strict=True)))

    def _one(self, inode: int, row: int | None) -> Buffer:
        table = self.table
        fdi = self.scan.fdinfo.get(inode)
        count: int | None
        if fdi is not None:
            size, size_source, exporter, name, count = fdi.size_bytes, "fdinfo", fdi.exp_name, fdi.name, fdi.count
        elif row is not None and table is not None:
            size, size_source = table.size_bytes[row], self.table_source
            exporter, name, count = table.exp_name[row], table.name[row], table.count[row]
        elif (pb := self.pinned.get(inode)) is not None:
            size, size_source, exporter, name, count = pb.size_bytes, "bpf", pb.exp_name, pb.name, None
        elif (sy := self.sysfs.get(inode)) is not None:
            size, size_source, exporter, name, count = sy.size_bytes, "sysfs", sy.exporter_name, None, None
        else:
            size, name = self.holdings.map_extent(inode)
            size_source, exporter, count = "maps", "unknown", None
        attachments: tuple[str, ...] = ()
        fences: tuple[Fence, ...] = ()
        if row is not None and table is not None:
            attachments, fences = table.attachments[row], table.fences[row]
        kernel_refs, known = self._kernel_refs(inode, count)
        if (size, exporter) in self.scan.unjoined_keys:
            kernel_refs, known = None, False
        if self.unseen_holders and inode not in self.holdings.held:
            known = False
        return Buffer(
            inode,
            size,
            size_source,
            exporter,
            self.exporter_class(exporter),
            name,
            count,
            self.holdings.held.get(inode, ()),
            attachments,
            fences,
            kernel_refs,
            known,
        )

    def _kernel_refs(self, inode: int, count: int | None) -> tuple[int | None, bool]:
        """(kernel_refs, holders_known) of a buffer made one by one."""
        if inode < 0:  # a bufinfo row before 5.3, or an fd of a capture joined to no listed buffer
            return None, False
        if count is None:
            return None, self.maps_read
        left = max(count - self.holdings.refs.get(inode, 0), 0)
        if not self.maps_read:
            return (0, True) if left == 0 else (None, False)
        return left, True


def _device_buffers(buffers: list[Buffer]) -> list[Buffer]:
    """The buffers that are device memory (exporters.is_device_memory), never RAM."""
    exporters = {e for e in set(map(itemgetter(3), buffers)) if is_device_memory(e)}
    return [b for b in buffers if b.exporter in exporters] if exporters else []


def _build_processes(scan: _Scan, buffers: list[Buffer], device: list[Buffer], *, cgroups: bool) -> list[Process]:
    device_inodes = {b.inode for b in device if b.holders}
    no_scan = _ProcScan()
    unjoined = scan.legacy_fds.keys() | scan.unjoined.keys()
    found: list[tuple[int, ProcIdentity]] = []
    helds: list[AbstractSet[int]] = []
    for pid in scan.procs.keys() | unjoined if unjoined else scan.procs:
        pscan = scan.procs.get(pid, no_scan)
        held = pscan.fds.keys() | pscan.maps.keys() if pscan.maps else pscan.fds.keys()
        if not held and pid not in unjoined:
            continue
        ident = scan.idents[pid] if pid in scan.idents else identify(scan.roots.proc, pid, scan.tasks.get(pid))
        if ident is not None:
            found.append((pid, ident))
            helds.append(held)
    sums = _held_bytes(buffers, helds)
    on_device = _held_bytes(buffers, [h & device_inodes for h in helds]) if device_inodes else [(0, 0)] * len(helds)
    processes = [
        Process(
            pid=pid,
            ppid=ident.ppid,
            comm=ident.comm,
            cmdline=ident.cmdline,
            uid=ident.uid,
            user=ident.user,
            buffers=len(held),
            rss_bytes=rss,
            pss_bytes=pss,
            start_ticks=ident.start_ticks,
            unjoined_fds=scan.unjoined_fds(pid) if pid in unjoined else (),
            device_rss_bytes=device_rss,
            device_pss_bytes=device_pss,
            cgroup=_cgroup(scan, pid) if cgroups else None,
        )
        for (pid, ident), held, (rss, pss), (device_rss, device_pss) in zip(found, helds, sums, on_device, strict=True)
    ]
    processes.sort(key=lambda p: (-p.rss_bytes, p.pid))
    return processes


def _held_bytes(buffers: list[Buffer], helds: list[AbstractSet[int]]) -> list[tuple[int, int]]:
    """(Rss, Pss) of each collection of held inodes: the sizes of those buffers, and their shares
    (a buffer's size divided among its holders). `buffers` sorted by inode."""
    if _c_held_sums is not None:
        sums = _c_held_sums(buffers, helds)
        if sums is not None:
            return sums
    held_buffers = list(compress(buffers, map(itemgetter(7), buffers)))  # a process holds them
    inodes = list(map(itemgetter(0), held_buffers))
    sizes = list(map(itemgetter(1), held_buffers))
    size_of = dict(zip(inodes, sizes, strict=True))
    share_of = dict(zip(inodes, map(floordiv, sizes, map(len, map(itemgetter(7), held_buffers))), strict=True))
    return [(sum(map(size_of.__getitem__, held)), sum(map(share_of.__getitem__, held))) for held in helds]


def _totals(buffers: list[Buffer], device: list[Buffer], *, listed: bool, all_seen: bool) -> Totals:
    """`listed`: every buffer the kernel has was listed (bufinfo with inodes, or BPF), held or not.
    `all_seen`: maps were read, every process could be read and every dma-buf fd was tied to its
    buffer, so each buffer's holders are known (holders_known), and need not be looked at one by one."""
    sizes = list(map(itemgetter(1), buffers))
    total = sum(sizes)
    holders = list(map(itemgetter(7), buffers))
    user = sum(compress(sizes, holders))
    # Before 5.3 bufinfo has no ino column: its objects can't be matched to holders (not `listed`).
    # Elsewhere, a buffer no process was seen holding may still be held by one (holders_known False).
    seen = all_seen or all(compress(map(itemgetter(11), buffers), map(not_, holders)))
    kernel_only = total - user if listed and seen else None
    return Totals(
        buffers=len(buffers),
        bytes=total,
        userspace_bytes=user,
        kernel_only_bytes=kernel_only,
        device_buffers=len(device),
        device_bytes=sum(b.size_bytes for b in device),
    )


def _device_memory(roots: Roots, device: list[Buffer]) -> tuple[DeviceMemory, ...]:
    """Which device each device-memory buffer lives in, as far as the kernel tells (see
    model.DeviceMemory): the VFIO device fds of its holders, read only for those processes."""
    from dmabuf_inspect.kernel import vfio as vfio_mod  # only where device memory is held

    fds_of: dict[int, tuple[VfioDeviceFd, ...] | None] = {}
    found = []
    for b in device:
        for h in b.holders:
            if h.pid not in fds_of:
                fds_of[h.pid] = vfio_mod.read_device_fds(roots.proc, h.pid)
        found.append(_attribute(b, [fds_of[h.pid] for h in b.holders]))
    return tuple(found)


def _attribute(b: Buffer, held: list[tuple[VfioDeviceFd, ...] | None]) -> DeviceMemory:
    fds = tuple(f for fs in held if fs for f in fs)
    named = sorted({f.pci_address for f in fds if f.pci_address is not None})
    if not b.holders:
        pci, why = UNKNOWN_DEVICE, "no process holds it, so no VFIO device fd can name its device"
    elif all(fs is None for fs in held):
        pci, why = UNKNOWN_DEVICE, "its holders' fd tables could not be read"
    elif not fds:
        pci, why = UNKNOWN_DEVICE, "its holders hold no VFIO device open"
    elif len(named) == 1 and all(f.pci_address is not None for f in fds):
        pci = named[0]
        where = ", ".join(f"pid {f.pid} fd {f.fd}" for f in fds)
        why = f"the only VFIO device its holders hold open ({where}; fdinfo vfio-device-syspath)"
    elif not named:
        pci, why = UNKNOWN_DEVICE, "its holders' VFIO device fds name no PCI device (fdinfo before 6.15)"
    else:
        pci = UNKNOWN_DEVICE
        why = f"its holders hold several VFIO devices open ({', '.join(named)}); nothing tells which exported it"
    return DeviceMemory(b.inode, pci, None, fds, why)


def _cgroup(scan: _Scan, pid: int) -> str | None:
    """The cgroup v2 path of `pid`, or None (v1 only, no such file). A link out of a capture is
    refused and recorded as such; any other failure only leaves it unknown."""
    try:
        return read_proc_cgroup(scan.roots.proc, pid).path
    except OSError as exc:
        if gap_kind(exc) == OUTSIDE:
            scan.gap(pid, "cgroup", exc)
        return None


def _cgroup_source(processes: list[Process]) -> str:
    if not processes or any(p.cgroup is not None for p in processes):
        return "ok"
    return "unavailable: no process's /proc/PID/cgroup has a cgroup v2 path (cgroup v1 only, or not captured)"


def collect(roots: Roots | None = None, *, include_maps: bool = True, cgroups: bool = False) -> Snapshot:
    """Scan once. Never raises for vanished processes or denied files; see the module doc.
    `cgroups`: also read each holding process's cgroup (Process.cgroup; one read per process).
    The garbage collector is off meanwhile: a scan makes tens of thousands of tuples and no
    reference cycle, and collecting them costs a fifth of a 10 000-buffer scan."""
    was = gc.isenabled()
    gc.disable()
    try:
        return _collect(roots or Roots(), include_maps, cgroups)
    finally:
        if was:
            gc.enable()


def _collect(roots: Roots, include_maps: bool, cgroups: bool = False) -> Snapshot:
    live = roots.live
    sources: dict[str, str] = {}
    scan = _Scan(roots=roots, live=live)
    try:
        pids = sorted(int(n) for n in roots.proc.listdir() if n.isdigit())
        sources["fdinfo"] = "ok"
    except OSError as exc:
        pids = []
        sources["fdinfo"] = scan.source_gap("fdinfo", exc, roots.proc_root)
    listing, pending = _start_listings(scan, sources)
    holders, holders_source = bpfscan.read_holders(roots, include_maps=include_maps)  # meanwhile
    if holders is not None:  # and what needs no listing, while bufinfo is read
        scan.take_holders(holders)
        scan.maps_readable = include_maps
        holdings = _hold(scan)
        scan.identify_holders()
    table = _finish_listings(scan, sources, listing, pending)
    sysfs_buffers = _read_sysfs(scan, sources)
    if not live:
        scan.index_for_join(table, sysfs_buffers)
    if listing.table is not None:
        # our iterator's names are exact (bufinfo prints them raw): no fdinfo for any buffer it listed
        scan.known_inodes.update(cast(tuple[int, ...], listing.table.inode))
    elif table is not None and None not in table.inode:
        # bufinfo already gives size, exporter and count: skip fdinfo for those buffers. A name is
        # printed raw there (tabs, newlines), so named buffers still get their exact fdinfo.
        scan.known_inodes.update(compress(cast(tuple[int, ...], table.inode), map(is_, table.name, repeat(None))))
    sources["bpf_holders"] = holders_source
    if holders is None:
        for pid in pids:
            pscan = _ProcScan()
            scan.scan_fds(pid, pscan)
            if pscan.fds:
                scan.procs[pid] = pscan
            if include_maps:
                scan.scan_maps(pid)
        scan.map_entries()
        holdings = _hold(scan)
    elif scan.holders_fdinfo():  # an fd closed since the iterator saw it: without it
        holdings = _hold(scan)
    if include_maps:
        sources["maps"] = "ok" if scan.maps_readable or not pids else "unavailable: no maps file was readable"
    else:
        sources["maps"] = "unavailable: not requested"
    maps_read = include_maps and (scan.maps_readable or not pids)

    scan.unjoined_errors()
    heaps, udmabuf = _read_devices(roots, sources)
    heap_names = frozenset(h.name for h in heaps)

    buffers = _Buffers(
        scan,
        holdings,
        table,
        sysfs_buffers,
        heap_names,
        maps_read=maps_read,
        table_source="bpf" if listing.table is not None else "bufinfo",
        pinned=listing.pinned,
    ).build()
    device = _device_buffers(buffers)
    processes = _build_processes(scan, buffers, device, cgroups=cgroups)
    if cgroups:
        sources["cgroup"] = _cgroup_source(processes)
    listed = (table is not None and None not in table.inode) or listing.listed
    all_seen = maps_read and not scan.unjoined_keys and not scan.legacy_fds and not scan.denied
    return Snapshot(
        kernel=_kernel_release(scan),
        taken_at=time.time(),
        sources=sources,
        buffers=tuple(buffers),
        processes=tuple(processes),
        totals=_totals(buffers, device, listed=listed, all_seen=all_seen),
        errors=tuple(scan.errors),
        heaps=heaps,
        udmabuf=udmabuf,
        denied_pids=tuple(sorted(scan.denied)),
        device_memory=_device_memory(roots, device) if device else (),
        mem_accounting=read_mem_accounting(roots.sys),
    )


def _start_listings(scan: _Scan, sources: dict[str, str]) -> tuple[bpfscan.BpfBuffers, _BufinfoRead | None]:
    """What BPF lists, and the read of bufinfo where it must be read: started, in a thread on a
    live machine (_finish_listings() takes it). In order of preference: bufinfo (fences, every
    attached device) over our dma-buf iterator's listing, merged where both are read; the
    iterator alone where bufinfo would add nothing (then bufinfo is only opened) or is missing."""
    listing = bpfscan.read_buffers(scan.roots)
    sources["bpf"] = listing.state
    scan.errors.extend(listing.errors)
    ours = listing.table
    if ours is not None and not listing.fenced and not listing.crowded:
        _bufinfo_there(scan, sources)
        return listing, None
    sources["bufinfo"] = ""  # its place among the sources; _read_bufinfo() says what it is
    return listing, _BufinfoRead(scan.roots.debugfs, background=scan.live)


def _finish_listings(
    scan: _Scan, sources: dict[str, str], listing: bpfscan.BpfBuffers, pending: _BufinfoRead | None
) -> BufInfoTable | None:
    """The table the scan joins on: bufinfo's (merged with our iterator's where both were read),
    or our iterator's alone."""
    ours = listing.table
    if pending is None:
        return ours
    info = _read_bufinfo(scan, sources, pending)
    if ours is None:
        return info
    return ours if info is None else _with_bufinfo(ours, info)
