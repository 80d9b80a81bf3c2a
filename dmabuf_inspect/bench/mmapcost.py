"""What touching a dma-buf from the CPU costs, against anonymous memory and a memfd.

A pass measures every size of every target (an exporter, a given fd, or a baseline) once. For
each size it makes one buffer per target, lets the targets take one untimed warm-up turn (TCG
and the caches see the code paths first there), then one timed turn, in an order that rotates
from pass to pass, and frees the buffers. A timed turn keeps the best of k timings of each
figure, so that a time slice lost to another process is not counted as the buffer's cost:

    mmap_ns                  mmap(2) of the whole size (libc, so no dup() as Python's mmap does);
                             best of 8 map/unmap calls of untouched mappings
    first_touch_ns_per_page  one byte written per page of a fresh mapping, per page; best of
                             touch_maps(size) fresh mappings (16 for small sizes, 2 for large)
    write_mib_s              memset of the mapping, steady state; best of best_of(size) blocks
    read_mib_s               memchr for a byte that is not there, steady state; same blocks
    sync_pair_ns             DMA_BUF_IOCTL_SYNC START|RW then END|RW, after one warm-up pair;
                             best of 8 blocks of 4 pairs

A block covers at least 256 KiB (small buffers are passed over several times), so small sizes
include the libc call overhead.

A repeat is `processes` passes, each in a fresh worker process with its own buffers, and keeps
for each figure the best of them; with processes=0 it is one pass in this process. Fresh
processes are there because a process's own state, not the buffer, can set its speed for as long
as it lives: under qemu TCG about one process in four runs everything 1.5-2.5x slower, steadily,
even with the same address layout and hash seed as a fast one. Each figure is reported as median,
quartiles, min and max over the repeats. For dma-bufs each figure is also relative to each
baseline: the spread of the ratios dma-buf / baseline within each pass (same process, same
moment; for bandwidth above 1 is faster), over all passes.

Anonymous memory gets new pages in every mapping, so its first touch allocates and zeroes a page;
a memfd's and a dma-buf's pages already exist (the memfd is filled before the warm-up), so their
first touch only maps.

Only the bench's own buffers are touched: `run_bench(fd=N)` maps an fd it was given (a worker
inherits it), and the exporters' buffers are allocated by the pass (`allocator_for()`), in the
bench process or its worker, and freed after their size.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dmabuf_inspect.errors import DmabufInspectError, SyscallError, UsageError, describe_oserror
from dmabuf_inspect.ioctl import uapi

SCHEMA = "dmabuf-inspect-bench/1"
PAGE_SIZE = mmap.PAGESIZE
DEFAULT_SIZES = (4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20)
DEFAULT_REPEAT = 5
DEFAULT_PROCESSES = 2
BASELINES = ("anon", "memfd")
FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s")
ALL_FIGURES = (*FIGURES, "sync_pair_ns")
HIGHER_IS_BETTER = frozenset({"write_mib_s", "read_mib_s"})
_BLOCK_BYTES = 256 << 10
_MAX_PASSES = 64
_MMAP_CALLS = 8
_TOUCH_BYTES = 4 << 20  # fresh mappings per timed turn: enough to touch this much, 2 to 16
_SYNC_BLOCKS = 8
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
    """A dma-buf's figures divided by a baseline's, pass by pass."""

    baseline: str
    mmap_ns: Spread | None
    first_touch_ns_per_page: Spread | None
    write_mib_s: Spread | None
    read_mib_s: Spread | None


@dataclass(frozen=True, slots=True)
class SizeResult:
    size_bytes: int
    pages: int
    passes: int  # write/read passes over the buffer per timed block
    mmap_ns: Spread | None = None
    first_touch_ns_per_page: Spread | None = None
    write_mib_s: Spread | None = None
    read_mib_s: Spread | None = None
    sync_pair_ns: Spread | None = None  # None for the baselines, and for a failed SYNC
    error: str | None = None  # why figures are missing (allocation, mmap or SYNC failed)
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
    processes: int = 0  # worker processes per repeat; 0: measured in the bench's own process

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
        self.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
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


def _map(fd: int, size: int, prot: int, flags: int) -> tuple[int, int]:
    """mmap; (address, ns the call took)."""
    lib = _lib()
    t0 = time.perf_counter_ns()
    addr = lib.mmap(None, size, prot, flags, fd, 0)
    t1 = time.perf_counter_ns()
    if addr is None or addr == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return addr, t1 - t0


@contextlib.contextmanager
def _mapped(fd: int, size: int, prot: int, flags: int) -> Iterator[int]:
    addr, _ = _map(fd, size, prot, flags)
    try:
        yield addr
    finally:
        _lib().munmap(addr, size)


# ---- one timed turn -----------------------------------------------------------------------


def passes_for(size: int) -> int:
    """Passes over the whole buffer per timed block: a block is at least _BLOCK_BYTES."""
    return max(1, min(_MAX_PASSES, _BLOCK_BYTES // size))


def best_of(size: int) -> int:
    """Write and read blocks per timed turn, of which the best is kept."""
    return 3 if size <= 16 << 20 else 2


def touch_maps(size: int) -> int:
    """Fresh mappings per timed turn whose first touch is timed; the best is kept."""
    return max(2, min(16, _TOUCH_BYTES // size))


def _mib_s(nbytes: int, ns: int) -> float:
    return (nbytes / (1 << 20)) / (max(ns, 1) / 1e9)


class _SyncError(Exception):
    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _sync_pairs(fd: int, writable: bool, blocks: int) -> float:
    access = uapi.DMA_BUF_SYNC_RW if writable else uapi.DMA_BUF_SYNC_READ
    start = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_START)
    end = uapi.dma_buf_sync(flags=access | uapi.DMA_BUF_SYNC_END)
    request = uapi.DMA_BUF_IOCTL_SYNC
    ioctl = fcntl.ioctl
    best = float("inf")
    try:
        ioctl(fd, request, start)  # the first START may build an sg table (udmabuf)
        ioctl(fd, request, end)
        for _ in range(blocks):
            t0 = time.perf_counter_ns()
            for _ in range(_SYNC_PAIRS):
                ioctl(fd, request, start)
                ioctl(fd, request, end)
            best = min(best, (time.perf_counter_ns() - t0) / _SYNC_PAIRS)
    except OSError as exc:
        raise _SyncError(exc) from None
    return best


def _touch(addr: int, size: int, writable: bool) -> float:
    """One byte per page of a fresh mapping, written (or read); ns per page."""
    pages = size // PAGE_SIZE
    view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
    strided = view[::PAGE_SIZE]
    try:
        if writable:
            src = bytes((_TOUCH_BYTE,)) * pages
            t0 = time.perf_counter_ns()
            strided[:] = src
        else:
            t0 = time.perf_counter_ns()
            strided.tobytes()
        return (time.perf_counter_ns() - t0) / pages
    finally:
        strided.release()
        view.release()


def _bandwidth(addr: int, size: int, blocks: int, writable: bool) -> tuple[float | None, float]:
    lib = _lib()
    passes = passes_for(size)
    write = None
    if writable:
        write = 0.0
        for _ in range(blocks):
            t0 = time.perf_counter_ns()
            for _ in range(passes):
                lib.memset(addr, _WRITE_BYTE, size)
            write = max(write, _mib_s(size * passes, time.perf_counter_ns() - t0))
    read = 0.0
    for _ in range(blocks):
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            if lib.memchr(addr, _ABSENT_BYTE, size) is not None:
                raise DmabufInspectError("memchr found a byte nobody wrote: the buffer changed under us")
        read = max(read, _mib_s(size * passes, time.perf_counter_ns() - t0))
    return write, read


def _measure(
    fd: int, size: int, *, anon: bool, writable: bool, sync: bool, warm_up: bool = False
) -> tuple[dict[str, float | None], str | None]:
    """One turn: mmap calls, fresh mappings for the first touch, then write, read and SYNC blocks
    on the last mapping; each figure the best of its timings. The SYNC error, if any, is returned
    with the other figures. A warm-up turn takes one timing of each."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if anon else mmap.MAP_SHARED
    map_fd = -1 if anon else fd
    lib = _lib()
    mmap_ns = float("inf")
    for _ in range(1 if warm_up else _MMAP_CALLS):
        addr, ns = _map(map_fd, size, prot, flags)  # untouched: munmap has no pages to free
        lib.munmap(addr, size)
        mmap_ns = min(mmap_ns, ns)
    maps = 1 if warm_up else touch_maps(size)
    blocks = 1 if warm_up else best_of(size)
    touch = float("inf")
    write: float | None = None
    read = 0.0
    sync_ns: float | None = None
    sync_error = None
    for i in range(maps):
        with _mapped(map_fd, size, prot, flags) as addr:
            touch = min(touch, _touch(addr, size, writable))
            if i < maps - 1:
                continue
            write, read = _bandwidth(addr, size, blocks, writable)
            if sync:
                try:
                    sync_ns = _sync_pairs(fd, writable, 1 if warm_up else _SYNC_BLOCKS)
                except _SyncError as exc:
                    sync_error = describe_oserror("DMA_BUF_IOCTL_SYNC", exc.cause)
    figures = {
        "mmap_ns": mmap_ns,
        "first_touch_ns_per_page": touch,
        "write_mib_s": write,
        "read_mib_s": read,
        "sync_pair_ns": sync_ns,
    }
    return figures, sync_error


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
        with _mapped(fd, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED) as addr:
            _lib().memset(addr, _WRITE_BYTE, size)  # allocate the pages before the first turn
    except BaseException:
        os.close(fd)
        raise
    return fd


