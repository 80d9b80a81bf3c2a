"""Prometheus metrics of a scan: a custom `prometheus_client` collector, the exposition text, and
the atomic textfile for node_exporter.

Every metric is a gauge named `dmabuf_*`, in base units (`_bytes`, `_seconds`):

    dmabuf_buffers, dmabuf_bytes                      every dma-buf (bufinfo lists kernel-only ones too)
    dmabuf_userspace_bytes                            buffers some process holds by fd or mapping
    dmabuf_kernel_only_bytes                          buffers no process holds; ABSENT when unknown
    dmabuf_device_buffers, dmabuf_device_bytes        of those, device memory (vfio: a PCI BAR), never RAM
    dmabuf_processes, dmabuf_cgroups                  processes / cgroups holding dma-bufs (all of them)
    dmabuf_exporter_buffers{exporter,class}, dmabuf_exporter_bytes{exporter,class}
    dmabuf_cgroup_{processes,buffers,bytes,pss_bytes,shared_bytes}{cgroup,unit}   top N cgroups by bytes
    dmabuf_cgroup_device_{bytes,pss_bytes}{cgroup,unit}  their part that is device memory (vfio), never RAM
    dmabuf_process_{buffers,rss_bytes,pss_bytes}{pid,comm}                         top N processes by Rss
    dmabuf_process_device_{rss,pss}_bytes{pid,comm}   their part that is device memory (vfio), never RAM
    dmabuf_heap_present{heap}, dmabuf_heaps, dmabuf_udmabuf_present, dmabuf_heap_mem_accounting
    dmabuf_scan_duration_seconds, dmabuf_scan_timestamp_seconds
    dmabuf_denied_processes, dmabuf_scan_errors{kind}, dmabuf_source_available{source}
    dmabuf_kernel_info{release}                       always 1

Unknown is absent, never NaN or 0: `dmabuf_kernel_only_bytes` is left out when the scan cannot
tell (debugfs bufinfo unreadable, mappings not read, fds not tied to buffers); then
`dmabuf_source_available{source="bufinfo"}` says why and `dmabuf_userspace_bytes` is a lower
bound. `dmabuf_heap_mem_accounting` is left out on kernels without the parameter (before 7.0).

Cardinality is bounded by default: the processes and the cgroups are the top N (`top`, default
20) by bytes, so at most 5N + 7N series of them; `per_process`/`per_cgroup` lift the bound.
`dmabuf_processes` and `dmabuf_cgroups` count them all, so what was left out is their difference
from the series present. The other label sets are small and fixed by the machine: exporters
(drivers), heaps, sources (7), error kinds (4). A cgroup label is the v2 path; processes whose
cgroup is unknown (a v1-only machine, a capture without the file) share `cgroup="(unknown)"`.

Label values are text any process chose (comm, a delegated cgroup's name) or a driver's: each
goes through textsafe.escape(), so a newline, ESC or a byte that is not UTF-8 arrives as a
visible `\\n`, `\\x1b`, `\\xff` (and the exposition escapes quotes and backslashes on top).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dmabuf_inspect.metrics.options import DEFAULT_OPTIONS, MetricOptions
from dmabuf_inspect.metrics.source import Observation
from dmabuf_inspect.model import SCAN_ERROR_KINDS
from dmabuf_inspect.scan.cgroups import cgroup_totals
from dmabuf_inspect.scan.views import exporter_totals
from dmabuf_inspect.textsafe import escape

PREFIX = "dmabuf_"
UNKNOWN_CGROUP = "(unknown)"
SOURCES = ("fdinfo", "maps", "bufinfo", "sysfs", "heaps", "udmabuf", "cgroup")


def _label(text: str | None) -> str:
    return escape(text, none="")


class _Families:
    """The metric families of one observation, in exposition order."""

    def __init__(self) -> None:
        self.out: list[Metric] = []

    def gauge(self, name: str, doc: str, value: float | None) -> None:
        if value is not None:
            self.out.append(GaugeMetricFamily(PREFIX + name, doc, value=value))

    def labelled(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
        self.out.append(family)
        return family


def families(obs: Observation, options: MetricOptions = DEFAULT_OPTIONS) -> list[Metric]:
    """Every metric of `obs`, as prometheus_client metric families."""
    snap = obs.snapshot
    f = _Families()
    t = snap.totals
    f.gauge("buffers", "dma-bufs on the machine (with debugfs bufinfo: also those only the kernel holds).", t.buffers)
    f.gauge("bytes", "Size of all dma-bufs, each counted once.", t.bytes)
    f.gauge(
        "userspace_bytes",
        "Size of the dma-bufs some process holds by fd or mapping (a lower bound when kernel_only_bytes is absent).",
        t.userspace_bytes,
    )
    f.gauge(
        "kernel_only_bytes",
        "Size of the dma-bufs no process holds, only the kernel; absent when the scan cannot tell.",
        t.kernel_only_bytes,
    )
    f.gauge(
        "device_buffers",
        "dma-bufs that are device memory (a PCI BAR exported by vfio-pci), never RAM; part of dmabuf_buffers.",
        t.device_buffers,
    )
    f.gauge(
        "device_bytes",
        "Size of the dma-bufs that are device memory (a PCI BAR exported by vfio-pci), never RAM; "
        "part of dmabuf_bytes.",
        t.device_bytes,
    )
    f.gauge(
        "processes",
        "Processes holding dma-bufs (all of them, also those not exported one by one).",
        len(snap.processes),
    )

    buffers = f.labelled("exporter_buffers", "dma-bufs per exporter and class.", ["exporter", "class"])
    size = f.labelled("exporter_bytes", "Size of the dma-bufs per exporter and class.", ["exporter", "class"])
    for row in exporter_totals(snap):
        labels = [_label(row.exporter), _label(row.exporter_class)]
        buffers.add_metric(labels, row.buffers)
        size.add_metric(labels, row.bytes)

    _cgroups(f, obs, options)
    _processes(f, obs, options)
    _devices(f, obs)
    _scan(f, obs)
    return f.out


def _cgroups(f: _Families, obs: Observation, options: MetricOptions) -> None:
    rows = cgroup_totals(obs.snapshot, obs.cgroup_paths())
    f.gauge("cgroups", "cgroups whose processes hold dma-bufs (all of them).", len(rows))
    if not options.per_cgroup:
        rows = rows[: max(options.top, 0)]
    names = ["cgroup", "unit"]
    processes = f.labelled("cgroup_processes", "Processes of the cgroup holding dma-bufs.", names)
    buffers = f.labelled("cgroup_buffers", "dma-bufs the cgroup's processes hold, each once.", names)
    size = f.labelled("cgroup_bytes", "Size of the dma-bufs the cgroup's processes hold, each buffer once.", names)
    pss = f.labelled("cgroup_pss_bytes", "Proportional share: each buffer's size over its holders, summed.", names)
    shared = f.labelled("cgroup_shared_bytes", "Part of cgroup_bytes that processes of other cgroups hold too.", names)
    dev = f.labelled("cgroup_device_bytes", "Part of cgroup_bytes that is device memory (vfio), never RAM.", names)
    dev_pss = f.labelled(
        "cgroup_device_pss_bytes", "Part of cgroup_pss_bytes that is device memory (vfio), never RAM.", names
    )
    for row in rows:
        labels = [UNKNOWN_CGROUP if row.path is None else _label(row.path), _label(row.unit)]
        processes.add_metric(labels, row.processes)
        buffers.add_metric(labels, row.buffers)
        size.add_metric(labels, row.bytes)
        pss.add_metric(labels, row.pss_bytes)
        shared.add_metric(labels, row.shared_bytes)
        dev.add_metric(labels, row.device_bytes)
        dev_pss.add_metric(labels, row.device_pss_bytes)


def _processes(f: _Families, obs: Observation, options: MetricOptions) -> None:
    procs = sorted(obs.snapshot.processes, key=lambda p: (-p.rss_bytes, p.pid))
    if not options.per_process:
        procs = procs[: max(options.top, 0)]
    names = ["pid", "comm"]
    buffers = f.labelled("process_buffers", "dma-bufs the process holds by fd or mapping.", names)
    rss = f.labelled("process_rss_bytes", "Size of the dma-bufs the process holds by fd or mapping.", names)
    pss = f.labelled("process_pss_bytes", "Each held buffer's size over the number of its holders, summed.", names)
    dev_rss = f.labelled(
        "process_device_rss_bytes", "Part of process_rss_bytes that is device memory (vfio), never RAM.", names
    )
    dev_pss = f.labelled(
        "process_device_pss_bytes", "Part of process_pss_bytes that is device memory (vfio), never RAM.", names
    )
    for p in procs:
        labels = [str(p.pid), _label(p.comm)]
        buffers.add_metric(labels, p.buffers)
        rss.add_metric(labels, p.rss_bytes)
        pss.add_metric(labels, p.pss_bytes)
        dev_rss.add_metric(labels, p.device_rss_bytes)
        dev_pss.add_metric(labels, p.device_pss_bytes)


def _devices(f: _Families, obs: Observation) -> None:
    snap = obs.snapshot
    present = f.labelled("heap_present", "1 for each dma-buf heap in /dev/dma_heap.", ["heap"])
    for heap in snap.heaps:
        present.add_metric([_label(heap.name)], 1)
    f.gauge("heaps", "dma-buf heaps in /dev/dma_heap.", len(snap.heaps))
    udmabuf = snap.udmabuf
    f.gauge("udmabuf_present", "1 when /dev/udmabuf exists.", 1 if udmabuf is not None and udmabuf.present else 0)
    mem = obs.mem_accounting
    f.gauge(
        "heap_mem_accounting",
        "1 when dma-buf heap pages are charged to the allocating task's memory cgroup "
        "(dma_heap.mem_accounting, 7.0+); absent on kernels without it.",
        None if mem is None else int(mem),
    )


def _scan(f: _Families, obs: Observation) -> None:
    snap = obs.snapshot
    f.gauge("scan_duration_seconds", "Wall-clock time of the scan these figures come from.", obs.scan_seconds)
    f.gauge("scan_timestamp_seconds", "Unix time at the end of that scan.", snap.taken_at)
    f.gauge(
        "denied_processes",
        "Processes whose fds or mappings could not be read (permission denied).",
        len(snap.denied_pids),
    )
    errors = f.labelled("scan_errors", "Gaps in the scan by kind (denied, outside, broken, unjoined).", ["kind"])
    counts = dict.fromkeys(SCAN_ERROR_KINDS, 0)
    for e in snap.errors:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    for kind, n in counts.items():
        errors.add_metric([_label(kind)], n)
    available = f.labelled("source_available", "1 when the source could be read, 0 when not.", ["source"])
    sources = dict(snap.sources)
    sources.setdefault("cgroup", "ok" if any(p.cgroup is not None for p in snap.processes) else "unavailable")
    for name in SOURCES:
        if name in sources:
            available.add_metric([name], 1 if sources[name] == "ok" else 0)
    info = f.labelled("kernel_info", "The kernel release; always 1.", ["release"])
    info.add_metric([_label(snap.kernel)], 1)


class DmabufCollector(Collector):
    """A prometheus_client collector: each collect() asks `source` for an observation (a fresh
    scan, or a cached one) and yields its families. No describe(): registering it never scans."""

    def __init__(self, source: Callable[[], Observation], options: MetricOptions = DEFAULT_OPTIONS) -> None:
        self.source = source
        self.options = options

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source(), self.options)


def registry_of(source: Callable[[], Observation], options: MetricOptions = DEFAULT_OPTIONS) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) holding only our collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DmabufCollector(source, options))
    return registry


def exposition(obs: Observation, options: MetricOptions = DEFAULT_OPTIONS) -> bytes:
    """The Prometheus text format (0.0.4) of `obs`, UTF-8."""
    return generate_latest(registry_of(lambda: obs, options))


def write_textfile(path: str, obs: Observation, options: MetricOptions = DEFAULT_OPTIONS) -> None:
    """Write `obs` for node_exporter's textfile collector: to a temporary file in the same
    directory, then rename(2) over `path`, so node_exporter never reads half a file."""
    write_to_textfile(os.fspath(path), registry_of(lambda: obs, options))
