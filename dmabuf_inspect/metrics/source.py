"""One scan as the metrics see it: the snapshot, how long it took, each process's cgroup, and
whether dma-buf heap pages are charged to memory cgroups.

No prometheus_client here: `observe()` is what `metrics` and `serve` time, and benchmarks call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dmabuf_inspect.kernel.cgroup import ProcCgroup, read_cgroups, read_mem_accounting
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.snapshot import collect


@dataclass(frozen=True, slots=True)
class Observation:
    snapshot: Snapshot
    scan_seconds: float  # the scan and the cgroup reads, wall-clock
    cgroups: Mapping[int, ProcCgroup]  # pid -> its cgroup, for the processes and holders of the snapshot
    mem_accounting: bool | None  # dma_heap.mem_accounting; None where the kernel has no such parameter

    def cgroup_paths(self) -> dict[int, str | None]:
        """pid -> cgroup v2 path (None: unknown), as scan.cgroups.cgroup_totals() takes it."""
        return {pid: c.path for pid, c in self.cgroups.items()}


def held_pids(snap: Snapshot) -> list[int]:
    """Every pid the snapshot names: its processes and the holders of its buffers, ascending."""
    pids = {p.pid for p in snap.processes}
    for b in snap.buffers:
        pids.update(h.pid for h in b.holders)
    return sorted(pids)


def observe(roots: Roots, *, include_maps: bool = True, clock: Callable[[], float] = time.perf_counter) -> Observation:
    """Scan once, then read the cgroup of each process found (never raises for vanished or
    denied processes: see scan.snapshot)."""
    start = clock()
    snap = collect(roots, include_maps=include_maps)
    cgroups = read_cgroups(roots.proc, held_pids(snap))
    mem_accounting = read_mem_accounting(roots.sys)
    return Observation(snap, clock() - start, cgroups, mem_accounting)