Allocator = Callable[[int], Any]  # size -> a DmaBuf-like object with .fd and .close()


def allocator_for(exporter: str, dev_root: str = "/dev", sys_root: str = "/sys") -> Allocator:
    """A function that makes one buffer of a size: a udmabuf, or one from heap EXPORTER."""
    if exporter == "udmabuf":
        from dmabuf_inspect.ioctl import udmabuf

        return lambda size: udmabuf.create_with_memfd(size, dev_root=dev_root, sys_root=sys_root)
    from dmabuf_inspect.ioctl import heaps as heaps_alloc

    return lambda size: heaps_alloc.heap_alloc(exporter, size, dev_root=dev_root)


def _exporter_of(fd: int) -> tuple[str | None, str | None]:
    from dmabuf_inspect.classify import classify_fd

    try:
        info = classify_fd(fd)
    except (OSError, DmabufInspectError):
        return None, None
    return info.exporter, info.exporter_class


@dataclass(frozen=True, slots=True)
class _Spec:
    """What a pass measures: one target. JSON-able, for the worker processes."""

    name: str
    kind: str  # dmabuf | baseline
    given_fd: int | None = None  # --fd
    given_size: int = 0
    writable: bool = True
    exporter: str | None = None
    exporter_class: str | None = None


class _PassTarget:
    """One target's state within a pass: its buffer for the current size, its findings."""

    def __init__(self, spec: _Spec, dev_root: str, sys_root: str) -> None:
        self.spec = spec
        exporter = spec.kind == "dmabuf" and spec.given_fd is None
        self.alloc = allocator_for(spec.name, dev_root, sys_root) if exporter else None
        self.exporter, self.exporter_class = spec.exporter, spec.exporter_class
        self.error: str | None = None
        self.sizes: dict[str, dict[str, Any]] = {}
        self.fd = -1
        self.owner: Any = None

    def prepare(self, size: int) -> bool:
        """Make this size's buffer; False when this target sits this size out."""
        self.owner, self.fd = None, -1
        if self.error is not None:
            return False
        spec = self.spec
        if spec.name == "anon":
            return True
        if spec.name == "memfd":
            self.fd = _memfd_filled(size)
            return True
        if spec.given_fd is not None:
            self.fd = spec.given_fd
            return size <= spec.given_size
        assert self.alloc is not None
        try:
            self.owner = self.alloc(size)
        except SyscallError as exc:
            if exc.step.startswith("Opening"):  # no such device, or no permission: no size will do
                self.error = str(exc)
                return False
            self.sizes[str(size)] = {"error": str(exc)}
            return True
        except DmabufInspectError as exc:
            self.sizes[str(size)] = {"error": str(exc)}
            return True
        self.fd = self.owner.fd
        if self.exporter is None:
            self.exporter, self.exporter_class = _exporter_of(self.fd)
        return True

    def measure(self, size: int, warm_up: bool) -> None:
        entry = self.sizes.get(str(size))
        if entry is not None and "figures" not in entry:
            return  # allocation or mmap failed
        try:
            figures, sync_error = _measure(
                self.fd,
                size,
                anon=self.spec.name == "anon",
                writable=self.spec.writable,
                sync=self.spec.kind == "dmabuf",
                warm_up=warm_up,
            )
        except OSError as exc:
            self.sizes[str(size)] = {"error": describe_oserror("mmap", exc)}
            return
        if not warm_up:
            self.sizes[str(size)] = {"figures": figures, "error": sync_error}

    def finish(self) -> None:
        if self.owner is not None:
            self.owner.close()
        elif self.spec.name == "memfd" and self.fd >= 0:
            os.close(self.fd)
        self.owner, self.fd = None, -1

    def result(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "exporter_class": self.exporter_class,
            "error": self.error,
            "sizes": self.sizes,
        }


