"""The data model: frozen records of what the kernel told us, and the snapshot built from them.

Parsers return the `*Info`/`*Entry` records; `snapshot.collect()` joins them into a `Snapshot`.
Nothing here does I/O.

Every record is a NamedTuple, as psutil's are: immutable, built 4-5x faster than a frozen
dataclass, which calls object.__setattr__ once per field (10 000 buffers: 308 ms against 74 ms in
the TCG lab), and defined 10-20x faster (a frozen dataclass class costs about 1.3 ms to create
natively, with `dataclasses` and `inspect` to import: a tenth of a `dump`'s start under TCG).
Copy with a change: `x._replace(field=value)`. A field named `count` shadows tuple.count.
The class statements go through dmabuf_inspect.records, which makes them without typing's
eval() and ForwardRef compiles (mypy sees typing.NamedTuple).
"""

from itertools import repeat

from dmabuf_inspect.records import NamedTuple


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


class BufInfo(NamedTuple):
    """All of debugfs `dma_buf/bufinfo`."""

    entries: tuple[BufInfoEntry, ...]
    total_objects: int | None
    total_bytes: int | None


class BufInfoTable(NamedTuple):
    """All of debugfs `dma_buf/bufinfo` column by column, objects in file order: what a full
    scan joins on, without a record per object."""

    size_bytes: tuple[int, ...]
    flags: tuple[int, ...]
    mode: tuple[int, ...]
    count: tuple[int, ...]  # type: ignore[assignment]  # shadows tuple.count
    exp_name: tuple[str, ...]
    inode: tuple[int | None, ...]
    name: tuple[str | None, ...]
    fences: tuple[tuple[Fence, ...], ...]
    attachments: tuple[tuple[str, ...], ...]
    total_objects: int | None
    total_bytes: int | None

    @classmethod
    def of(cls, info: BufInfo) -> "BufInfoTable":
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


class SysfsBuffer(NamedTuple):
    """`/sys/kernel/dmabuf/buffers/INO/` (removed in 6.x, kept where present)."""

    inode: int
    exporter_name: str
    size_bytes: int


class Heap(NamedTuple):
    """A `/dev/dma_heap/NAME` device."""

    name: str
    dev_path: str
    major: int | None
    minor: int | None


class Udmabuf(NamedTuple):
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
    size_source: str  # fdinfo | bufinfo | bpf | sysfs | maps (a lower bound from the mapping)
    exporter: str
    exporter_class: str
    name: str | None
    count: int | None  # type: ignore[assignment]  # file references; None when no source printed it
    holders: tuple[Holder, ...]
    attachments: tuple[str, ...]
    fences: tuple[Fence, ...]
    kernel_refs: int | None  # count - fds - mappings seen; None when unknown (see holders_known)
    # False when a holder of this buffer may have gone unseen: mappings were not read (--no-maps),
    # or dma-buf fds on this kernel could not be tied to their buffer (before 5.3, or a capture
    # before 5.14; see Process.unjoined_fds). `holders` then lists only the holders seen.
    holders_known: bool = True

    @property
    def kernel_only(self) -> bool | None:
        """True: no process holds it, only the kernel; False: a process holds it; None: unknown
        (no holder seen, but one may have gone unseen). Show None as unknown, never as kernel."""
        if self.holders:
            return False
        return True if self.holders_known else None

    @property
    def fd_refs(self) -> int:
        return sum(len(h.fds) for h in self.holders)

    @property
    def map_refs(self) -> int:
        return sum(h.maps for h in self.holders)


class Process(NamedTuple):
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
    # /proc/PID/stat field 22 (starttime, clock ticks after boot): (pid, start_ticks) tells a
    # reused pid from the same process. None where stat could not be read.
    start_ticks: int | None = None
    # dma-buf fds of this process that could not be tied to a buffer (before 5.3 nothing tells
    # which buffer an fd holds; a capture before 5.14 may not tell either). `buffers`, `rss_bytes`
    # and `pss_bytes` count only the buffers it was seen holding: a lower bound when this is set.
    unjoined_fds: tuple[int, ...] = ()
    # Of rss_bytes and pss_bytes, what is device memory (a PCI BAR exported by vfio-pci: never RAM;
    # exporters.is_device_memory). rss_bytes - device_rss_bytes is what is not.
    device_rss_bytes: int = 0
    device_pss_bytes: int = 0
    # The cgroup v2 path (/proc/PID/cgroup `0::`, without " (deleted)"), read by the scan when
    # asked (collect(cgroups=True)); None when unknown (v1 only, no such file) or not read.
    cgroup: str | None = None

    @property
    def ram_rss_bytes(self) -> int:
        """rss_bytes less device memory: RAM, or memory whose backing the table does not know."""
        return self.rss_bytes - self.device_rss_bytes

    @property
    def ram_pss_bytes(self) -> int:
        return self.pss_bytes - self.device_pss_bytes


