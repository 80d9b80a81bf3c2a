"""How `dmabuf-inspect bench` measures what touching a dma-buf from the CPU costs, against
anonymous memory and a memfd. This is the one description of the method; the README and
`bench --help` point here.

Targets. An exporter (udmabuf, or a heap under /dev/dma_heap), a dma-buf fd the bench inherited
(`--fd N`), and the baselines: anonymous memory and a memfd. Only the bench's own buffers are
touched: the exporters' buffers are allocated by the pass (`allocator_for()`), in the bench
process or its worker, and freed after their size; a given fd is mapped, never freed.

A pass measures every size of every target once (`run_pass`). For each size it makes one buffer
per target, lets the targets take one untimed warm-up turn (TCG and the caches see the code paths
first there), then one timed turn, in an order that rotates from pass to pass (no target always
follows another), and frees the buffers.

A timed turn (`measure.measure`) keeps the best of k timings of each figure, so that a time slice
lost to another process is not counted as the buffer's cost:

    mmap_ns                  mmap(2) of the whole size (libc, so no dup() as Python's mmap does);
                             best of 8 map/unmap calls of untouched mappings
    first_touch_ns_per_page  one byte written (read, for a read-only fd) per page of a fresh
                             mapping, per page; best of touch_maps(size) fresh mappings (as many
                             as touch 4 MiB, 2 to 16)
    write_mib_s              memset of the mapping, steady state; best of best_of(size) blocks
                             (3; 2 above 16 MiB)
    read_mib_s               memchr for a byte that is not there, steady state; same blocks
    sync_pair_ns             DMA_BUF_IOCTL_SYNC START|RW then END|RW, after one warm-up pair;
                             best of 8 blocks of 4 pairs (dma-bufs only)

A block covers at least 256 KiB (small buffers are passed over several times), so small sizes
include the libc call overhead. Anonymous memory gets new pages in every mapping, so its first
touch allocates and zeroes a page; a memfd's and a dma-buf's pages already exist (the memfd is
filled before the warm-up), so their first touch only maps.

Workers. A repeat is `processes` passes, each in a fresh worker process with its own buffers
(`worker_main`: a PassRequest on stdin, its TargetPasses on stdout), and keeps for each figure the
best of them; with processes=0 it is one pass in this process. Fresh processes are there because a
process's own state, not the buffer, can set its speed for as long as it lives: under qemu TCG
about one process in four runs everything 1.5-2.5x slower, steadily, even with the same address
layout and hash seed as a fast one. The best of two fresh processes is rarely slow.

Aggregation (`aggregate`). Each figure is reported as median, quartiles, min and max over the
repeats. For dma-bufs each figure is also relative to each baseline: the spread of the ratios
dma-buf / baseline within each pass (same process, same moment; for bandwidth above 1 is faster),
over all passes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from dmabuf_inspect.bench import measure
from dmabuf_inspect.bench.model import (
    ALL_FIGURES,
    BASELINES,
    FIGURES,
    HIGHER_IS_BETTER,
    Baseline,
    BenchDocumentError,
    BenchReport,
    Figures,
    PassRequest,
    Relative,
    Sample,
    SizeResult,
    Spread,
    TargetPass,
    TargetResult,
    TargetSpec,
    pass_from_json,
    pass_to_json,
    size_spreads,
)
from dmabuf_inspect.errors import DmabufInspectError, SyscallError, UsageError, describe_oserror
from dmabuf_inspect.exporters import exporter_class, is_device_memory

DEFAULT_SIZES = (4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20)
DEFAULT_REPEAT = 5
DEFAULT_PROCESSES = 2
PAGE_SIZE = measure.PAGE_SIZE


class Buffer(Protocol):
    """What an allocator returns: a DmaBuf, or anything with its fd and close()."""

    @property
    def fd(self) -> int: ...

    def close(self) -> None: ...


Allocator = Callable[[int], Buffer]  # size in bytes -> a new buffer


def allocator_for(exporter: str, dev_root: str = "/dev", sys_root: str = "/sys") -> Allocator:
    """A function that makes one buffer of a size: a udmabuf, or one from heap EXPORTER."""
    if exporter == "udmabuf":
        from dmabuf_inspect.ioctl import udmabuf

        return lambda size: udmabuf.create_with_memfd(size, dev_root=dev_root, sys_root=sys_root)
    from dmabuf_inspect.ioctl import heaps

    return lambda size: heaps.heap_alloc(exporter, size, dev_root=dev_root)


def peak_bytes(sizes_bytes: Sequence[int], exporters: Sequence[str], baselines: Sequence[str] = BASELINES) -> int:
    """The most memory a pass holds at once: at the largest size, one buffer per exporter and
    baseline (anon maps one fresh mapping at a time). A given fd is not counted: it exists."""
    return max(sizes_bytes, default=0) * (len(exporters) + len(baselines))


def _exporter_of(fd: int) -> tuple[str | None, str | None]:
    from dmabuf_inspect.classify import classify_fd

    try:
        info = classify_fd(fd)
    except (OSError, DmabufInspectError):
        return None, None
    return info.exporter, info.exporter_class


class _PassTarget:
    """One target's state within a pass: its buffer for the current size, its samples."""

    def __init__(self, spec: TargetSpec, dev_root: str, sys_root: str) -> None:
        self.spec = spec
        exporter = spec.kind == "dmabuf" and spec.given_fd is None
        self.alloc = allocator_for(spec.name, dev_root, sys_root) if exporter else None
        self.exporter, self.exporter_class = spec.exporter, spec.exporter_class
        self.error: str | None = None
        self.samples: dict[int, Sample] = {}
        self.fd = -1
        self.owner: Buffer | None = None

    def prepare(self, size: int) -> bool:
        """Make this size's buffer; False when this target sits this size out."""
        self.owner, self.fd = None, -1
        if self.error is not None:
            return False
        spec = self.spec
        if spec.name == "anon":
            return True
        if spec.name == "memfd":
            self.fd = measure.memfd_filled(size)
            return True
        if spec.given_fd is not None:
            self.fd = spec.given_fd
            return size <= spec.given_size_bytes
        assert self.alloc is not None
        try:
            self.owner = self.alloc(size)
        except SyscallError as exc:
            if exc.step.startswith("Opening"):  # no such device, or no permission: no size will do
                self.error = str(exc)
                return False
            self.samples[size] = Sample(size, None, str(exc))
            return True
        except DmabufInspectError as exc:
            self.samples[size] = Sample(size, None, str(exc))
            return True
        self.fd = self.owner.fd
        if self.exporter is None:
            self.exporter, self.exporter_class = _exporter_of(self.fd)
        return True

    def measure(self, size: int, warm_up: bool) -> None:
        failed = self.samples.get(size)
        if failed is not None and failed.figures is None:
            return  # allocation or mmap failed
        try:
            sample = measure.measure(
                self.fd,
                size,
                anon=self.spec.name == "anon",
                writable=self.spec.writable,
                sync=self.spec.kind == "dmabuf",
                warm_up=warm_up,
            )
        except OSError as exc:
            self.samples[size] = Sample(size, None, describe_oserror("mmap", exc))
            return
        if not warm_up:
            self.samples[size] = sample

    def finish(self) -> None:
        if self.owner is not None:
            self.owner.close()
        elif self.spec.name == "memfd" and self.fd >= 0:
            os.close(self.fd)
        self.owner, self.fd = None, -1

    def result(self, sizes: Sequence[int]) -> TargetPass:
        samples = tuple(self.samples[s] for s in sizes if s in self.samples)
        return TargetPass(self.exporter, self.exporter_class, self.error, samples)


