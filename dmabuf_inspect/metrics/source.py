"""One scan as the metrics see it: the snapshot, with each process's cgroup and whether dma-buf
heap pages are charged to memory cgroups, and how long it took.

The cgroups are read by the scan itself (collect(cgroups=True)), next to the rest of each
process, never again afterwards: a pid that exited and was reused in between would otherwise be
filed under the new process's cgroup.

No prometheus_client here: `observe()` is what `metrics` and `serve` time, and benchmarks call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.snapshot import collect


@dataclass(frozen=True, slots=True)
class Observation:
    snapshot: Snapshot  # scanned with cgroups=True
    scan_seconds: float  # the scan, cgroups included, wall-clock

    @property
    def mem_accounting(self) -> bool | None:
        """dma_heap.mem_accounting; None where the kernel has no such parameter."""
        return self.snapshot.mem_accounting

    def cgroup_paths(self) -> dict[int, str | None]:
        """pid -> cgroup v2 path (None: unknown), as scan.cgroups.cgroup_totals() takes it."""
        return {p.pid: p.cgroup for p in self.snapshot.processes}


def held_pids(snap: Snapshot) -> list[int]:
    """Every pid the snapshot names: its processes and the holders of its buffers, ascending."""
    pids = {p.pid for p in snap.processes}
    for b in snap.buffers:
        pids.update(h.pid for h in b.holders)
    return sorted(pids)


def observe(roots: Roots, *, include_maps: bool = True, clock: Callable[[], float] = time.perf_counter) -> Observation:
    """Scan once, with the cgroup of each process found (never raises for vanished or denied
    processes: see scan.snapshot)."""
    start = clock()
    snap = collect(roots, include_maps=include_maps, cgroups=True)
    return Observation(snap, clock() - start)