class Totals(NamedTuple):
    buffers: int
    bytes: int
    userspace_bytes: int  # buffers some process was seen holding (a lower bound when kernel_only_bytes is None)
    # The buffers no process holds. None unless every buffer was listed (debugfs bufinfo, or a
    # BPF dma-buf iterator: they list the buffers no process holds), and None when a holder may
    # have gone unseen (Buffer.holders_known: a process that could not be read, among others).
    kernel_only_bytes: int | None
    # Of `buffers` and `bytes`: device memory (a PCI BAR exported by vfio-pci), never RAM.
    device_buffers: int = 0
    device_bytes: int = 0

    @property
    def ram_bytes(self) -> int:
        """bytes less device memory: RAM, or memory whose backing the table does not know."""
        return self.bytes - self.device_bytes


class VfioDeviceFd(NamedTuple):
    """A VFIO device fd a process holds (kernel.vfio.read_device_fds)."""

    pid: int
    fd: int
    link: str  # anon_inode:[vfio-device], or /dev/vfio/devices/vfioN
    syspath: str | None  # fdinfo `vfio-device-syspath:` (6.15+); None where the kernel prints none
    pci_address: str | None  # the syspath's last part, when it is a PCI address


UNKNOWN_DEVICE = "unknown"


class DeviceMemory(NamedTuple):
    """Which device a device-memory buffer (class vfio) lives in, as far as the kernel tells.

    No kernel (up to 7.3) ties a VFIO dma-buf to its device or BAR directly. What it does tell:
    the exporter must keep the VFIO device open (closing it revokes the buffer), and the fdinfo
    of a VFIO device fd names its device (6.15+). So `device_fds` are the VFIO device fds held
    by the processes that hold the buffer, and `pci_address` is their device when they all name
    one and the same; otherwise (none, several, or a kernel that names none) it is "unknown".
    The BAR (`region`) is never printed by the kernel: None, shown as unknown.
    """

    inode: int
    pci_address: str  # or UNKNOWN_DEVICE
    region: int | None
    device_fds: tuple[VfioDeviceFd, ...]
    why: str  # one line: where pci_address came from, or why it is unknown


DENIED = "denied"  # no permission to read it
OUTSIDE = "outside"  # a captured tree's link that leads outside the capture: refused, not read
BROKEN = "broken"  # an I/O error, or text that is not what the kernel prints
UNJOINED = "unjoined"  # dma-buf fds that could not be tied to a buffer (Process.unjoined_fds)
SCAN_ERROR_KINDS = (DENIED, OUTSIDE, BROKEN, UNJOINED)


class ScanError(NamedTuple):
    """A gap in a scan: what could not be read (pid None: not a process's), and why."""

    pid: int | None
    source: str  # fd | fdinfo | maps | bufinfo | sysfs | kernel | ...
    error: str  # one line, for people
    kind: str = BROKEN  # one of SCAN_ERROR_KINDS, for programs


class Snapshot(NamedTuple):
    kernel: str
    taken_at: float  # time.time() at the end of the scan
    sources: dict[str, str]  # NAME -> "ok" | "unavailable: why"
    buffers: tuple[Buffer, ...]
    processes: tuple[Process, ...]
    totals: Totals
    errors: tuple[ScanError, ...]
    heaps: tuple[Heap, ...] = ()
    udmabuf: Udmabuf | None = None
    denied_pids: tuple[int, ...] = ()
    # One per device-memory buffer (class vfio), by inode: its device, as far as the kernel tells.
    device_memory: tuple[DeviceMemory, ...] = ()
    # dma_heap.mem_accounting (7.0+): heap pages charged to the allocating task's memory cgroup;
    # None where the kernel (or the capture) has no such parameter.
    mem_accounting: bool | None = None