def _run_pass(
    specs: Sequence[_Spec], sizes: Sequence[int], rotate: int, dev_root: str, sys_root: str
) -> list[dict[str, Any]]:
    """Every size of every target once, in this process: [{exporter, exporter_class, error,
    sizes: {"SIZE": {figures, error} | {error}}}] in the order of specs."""
    targets = [_PassTarget(s, dev_root, sys_root) for s in specs]
    for size in sizes:
        active: list[_PassTarget] = []
        try:
            for t in targets:
                if t.prepare(size):
                    active.append(t)
            k = rotate % len(active) if active else 0
            order = active[k:] + active[:k]  # rotate, so no target always follows another
            for warm_up in (True, False):
                for t in order:
                    t.measure(size, warm_up)
        finally:
            for t in targets:
                t.finish()
    return [t.result() for t in targets]


def worker_main() -> None:
    """A worker process: one pass, asked for on stdin, answered on stdout (JSON)."""
    request = json.load(sys.stdin)
    specs = [_Spec(**s) for s in request["specs"]]
    try:
        result = _run_pass(specs, request["sizes"], request["rotate"], request["dev_root"], request["sys_root"])
    except (OSError, DmabufInspectError) as exc:
        print(f"dmabuf-inspect bench worker: {exc}", file=sys.stderr)
        sys.exit(1)
    json.dump(result, sys.stdout)


