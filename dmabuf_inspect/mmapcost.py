"""What touching a dma-buf from the CPU costs, against anonymous memory and a memfd.

For each size, one buffer per target (an exporter, a given fd, or a baseline) is made; then in
every repeat the targets take turns, in a rotating order so that whatever else the machine does
falls on all of them alike, and each measures:

    mmap_ns                  mmap(2) of the whole size (libc, so no dup() as Python's mmap does)
    first_touch_ns_per_page  one byte written per page of that fresh mapping, per page
    write_mib_s              memset of the mapping, steady state
    read_mib_s               memchr over the mapping for a byte that is not there, steady state
    sync_pair_ns             DMA_BUF_IOCTL_SYNC START|RW then END|RW, after one warm-up pair

A repeat keeps the best of k timings of each figure (k = 3, 2 above 16 MiB): k fresh mappings for
mmap and first touch, then k write blocks, k read blocks and 4 blocks of 4 SYNC pairs on the last
mapping, so that a time slice lost to another process is not counted as the buffer's cost. A
block covers at least 256 KiB (small buffers are passed over several times), so small sizes
include the libc call overhead.

Anonymous memory gets new pages in every mapping, so its first touch allocates and zeroes a page;
a memfd's and a dma-buf's pages already exist (the memfd is filled before the first repeat), so
their first touch only maps. Each figure is reported as median, quartiles, min and max over the
repeats, and for dma-bufs also relative to each baseline: the spread of the per-repeat ratios
dma-buf / baseline (for bandwidth, above 1 is faster).

Only this process's own buffers are touched: `run_bench(fd=N)` maps an fd it was given, and the
exporters' buffers are allocated here (`allocator_for()`) and freed after their size.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import uapi
from .errors import DmabufInspectError, SyscallError, UsageError, describe_oserror

SCHEMA = "dmabuf-inspect-bench/1"
PAGE_SIZE = mmap.PAGESIZE
DEFAULT_SIZES = (4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20)
BASELINES = ("anon", "memfd")
_BLOCK_BYTES = 256 << 10
_MAX_PASSES = 64
_SYNC_BLOCKS = 4
_SYNC_PAIRS = 4
_WRITE_BYTE = 0x5A
_ABSENT_BYTE = 0xA5
_TOUCH_BYTE = 0x01


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and spread of one figure over the repeats."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        if not samples:
            raise ValueError("no samples")
        if len(samples) == 1:
            v = float(samples[0])
            return cls(v, v, v, v, v, 1)
        q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(med, q1, q3, float(min(samples)), float(max(samples)), len(samples))


@dataclass(frozen=True, slots=True)
class Relative:
    """A dma-buf's figures divided by a baseline's, repeat by repeat."""

    baseline: str
    mmap_ns: Spread | None
    first_touch_ns_per_page: Spread | None
    write_mib_s: Spread | None
    read_mib_s: Spread | None


@dataclass(frozen=True, slots=True)
class SizeResult:
    size_bytes: int
    pages: int
    passes: int  # write/read passes per timing
    mmap_ns: Spread | None = None
    first_touch_ns_per_page: Spread | None = None
    write_mib_s: Spread | None = None
    read_mib_s: Spread | None = None
    sync_pair_ns: Spread | None = None  # None for the baselines, and for a failed SYNC
    error: str | None = None  # why this size was not measured (allocation or mmap failed)
    relative: tuple[Relative, ...] = ()  # dma-bufs only: against each baseline of the same run


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str  # "udmabuf", a heap name, "fd:N", or a baseline "anon" / "memfd"
    kind: str  # "dmabuf" | "baseline"
    exporter: str | None  # fdinfo exp_name of the dma-buf; None for the baselines
    exporter_class: str | None
    sizes: tuple[SizeResult, ...] = ()
    error: str | None = None  # why the target was not measured at all


@dataclass(frozen=True, slots=True)
class BenchReport:
    kernel: str
    page_size: int
    repeat: int
    targets: tuple[TargetResult, ...]
    schema: str = SCHEMA
    notes: tuple[str, ...] = field(default=())

    def target(self, name: str) -> TargetResult:
        for t in self.targets:
            if t.target == name:
                return t
        raise KeyError(name)


# ---- libc ----------------------------------------------------------------------------------


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long)  # fmt: skip
        self.munmap = libc.munmap
        self.munmap.restype = ctypes.c_int
        self.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self.memset = libc.memset
        self.memset.restype = ctypes.c_void_p
        self.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
        self.memchr = libc.memchr
        self.memchr.restype = ctypes.c_void_p
        self.memchr.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)


_MAP_FAILED = ctypes.c_void_p(-1).value
_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


@contextlib.contextmanager
def _mapped(fd: int, size: int, prot: int, flags: int) -> Iterator[tuple[int, int]]:
    """Map, yield (address, mmap ns), unmap."""
    lib = _lib()
    t0 = time.perf_counter_ns()
    addr = lib.mmap(None, size, prot, flags, fd, 0)
    t1 = time.perf_counter_ns()
    if addr is None or addr == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    try:
        yield addr, t1 - t0
    finally:
        lib.munmap(addr, size)


# ---- one mapping --------------------------------------------------------------------------

FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s")


@dataclass(slots=True)
class _Samples:
    mmap_ns: list[float] = field(default_factory=list)
    first_touch_ns_per_page: list[float] = field(default_factory=list)
    write_mib_s: list[float] = field(default_factory=list)
    read_mib_s: list[float] = field(default_factory=list)
    sync_pair_ns: list[float] = field(default_factory=list)


class _SyncError(Exception):
    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def passes_for(size: int) -> int:
    """Passes over the whole buffer per timed block: a block is at least _BLOCK_BYTES."""
    return max(1, min(_MAX_PASSES, _BLOCK_BYTES // size))


def best_of(size: int) -> int:
    """Timings per repeat of which the best is kept: fresh mappings, write and read blocks."""
    return 3 if size <= 16 << 20 else 2


def _mib_s(nbytes: int, ns: int) -> float:
    return (nbytes / (1 << 20)) / (max(ns, 1) / 1e9)


def _sync_pairs(fd: int, writable: bool) -> float:
    access = uapi.DMA_BUF_SYNC_RW if writable else uapi.DMA_BUF_SYNC_READ
    start = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_START)
    end = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_END)
    request = uapi.DMA_BUF_IOCTL_SYNC
    ioctl = fcntl.ioctl
    best = None
    try:
        ioctl(fd, request, start)  # the first START may build an sg table (udmabuf)
        ioctl(fd, request, end)
        for _ in range(_SYNC_BLOCKS):
            t0 = time.perf_counter_ns()
            for _ in range(_SYNC_PAIRS):
                ioctl(fd, request, start)
                ioctl(fd, request, end)
            ns = (time.perf_counter_ns() - t0) / _SYNC_PAIRS
            best = ns if best is None else min(best, ns)
    except OSError as exc:
        raise _SyncError(exc) from None
    assert best is not None
    return best


def _touch(addr: int, size: int, writable: bool) -> float:
    """One byte per page of a fresh mapping, written (or read); ns per page."""
    pages = size // PAGE_SIZE
    view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
    try:
        t0 = time.perf_counter_ns()
        if writable:
            view[::PAGE_SIZE] = bytes((_TOUCH_BYTE,)) * pages
        else:
            view[::PAGE_SIZE].tobytes()
        return (time.perf_counter_ns() - t0) / pages
    finally:
        view.release()


def _measure_once(fd: int, size: int, *, anon: bool, writable: bool, sync: bool, samples: _Samples) -> None:
    """One repeat: the best of k fresh mappings (mmap time, first touch), then the best of k
    write and read blocks and of the SYNC blocks on the last mapping."""
    lib = _lib()
    k = best_of(size)
    passes = passes_for(size)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if anon else mmap.MAP_SHARED
    map_ns: list[int] = []
    touch_ns: list[float] = []
    for i in range(k):
        with _mapped(-1 if anon else fd, size, prot, flags) as (addr, ns):
            map_ns.append(ns)
            touch_ns.append(_touch(addr, size, writable))
            if i < k - 1:
                continue
            write = 0.0
            if writable:
                for _ in range(k):
                    t0 = time.perf_counter_ns()
                    for _ in range(passes):
                        lib.memset(addr, _WRITE_BYTE, size)
                    write = max(write, _mib_s(size * passes, time.perf_counter_ns() - t0))
            read = 0.0
            for _ in range(k):
                t0 = time.perf_counter_ns()
                for _ in range(passes):
                    if lib.memchr(addr, _ABSENT_BYTE, size) is not None:
                        raise DmabufInspectError("memchr found a byte nobody wrote: the buffer changed under us")
                read = max(read, _mib_s(size * passes, time.perf_counter_ns() - t0))
            sync_ns = _sync_pairs(fd, writable) if sync else None
    samples.mmap_ns.append(min(map_ns))
    samples.first_touch_ns_per_page.append(min(touch_ns))
    if writable:
        samples.write_mib_s.append(write)
    samples.read_mib_s.append(read)
    if sync_ns is not None:
        samples.sync_pair_ns.append(sync_ns)


def _spread(values: list[float]) -> Spread | None:
    return Spread.of(values) if values else None


# ---- targets ------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'4K', '64k', '1M', '16MiB', '4096' -> bytes; must be a positive multiple of the page size."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    mult = units.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = int(number) * mult
    except ValueError:
        raise UsageError(f"size {text!r}: expected a number with an optional K, M or G suffix") from None
    if value <= 0 or value % PAGE_SIZE:
        raise UsageError(f"size {text!r}: must be a positive multiple of the page size ({PAGE_SIZE})")
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(parse_size(part) for part in text.split(",") if part.strip())
    if not sizes:
        raise UsageError("--size: give at least one size, e.g. 4K,1M")
    return sizes


def _memfd_filled(size: int) -> int:
    fd = os.memfd_create("dmabuf-inspect-bench", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        with _mapped(fd, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED) as (addr, _):
            _lib().memset(addr, _WRITE_BYTE, size)  # allocate the pages before the first repeat
    except BaseException:
        os.close(fd)
        raise
    return fd


Allocator = Callable[[int], Any]  # size -> a DmaBuf-like object with .fd and .close()


def allocator_for(exporter: str, dev_root: str = "/dev", sys_root: str = "/sys") -> Allocator:
    """A function that makes one buffer of a size: a udmabuf, or one from heap EXPORTER."""
    if exporter == "udmabuf":
        from . import udmabuf

        return lambda size: udmabuf.create_with_memfd(size, dev_root=dev_root, sys_root=sys_root)
    from . import heaps_alloc

    return lambda size: heaps_alloc.heap_alloc(exporter, size, dev_root=dev_root)


@dataclass(slots=True)
class _Target:
    """One target's state across sizes: what it is, its samples for the current size, its results."""

    name: str
    kind: str  # dmabuf | baseline
    alloc: Allocator | None = None  # exporters
    given_fd: int | None = None  # --fd
    given_size: int = 0
    writable: bool = True
    exporter: str | None = None
    exporter_class: str | None = None
    error: str | None = None
    sizes: list[SizeResult] = field(default_factory=list)
    # for the size being measured:
    fd: int = -1
    owner: Any = None
    samples: _Samples = field(default_factory=_Samples)
    size_error: str | None = None
    sync_error: str | None = None

    def prepare(self, size: int) -> bool:
        """Make this size's buffer; False when this target sits this size out."""
        self.samples, self.size_error, self.sync_error, self.owner, self.fd = _Samples(), None, None, None, -1
        if self.error is not None:
            return False
        if self.name == "anon":
            return True
        if self.name == "memfd":
            self.fd = _memfd_filled(size)
            return True
        if self.given_fd is not None:
            self.fd = self.given_fd
            return size <= self.given_size
        assert self.alloc is not None
        try:
            self.owner = self.alloc(size)
        except SyscallError as exc:
            if exc.step.startswith("Opening"):  # no such device, or no permission: no size will do
                self.error = str(exc)
                return False
            self.size_error = str(exc)
            return True
        except DmabufInspectError as exc:
            self.size_error = str(exc)
            return True
        self.fd = self.owner.fd
        if self.exporter is None:
            self.exporter, self.exporter_class = _exporter_of(self.fd)
        return True

    def measure(self, size: int) -> None:
        if self.size_error is not None:
            return
        sync = self.kind == "dmabuf" and self.sync_error is None
        try:
            _measure_once(self.fd, size, anon=self.name == "anon", writable=self.writable, sync=sync,
                          samples=self.samples)  # fmt: skip
        except _SyncError as exc:
            self.sync_error = describe_oserror("DMA_BUF_IOCTL_SYNC", exc.cause)
            self.samples.sync_pair_ns.clear()
        except OSError as exc:
            self.size_error = describe_oserror("mmap", exc)

    def finish(self, size: int) -> None:
        s = self.samples
        if self.size_error is not None:
            result = SizeResult(size, size // PAGE_SIZE, passes_for(size), error=self.size_error)
        else:
            result = SizeResult(
                size, size // PAGE_SIZE, passes_for(size), _spread(s.mmap_ns),
                _spread(s.first_touch_ns_per_page), _spread(s.write_mib_s), _spread(s.read_mib_s),
                _spread(s.sync_pair_ns), self.sync_error,
            )  # fmt: skip
        self.sizes.append(result)
        if self.owner is not None:
            self.owner.close()
        elif self.name == "memfd" and self.fd >= 0:
            os.close(self.fd)
        self.owner, self.fd = None, -1

    def relative_to(self, baseline: _Target) -> Relative | None:
        if self.size_error is not None or baseline.size_error is not None:
            return None

        def ratios(figure: str) -> Spread | None:
            mine, theirs = getattr(self.samples, figure), getattr(baseline.samples, figure)
            if not mine or len(mine) != len(theirs):
                return None
            return Spread.of([a / b for a, b in zip(mine, theirs, strict=True) if b > 0] or [0.0])

        return Relative(baseline.name, *(ratios(f) for f in FIGURES))

    def result(self) -> TargetResult:
        return TargetResult(self.name, self.kind, self.exporter, self.exporter_class, tuple(self.sizes),
                            self.error)  # fmt: skip


def _exporter_of(fd: int) -> tuple[str | None, str | None]:
    from .classify import classify_fd

    try:
        info = classify_fd(fd)
    except (OSError, DmabufInspectError):
        return None, None
    return info.exporter, info.exporter_class


def run_bench(
    *,
    exporters: Sequence[str] = (),
    fd: int | None = None,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeat: int = 5,
    dev_root: str = "/dev",
    sys_root: str = "/sys",
    baselines: Sequence[str] = BASELINES,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the fd (if given), each exporter and each baseline, size by size, in this process."""
    if repeat < 1:
        raise UsageError("--repeat must be at least 1")
    targets: list[_Target] = []
    sizes = list(sizes)
    if fd is not None:
        from .classify import classify_fd

        info = classify_fd(fd)  # NotADmabufError / OSError for anything else
        total = info.size_bytes - info.size_bytes % PAGE_SIZE
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        targets.append(_Target(f"fd:{fd}", "dmabuf", given_fd=fd, given_size=total, writable=writable,
                               exporter=info.exporter, exporter_class=info.exporter_class))  # fmt: skip
        if not any(s <= total for s in sizes):
            sizes = [total]
    for exporter in exporters:
        targets.append(_Target(exporter, "dmabuf", alloc=allocator_for(exporter, dev_root, sys_root)))
    for name in baselines:
        if name not in BASELINES:
            raise UsageError(f"no such baseline {name!r}: {', '.join(BASELINES)}")
        targets.append(_Target(name, "baseline"))

    for size in sizes:
        if progress:
            progress(f"{size >> 10} KiB")
        active = [t for t in targets if t.prepare(size)]
        try:
            for r in range(repeat):
                k = r % len(active) if active else 0
                for t in active[k:] + active[:k]:  # rotate, so no target always follows another
                    t.measure(size)
        finally:
            bases = [t for t in active if t.kind == "baseline"]
            for t in active:
                rel = [rt for b in bases if (rt := t.relative_to(b)) is not None] if t.kind == "dmabuf" else []
                t.finish(size)
                if rel:
                    t.sizes[-1] = _with_relative(t.sizes[-1], tuple(rel))
    notes = (
        "anon: fresh pages on every repeat (first touch allocates and zeroes); memfd and dma-bufs: "
        "pages exist before the first repeat (first touch only maps)",
        f"a write or read block covers the buffer {_BLOCK_BYTES >> 10} KiB / size times (at least "
        "once): small sizes include libc call overhead",
        "each repeat keeps the best of 3 timings (2 above 16 MiB) of each figure: fresh mappings for "
        "mmap and first touch, blocks for write and read, 4-pair blocks for SYNC; time lost to other "
        "processes is not the buffer's cost",
        "targets take turns within each repeat, in a rotating order; relative figures are the "
        "spread of per-repeat ratios dma-buf / baseline",
    )
    return BenchReport(os.uname().release, PAGE_SIZE, repeat, tuple(t.result() for t in targets), notes=notes)


def _with_relative(result: SizeResult, relative: tuple[Relative, ...]) -> SizeResult:
    return SizeResult(
        result.size_bytes, result.pages, result.passes, result.mmap_ns, result.first_touch_ns_per_page,
        result.write_mib_s, result.read_mib_s, result.sync_pair_ns, result.error, relative,
    )  # fmt: skip


def measure_fd(fd: int, sizes: Sequence[int] | None, repeat: int) -> TargetResult:
    """Measure a dma-buf fd this process was given; sizes beyond the buffer are left out."""
    report = run_bench(fd=fd, sizes=sizes or (), repeat=repeat, baselines=())
    return report.targets[0]


# ---- JSON ---------------------------------------------------------------------------------


def _spread_dict(s: Spread | None) -> dict[str, float | int] | None:
    if s is None:
        return None
    return {"median": s.median, "q1": s.q1, "q3": s.q3, "min": s.min, "max": s.max, "n": s.n}


def _size_dict(s: SizeResult) -> dict[str, Any]:
    return {
        "size_bytes": s.size_bytes,
        "pages": s.pages,
        "passes": s.passes,
        "mmap_ns": _spread_dict(s.mmap_ns),
        "first_touch_ns_per_page": _spread_dict(s.first_touch_ns_per_page),
        "write_mib_s": _spread_dict(s.write_mib_s),
        "read_mib_s": _spread_dict(s.read_mib_s),
        "sync_pair_ns": _spread_dict(s.sync_pair_ns),
        "error": s.error,
        "relative": {r.baseline: {f: _spread_dict(getattr(r, f)) for f in FIGURES} for r in s.relative},
    }


def report_to_dict(report: BenchReport) -> dict[str, Any]:
    """The JSON document; its shape is bench.schema.json."""
    return {
        "schema": report.schema,
        "kernel": report.kernel,
        "page_size": report.page_size,
        "repeat": report.repeat,
        "notes": list(report.notes),
        "targets": [
            {
                "target": t.target,
                "kind": t.kind,
                "exporter": t.exporter,
                "exporter_class": t.exporter_class,
                "error": t.error,
                "sizes": [_size_dict(s) for s in t.sizes],
            }
            for t in report.targets
        ],
    }


def schema_path() -> str:
    return os.path.join(os.path.dirname(__file__), "bench.schema.json")
