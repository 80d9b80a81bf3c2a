"""The data model: frozen records of what the kernel told us, and the snapshot built from them.

Parsers return the `*Info`/`*Entry` records; `snapshot.collect()` joins them into a `Snapshot`.
Nothing here does I/O.

The records a scan makes by the ten thousand (per fd, mapping, fence, bufinfo object, holder and
buffer) are NamedTuples, as psutil's are: immutable, and built 4-5x faster than a frozen
dataclass, which calls object.__setattr__ once per field (10 000 buffers: 308 ms against 74 ms
in the TCG lab). The rest are frozen dataclasses. A field named `count` shadows tuple.count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple


class FdInfo(NamedTuple):
    """One `/proc/PID/fdinfo/N` of a dma-buf fd."""

    pos: int
    flags: int
    mnt_id: int | None
    inode: int | None  # the `ino:` line exists only since 5.14
    size_bytes: int
    count: int  # type: ignore[assignment]  # file references - 1 (procfs' own temporary reference is left out)
    exp_name: str
    name: str | None  # decoded with surrogateescape: any 32 bytes a process chose


class MapEntry(NamedTuple):
    """One `/dmabuf:` line of `/proc/PID/maps`."""

    start: int
    end: int
    perms: str
    offset_bytes: int
    inode: int
    name: str | None  # the text after `/dmabuf:`; None when empty

    @property
    def length_bytes(self) -> int:
        return self.end - self.start


class Fence(NamedTuple):
    """A fence of a buffer's reservation object, as debugfs bufinfo prints it."""

    usage: str  # kernel | write | read | bookkeep, or exclusive | shared before 5.19
    driver: str
    timeline: str
    seqno: str  # "" where the kernel did not print it (the old Exclusive/Shared lines)
    context: str | None  # printed only by the CTX:SEQ form
    signaled: bool


class BufInfoEntry(NamedTuple):
    """One object of debugfs `dma_buf/bufinfo`."""

    size_bytes: int
    flags: int
    mode: int
    count: int  # type: ignore[assignment]  # file references, as file_count() returns them
    exp_name: str
    inode: int | None  # absent from the oldest header
    name: str | None  # `<none>` is None
    fences: tuple[Fence, ...] = ()
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BufInfo:
    """All of debugfs `dma_buf/bufinfo`."""

    entries: tuple[BufInfoEntry, ...]
    total_objects: int | None
    total_bytes: int | None


@dataclass(frozen=True, slots=True)
class BufInfoTable:
    """All of debugfs `dma_buf/bufinfo` column by column, objects in file order: what a full
    scan joins on, without a record per object."""

    size_bytes: tuple[int, ...]
    flags: tuple[int, ...]
    mode: tuple[int, ...]
    count: tuple[int, ...]
    exp_name: tuple[str, ...]
    inode: tuple[int | None, ...]
    name: tuple[str | None, ...]
    fences: tuple[tuple[Fence, ...], ...]
    attachments: tuple[tuple[str, ...], ...]
    total_objects: int | None
    total_bytes: int | None

    @classmethod
    def of(cls, info: BufInfo) -> BufInfoTable:
        if not info.entries:
            return cls((), (), (), (), (), (), (), (), (), info.total_objects, info.total_bytes)
        size, flags, mode, count, exp_name, inode, name, fences, attachments = zip(*info.entries, strict=True)
        return cls(
            size, flags, mode, count, exp_name, inode, name, fences, attachments, info.total_objects, info.total_bytes
        )

    def bufinfo(self) -> BufInfo:
        columns = (
            self.size_bytes,
            self.flags,
            self.mode,
            self.count,
            self.exp_name,
            self.inode,
            self.name,
            self.fences,
            self.attachments,
        )
        entries = map(tuple.__new__, repeat(BufInfoEntry), zip(*columns, strict=True))
        return BufInfo(tuple(entries), self.total_objects, self.total_bytes)


@dataclass(frozen=True, slots=True)
class SysfsBuffer:
    """`/sys/kernel/dmabuf/buffers/INO/` (removed in 6.x, kept where present)."""

    inode: int
    exporter_name: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Heap:
    """A `/dev/dma_heap/NAME` device."""

    name: str
    dev_path: str
    major: int | None
    minor: int | None


@dataclass(frozen=True, slots=True)
class Udmabuf:
    """Whether `/dev/udmabuf` exists, and the module's limits where readable."""

    present: bool
    dev_path: str
    size_limit_mb: int | None
    list_limit: int | None


class Holder(NamedTuple):
    """One process's hold on one buffer: its fds and its mappings."""

    pid: int
    fds: tuple[int, ...]
    maps: int
    mapped_bytes: int


class Buffer(NamedTuple):
    """One dma-buf, keyed by its inode."""

    inode: int
    size_bytes: int
    size_source: str  # fdinfo | bufinfo | sysfs | maps (a lower bound from the mapping)
    exporter: str
    exporter_class: str
    name: str | None
    count: int | None  # type: ignore[assignment]  # file references; None when no source printed it
    holders: tuple[Holder, ...]
    attachments: tuple[str, ...]
    fences: tuple[Fence, ...]
    kernel_refs: int | None  # count - fds - mappings seen; None when count is unknown

    @property
    def fd_refs(self) -> int:
        return sum(len(h.fds) for h in self.holders)

    @property
    def map_refs(self) -> int:
        return sum(h.maps for h in self.holders)


@dataclass(frozen=True, slots=True)
class Process:
    """A process that holds at least one dma-buf."""

    pid: int
    ppid: int | None
    comm: str
    cmdline: str
    uid: int | None
    user: str
    buffers: int
    rss_bytes: int  # sum of every buffer held by fd or by mapping
    pss_bytes: int  # each buffer's size divided by the number of processes holding it


@dataclass(frozen=True, slots=True)
class Totals:
    buffers: int
    bytes: int
    userspace_bytes: int
    kernel_only_bytes: int | None  # None unless debugfs bufinfo was read


@dataclass(frozen=True, slots=True)
class ScanError:
    pid: int | None
    source: str
    error: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    kernel: str
    taken_at: float  # time.time() at the end of the scan
    sources: dict[str, str]  # NAME -> "ok" | "unavailable: why"
    buffers: tuple[Buffer, ...]
    processes: tuple[Process, ...]
    totals: Totals
    errors: tuple[ScanError, ...]
    heaps: tuple[Heap, ...] = ()
    udmabuf: Udmabuf | None = None
    denied_pids: tuple[int, ...] = field(default=())

    @property
    def partial(self) -> bool:
        """True when some process or source could not be read."""
        return bool(self.denied_pids) or any(v != "ok" for k, v in self.sources.items() if k == "bufinfo")
