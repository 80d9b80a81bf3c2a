"""The data model: frozen records of what the kernel told us, and the snapshot built from them.

Parsers return the `*Info`/`*Entry` records; `snapshot.collect()` joins them into a `Snapshot`.
Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FdInfo:
    """One `/proc/PID/fdinfo/N` of a dma-buf fd."""

    pos: int
    flags: int
    mnt_id: int | None
    inode: int | None  # the `ino:` line exists only since 5.14
    size_bytes: int
    count: int  # file references - 1 (procfs' own temporary reference is left out)
    exp_name: str
    name: str | None  # decoded with surrogateescape: any 32 bytes a process chose


@dataclass(frozen=True, slots=True)
class MapEntry:
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


@dataclass(frozen=True, slots=True)
class Fence:
    """A fence of a buffer's reservation object, as debugfs bufinfo prints it."""

    usage: str  # kernel | write | read | bookkeep, or exclusive | shared before 5.19
    driver: str
    timeline: str
    seqno: str  # "" where the kernel did not print it (the old Exclusive/Shared lines)
    context: str | None  # printed only by the CTX:SEQ form
    signaled: bool


@dataclass(frozen=True, slots=True)
class BufInfoEntry:
    """One object of debugfs `dma_buf/bufinfo`."""

    size_bytes: int
    flags: int
    mode: int
    count: int  # file references, as file_count() returns them
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


@dataclass(frozen=True, slots=True)
class Holder:
    """One process's hold on one buffer: its fds and its mappings."""

    pid: int
    fds: tuple[int, ...]
    maps: int
    mapped_bytes: int


@dataclass(frozen=True, slots=True)
class Buffer:
    """One dma-buf, keyed by its inode."""

    inode: int
    size_bytes: int
    size_source: str  # fdinfo | bufinfo | sysfs | maps (a lower bound from the mapping)
    exporter: str
    exporter_class: str
    name: str | None
    count: int | None  # file references; None when no source printed it
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