def run_pass(request: PassRequest) -> tuple[TargetPass, ...]:
    """Every size of every target once, in this process; one TargetPass per spec, in order."""
    targets = [_PassTarget(s, request.dev_root, request.sys_root) for s in request.specs]
    for size in request.sizes_bytes:
        active: list[_PassTarget] = []
        try:
            for t in targets:
                if t.prepare(size):
                    active.append(t)
            k = request.rotate % len(active) if active else 0
            order = active[k:] + active[:k]
            for warm_up in (True, False):
                for t in order:
                    t.measure(size, warm_up)
        finally:
            for t in targets:
                t.finish()
    return tuple(t.result(request.sizes_bytes) for t in targets)


def worker_main() -> None:
    """A worker process: one pass, asked for on stdin, answered on stdout (JSON)."""
    try:
        request = PassRequest.from_json(json.load(sys.stdin))
        result = run_pass(request)
    except (OSError, ValueError, DmabufInspectError) as exc:
        print(f"dmabuf-inspect bench worker: {exc}", file=sys.stderr)
        sys.exit(1)
    json.dump(pass_to_json(result), sys.stdout)


def _spawn_pass(request: PassRequest) -> tuple[TargetPass, ...]:
    """One pass in a fresh worker process (this interpreter, this package)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    fds = tuple(s.given_fd for s in request.specs if s.given_fd is not None)
    proc = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import worker_main; worker_main()"],
        input=json.dumps(request.to_json()),
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
    try:
        return pass_from_json(json.loads(proc.stdout), len(request.specs))
    except ValueError as exc:  # BenchDocumentError, or not JSON at all
        raise BenchDocumentError(f"bench worker answered what is not a pass: {exc}") from None


# ---- aggregation --------------------------------------------------------------------------


def _best(figure: str, values: list[float]) -> float:
    return max(values) if figure in HIGHER_IS_BETTER else min(values)


def _size_result(
    index: int,
    spec: TargetSpec,
    size: int,
    passes: Sequence[Sequence[TargetPass]],
    per_repeat: int,
    baselines: list[tuple[int, str]],
) -> SizeResult | None:
    """Figures of target INDEX at SIZE: per repeat the best of its passes, spread over repeats."""
    samples = [p[index].sample(size) for p in passes]
    if all(s is None for s in samples):
        return None  # sat this size out (fd too small, or no such target)
    measured: list[Figures | None] = [s.figures if s is not None else None for s in samples]
    errors = [s.error for s in samples if s is not None and s.error]
    spreads: dict[str, Spread | None] = {}
    for figure in ALL_FIGURES:
        per_repeat_values = []
        for r in range(0, len(passes), per_repeat):
            values = [v for m in measured[r : r + per_repeat] if m is not None and (v := m.get(figure)) is not None]
            if values:
                per_repeat_values.append(_best(figure, values))
        spreads[figure] = Spread.of(per_repeat_values) if per_repeat_values else None
    relative = []
    if spec.kind == "dmabuf":
        for b, baseline in baselines:
            theirs = [p[b].sample(size) for p in passes]
            ratios: dict[str, Spread | None] = {}
            for figure in FIGURES:
                values = []
                for m, t in zip(measured, theirs, strict=True):
                    mine = m.get(figure) if m is not None else None
                    base = t.figures.get(figure) if t is not None and t.figures is not None else None
                    if mine is not None and base:
                        values.append(mine / base)
                ratios[figure] = Spread.of(values) if values else None
            if any(ratios.values()):
                relative.append(
                    Relative(
                        cast(Baseline, baseline),
                        mmap_ns=ratios["mmap_ns"],
                        first_touch_ns_per_page=ratios["first_touch_ns_per_page"],
                        write_mib_s=ratios["write_mib_s"],
                        read_mib_s=ratios["read_mib_s"],
                    )
                )
    return SizeResult(
        size,
        size // PAGE_SIZE,
        measure.passes_for(size),
        **size_spreads(spreads),
        error=errors[0] if errors else None,
        relative=tuple(relative),
    )


def aggregate(
    specs: Sequence[TargetSpec],
    sizes_bytes: Sequence[int],
    passes: Sequence[Sequence[TargetPass]],
    per_repeat: int,
) -> tuple[TargetResult, ...]:
    """PASSES (each one TargetPass per spec), PER_REPEAT passes per repeat -> a result per target."""
    baselines = [(i, s.name) for i, s in enumerate(specs) if s.kind == "baseline"]
    results = []
    for i, spec in enumerate(specs):
        mine = [p[i] for p in passes]
        exporter = next((m.exporter for m in mine if m.exporter), spec.exporter)
        exporter_class = next((m.exporter_class for m in mine if m.exporter_class), spec.exporter_class)
        error = mine[0].error if all(m.error for m in mine) else None
        size_results = tuple(
            r for size in sizes_bytes if (r := _size_result(i, spec, size, passes, per_repeat, baselines))
        )
        results.append(TargetResult(spec.name, spec.kind, exporter, exporter_class, size_results, error))
    return tuple(results)


def _notes(processes: int) -> tuple[str, ...]:
    where = (
        f"each repeat is the best of {processes} passes, each in a fresh worker process with its own buffers"
        if processes
        else "each repeat is one pass in the bench's own process"
    )
    return (
        where,
        "a pass measures each size once after an untimed warm-up turn; targets take turns in an order "
        "that rotates from pass to pass",
        f"within a pass each figure is the best of several timings: {measure.MMAP_CALLS} mmap calls, fresh "
        f"mappings for the first touch (up to {measure.MAX_TOUCH_MAPS}), 3 blocks (2 above 16 MiB) for write "
        f"and read, {measure.SYNC_BLOCKS} blocks of {measure.SYNC_PAIRS} SYNC pairs; time lost to other "
        "processes is not the buffer's cost",
        "anon: fresh pages in every mapping (first touch allocates and zeroes); memfd and dma-bufs: "
        "pages exist before the first turn (first touch only maps)",
        f"a write or read block covers the buffer {measure.BLOCK_BYTES >> 10} KiB / size times (at least "
        "once): small sizes include libc call overhead",
        "relative figures: ratio dma-buf / baseline within each pass (same process), spread over all passes",
    )


def device_memory_refusal(exporter: str) -> str:
    """Why bench refuses a buffer of EXPORTER (exporters.is_device_memory): one line."""
    return (
        f"a {exporter_class(exporter)} dma-buf (exporter {exporter}) is device memory, a PCI BAR, not RAM: "
        "bench does not touch device memory from the CPU (and VFIO dma-bufs have no mmap before the "
        "VFIO dma-buf mmap series)"
    )


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
    specs: list[TargetSpec] = []
    sizes = list(sizes)
    if fd is not None:
        from dmabuf_inspect.classify import classify_fd

        info = classify_fd(fd)  # NotADmabufError / OSError for anything else
        if info.details.device_memory:
            raise UsageError(f"fd {fd}: {device_memory_refusal(info.exporter)}")
        total = info.size_bytes - info.size_bytes % PAGE_SIZE
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        specs.append(
            TargetSpec(
                f"fd:{fd}",
                "dmabuf",
                given_fd=fd,
                given_size_bytes=total,
                writable=writable,
                exporter=info.exporter,
                exporter_class=info.exporter_class,
            )
        )
        if not any(s <= total for s in sizes):
            sizes = [total]
    for exporter in exporters:
        if is_device_memory(exporter):
            raise UsageError(f"exporter {exporter}: {device_memory_refusal(exporter)}")
        specs.append(TargetSpec(exporter, "dmabuf"))
    for name in baselines:
        if name not in BASELINES:
            raise UsageError(f"no such baseline {name!r}: {', '.join(BASELINES)}")
        specs.append(TargetSpec(name, "baseline"))

    per_repeat = max(1, processes)
    total_passes = repeat * per_repeat
    passes = []
    for n in range(total_passes):
        if progress:
            progress(f"pass {n + 1}/{total_passes}")
        request = PassRequest(tuple(specs), tuple(sizes), n, dev_root, sys_root)
        passes.append(_spawn_pass(request) if processes else run_pass(request))
    return BenchReport(
        os.uname().release,
        PAGE_SIZE,
        repeat,
        aggregate(specs, sizes, passes, per_repeat),
        notes=_notes(processes),
        processes=processes,
    )