def _spawn_pass(
    specs: Sequence[_Spec], sizes: Sequence[int], rotate: int, dev_root: str, sys_root: str
) -> list[dict[str, Any]]:
    """One pass in a fresh worker process (this interpreter, this package)."""
    request = {
        "specs": [_spec_dict(s) for s in specs],
        "sizes": list(sizes),
        "rotate": rotate,
        "dev_root": dev_root,
        "sys_root": sys_root,
    }
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    fds = tuple(s.given_fd for s in specs if s.given_fd is not None)
    proc = subprocess.run(
        [sys.executable, "-c", "from dmabuf_inspect.bench.mmapcost import worker_main; worker_main()"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        pass_fds=fds,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise DmabufInspectError(
            f"bench worker exited with status {proc.returncode}: {lines[-1] if lines else 'no message'}"
        )
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def _spec_dict(spec: _Spec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in _Spec.__slots__}


# ---- aggregation --------------------------------------------------------------------------


def _best(figure: str, values: list[float]) -> float:
    return max(values) if figure in HIGHER_IS_BETTER else min(values)


def _size_result(
    index: int,
    spec: _Spec,
    size: int,
    passes: list[list[dict[str, Any]]],
    per_repeat: int,
    baselines: list[tuple[int, str]],
) -> SizeResult | None:
    """Figures of target INDEX at SIZE: per repeat the best of its passes, spread over repeats."""
    entries = [p[index]["sizes"].get(str(size)) for p in passes]
    if all(e is None for e in entries):
        return None  # sat this size out (fd too small, or no such target)
    measured = [e["figures"] if e is not None and "figures" in e else None for e in entries]
    errors = [e["error"] for e in entries if e is not None and e.get("error")]
    spreads: dict[str, Spread | None] = {}
    for figure in ALL_FIGURES:
        per_repeat_values = []
        for r in range(0, len(passes), per_repeat):
            values = [m[figure] for m in measured[r : r + per_repeat] if m is not None and m[figure] is not None]
            if values:
                per_repeat_values.append(_best(figure, values))
        spreads[figure] = Spread.of(per_repeat_values) if per_repeat_values else None
    relative = []
    if spec.kind == "dmabuf":
        for b, baseline in baselines:
            theirs = [p[b]["sizes"].get(str(size)) for p in passes]
            ratios: dict[str, Spread | None] = {}
            for figure in FIGURES:
                values = [
                    m[figure] / t["figures"][figure]
                    for m, t in zip(measured, theirs, strict=True)
                    if m is not None
                    and m[figure] is not None
                    and t is not None
                    and "figures" in t
                    and t["figures"][figure]
                ]
                ratios[figure] = Spread.of(values) if values else None
            if any(ratios.values()):
                relative.append(Relative(baseline, **ratios))
    return SizeResult(
        size,
        size // PAGE_SIZE,
        passes_for(size),
        **spreads,
        error=errors[0] if errors else None,
        relative=tuple(relative),
    )


def _aggregate(
    specs: Sequence[_Spec], sizes: Sequence[int], passes: list[list[dict[str, Any]]], per_repeat: int
) -> tuple[TargetResult, ...]:
    baselines = [(i, s.name) for i, s in enumerate(specs) if s.kind == "baseline"]
    results = []
    for i, spec in enumerate(specs):
        mine = [p[i] for p in passes]
        exporter = next((m["exporter"] for m in mine if m["exporter"]), spec.exporter)
        exporter_class = next((m["exporter_class"] for m in mine if m["exporter_class"]), spec.exporter_class)
        error = mine[0]["error"] if all(m["error"] for m in mine) else None
        size_results = tuple(r for size in sizes if (r := _size_result(i, spec, size, passes, per_repeat, baselines)))
        results.append(TargetResult(spec.name, spec.kind, exporter, exporter_class, size_results, error))
    return tuple(results)


def run_bench(
    *,
    exporters: Sequence[str] = (),
    fd: int | None = None,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeat: int = DEFAULT_REPEAT,
    processes: int = 0,
    dev_root: str = "/dev",
    sys_root: str = "/sys",
    baselines: Sequence[str] = BASELINES,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the fd (if given), each exporter and each baseline: `repeat` repeats, each the best
    of `processes` passes in fresh worker processes (0: one pass in this process)."""
    if repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if processes < 0:
        raise UsageError("--processes must be 0 (this process) or more")
    specs: list[_Spec] = []
    sizes = list(sizes)
    if fd is not None:
        from dmabuf_inspect.classify import classify_fd

        info = classify_fd(fd)  # NotADmabufError / OSError for anything else
        total = info.size_bytes - info.size_bytes % PAGE_SIZE
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        specs.append(
            _Spec(
                f"fd:{fd}",
                "dmabuf",
                given_fd=fd,
                given_size=total,
                writable=writable,
                exporter=info.exporter,
                exporter_class=info.exporter_class,
            )
        )
        if not any(s <= total for s in sizes):
            sizes = [total]
    for exporter in exporters:
        specs.append(_Spec(exporter, "dmabuf"))
    for name in baselines:
        if name not in BASELINES:
            raise UsageError(f"no such baseline {name!r}: {', '.join(BASELINES)}")
        specs.append(_Spec(name, "baseline"))

    per_repeat = max(1, processes)
    total_passes = repeat * per_repeat
    passes = []
    for n in range(total_passes):
        if progress:
            progress(f"pass {n + 1}/{total_passes}")
        if processes:
            passes.append(_spawn_pass(specs, sizes, n, dev_root, sys_root))
        else:
            passes.append(_run_pass(specs, sizes, n, dev_root, sys_root))
    where = (
        f"each repeat is the best of {processes} passes, each in a fresh worker process with its own buffers"
        if processes
        else "each repeat is one pass in the bench's own process"
    )
    notes = (
        where,
        "a pass measures each size once after an untimed warm-up turn; targets take turns in an order "
        "that rotates from pass to pass",
        "within a pass each figure is the best of several timings: 8 mmap calls, fresh mappings for the "
        f"first touch (up to 16), 3 blocks (2 above 16 MiB) for write and read, {_SYNC_BLOCKS} blocks of "
        f"{_SYNC_PAIRS} SYNC pairs; time lost to other processes is not the buffer's cost",
        "anon: fresh pages in every mapping (first touch allocates and zeroes); memfd and dma-bufs: "
        "pages exist before the first turn (first touch only maps)",
        f"a write or read block covers the buffer {_BLOCK_BYTES >> 10} KiB / size times (at least "
        "once): small sizes include libc call overhead",
        "relative figures: ratio dma-buf / baseline within each pass (same process), spread over all passes",
    )
    return BenchReport(
        os.uname().release,
        PAGE_SIZE,
        repeat,
        _aggregate(specs, sizes, passes, per_repeat),
        notes=notes,
        processes=processes,
    )


def measure_fd(fd: int, sizes: Sequence[int] | None, repeat: int) -> TargetResult:
    """Measure a dma-buf fd this process was given, in this process; sizes beyond the buffer are
    left out."""
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
        "processes": report.processes,
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
    from dmabuf_inspect import schemas

    return schemas.path(schemas.BENCH)
