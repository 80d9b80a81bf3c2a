"""The TUI's prose: header totals, the partial-view banner, buffer and process facts, the heap panel.

Pure functions of the model (no textual), so they are tested without a screen. Everything a
process chose goes through `escape`. Advice (mount debugfs, run as root, run the bench) is for
the live machine only: a capture is read as it was taken.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

from dmabuf_inspect.bench.cache import ExporterCost
from dmabuf_inspect.exporters import entries, is_device_memory
from dmabuf_inspect.history.chart import sparkline
from dmabuf_inspect.model import DENIED, UNKNOWN_DEVICE, Buffer, DeviceMemory, Fence, Process, Snapshot
from dmabuf_inspect.scan.cgroups import CgroupTotal
from dmabuf_inspect.scan.diff import Change
from dmabuf_inspect.scan.notes import gap_notes
from dmabuf_inspect.scan.views import Mix, mix_text, plural
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.tui.historyview import HistoryFrame, age_text
from dmabuf_inspect.tui.proclook import ProcessLook
from dmabuf_inspect.units import human_bytes

DEBUGFS_HINT = "mount -t debugfs none /sys/kernel/debug"
PAUSED = "PAUSED"


def clock_text(taken_at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(taken_at))


def bufinfo_read(snap: Snapshot) -> bool:
    return snap.sources.get("bufinfo") == "ok"


def unjoined_fds(snap: Snapshot) -> int:
    """How many dma-buf fds could not be tied to a buffer (Process.unjoined_fds)."""
    return sum(len(p.unjoined_fds) for p in snap.processes)


def kernel_only_text(snap: Snapshot, *, live: bool) -> str:
    """'1.0 MiB kernel-only', or why the snapshot cannot tell."""
    t = snap.totals
    if t.kernel_only_bytes is not None:
        return f"{human_bytes(t.kernel_only_bytes)} kernel-only"
    unjoined = unjoined_fds(snap)
    if unjoined:
        return f"kernel-only unknown ({plural(unjoined, 'fd')} not tied to a buffer)"
    if not bufinfo_read(snap):
        return "kernel-only unknown (no debugfs bufinfo" + (")" if live else " in the capture)")
    return "kernel-only unknown"


def userspace_text(snap: Snapshot) -> str:
    """'18.1 MiB held by processes'; a lower bound ('≥') when some fds could not be tied to a buffer."""
    n = snap.totals.userspace_bytes
    if not unjoined_fds(snap):
        return f"{human_bytes(n)} held by processes"
    return f"{'≥' + human_bytes(n) if n else '?'} held by processes"


def total_text(snap: Snapshot) -> str:
    """'19.1 MiB total'; with device memory (class vfio: a PCI BAR), its bytes apart from RAM's:
    '19.1 MiB RAM + 8.0 KiB device memory'."""
    t = snap.totals
    if not t.device_bytes:
        return f"{human_bytes(t.bytes)} total"
    return f"{human_bytes(t.ram_bytes)} RAM + {human_bytes(t.device_bytes)} device memory"


def header_lines(
    snap: Snapshot | None,
    *,
    source: str,
    live: bool = True,
    paused: bool,
    interval_s: float,
    scanning: bool,
) -> tuple[str, str]:
    """Two header lines: what is held where, then the state of the refresh (first, so that a
    narrow terminal cuts the source and the kernel, never PAUSED)."""
    if snap is None:
        first = "dmabuf-inspect · first scan…"
    else:
        first = (
            f"{plural(snap.totals.buffers, 'buffer')}, {total_text(snap)} · "
            f"{userspace_text(snap)} · {kernel_only_text(snap, live=live)}"
        )
    parts = [PAUSED if paused else f"every {interval_s:g}s"]
    if scanning:
        parts.append("scanning…")
    if snap is not None:
        parts.append(f"updated {clock_text(snap.taken_at)}")
        parts.append(plural(len(snap.processes), "process"))
        parts.append(f"kernel {escape(snap.kernel)}")
    parts.append(source)
    return first, " · ".join(parts)


def banner_lines(snap: Snapshot | None, error: str | None = None, *, live: bool = True) -> list[str]:
    """Why the view is partial and, on the live machine, how to see more; empty when nothing is missing."""
    lines: list[str] = []
    if error:
        lines.append(f"Last scan failed: {escape(error)}. Showing the previous one; r retries.")
    if snap is None:
        return lines
    for note in gap_notes(snap):
        text = note.text
        if not live and note.kind == DENIED:  # its advice (run as root) is for the live machine
            n = len(snap.denied_pids)
            text = (
                f"{plural(n, 'process')} could not be read in the capture (permission denied); "
                "`dmabuf-inspect dump` lists them under errors"
            )
        elif live and note.kind == "bufinfo":
            if os.geteuid() != 0:
                text += f"; run as root to see them (with debugfs mounted: {DEBUGFS_HINT})"
            else:
                text += f"; mount debugfs to see them: {DEBUGFS_HINT}"
        lines.append(escape(text))
    return lines


def fence_text(f: Fence) -> str:
    """`write: vgem unbound seq 1 unsignalled`; parts the kernel left empty are left out
    (7.3 prints no driver or timeline for a signalled fence)."""
    parts = [
        escape(f.driver) if f.driver else "",
        escape(f.timeline) if f.timeline else "",
        f"ctx {escape(f.context)}" if f.context else "",
        f"seq {escape(f.seqno)}" if f.seqno else "",
        "signalled" if f.signaled else "unsignalled",
    ]
    return f"{escape(f.usage)}: " + " ".join(p for p in parts if p)


NOT_MEASURED = "not measured: run `dmabuf-inspect bench`"
NOT_MEASURED_DEVICE = "not measured: device memory (a PCI BAR, not RAM: `dmabuf-inspect bench` refuses it)"
DEVICE_MEMORY = "device memory (a PCI BAR exported by vfio-pci), not RAM"
REGION_UNKNOWN = "unknown: no kernel (up to 7.3) prints which BAR or range a VFIO dma-buf exports"
NOT_MEASURED_CAPTURE = "not measured (`dmabuf-inspect bench` measures the live machine, not a capture)"


def _times(ratio: float | None) -> str:
    return f" (x{ratio:.2f} anon)" if ratio is not None else ""


def bench_cost_facts(cost: ExporterCost) -> list[tuple[str, str]]:
    """The cached bench medians of a buffer's exporter, at the measured size nearest its size."""
    touch = (
        f"first touch {cost.first_touch_ns_per_page:.0f} ns/page{_times(cost.first_touch_vs_anon)}"
        if cost.first_touch_ns_per_page is not None
        else "first touch -"
    )
    figures = (("read", cost.read_mib_s, cost.read_vs_anon), ("write", cost.write_mib_s, cost.write_vs_anon))
    bandwidth = [f"{label} {value:.0f} MiB/s{_times(ratio)}" for label, value, ratio in figures if value is not None]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cost.measured_at))
    return [
        ("mmap cost", f"{touch}, {escape(cost.exporter)} at {human_bytes(cost.size_bytes)}"),
        ("", " · ".join(bandwidth) if bandwidth else "bandwidth -"),
        ("Measured", f"{when} by `dmabuf-inspect bench` (kernel {escape(cost.kernel)})"),
    ]


def buffer_facts(
    b: Buffer,
    change: Change,
    cost: str | None,
    *,
    bufinfo_ok: bool,
    bench: ExporterCost | None = None,
    bench_problem: str | None = None,
    live: bool = True,
    history: Sequence[tuple[str, str]] = (),
    device: DeviceMemory | None = None,
) -> list[tuple[str, str]]:
    """Label/value pairs for the buffer detail screen. The mmap cost is COST (set for this buffer
    by whoever measured it), else BENCH (cached bench medians of its exporter; live machine only);
    device memory is never measured. HISTORY: its first sighting and creator
    (`buffer_history_facts`), shown after its holders. DEVICE: which device a device-memory
    buffer lives in (Snapshot.device_memory), as far as the kernel tells."""
    device_memory = is_device_memory(b.exporter)
    if device_memory:
        cost_facts = [("mmap cost", NOT_MEASURED_DEVICE)]
    elif cost:
        cost_facts = [("mmap cost", cost)]
    elif not live:
        cost_facts = [("mmap cost", NOT_MEASURED_CAPTURE)]
    elif bench is not None:
        cost_facts = bench_cost_facts(bench)
    elif bench_problem:
        cost_facts = [("mmap cost", f"{NOT_MEASURED} (cached result unreadable: {escape(bench_problem)})")]
    else:
        cost_facts = [("mmap cost", NOT_MEASURED)]
    refs = f"{b.fd_refs} fd + {b.map_refs} mapping"
    if b.count is None:
        kernel = "unknown (no source printed the reference count)"
    elif b.kernel_refs is None:
        kernel = "unknown (its fds could not be told apart from the kernel's references)"
    else:
        kernel = str(b.kernel_refs)
    facts = [
        ("Inode", str(b.inode) if b.inode >= 0 else "unknown (no source printed it)"),
        ("Size", f"{human_bytes(b.size_bytes)} ({b.size_bytes} bytes, from {b.size_source})"),
        ("Exporter", escape(b.exporter)),
        ("Class", f"{b.exporter_class}: {DEVICE_MEMORY}" if device_memory else b.exporter_class),
        *([("Device", device_text(device)), ("Region", region_text(device))] if device_memory else []),
        ("Name", escape(b.name, none="(none)")),
        ("References", f"count {b.count if b.count is not None else '?'}: {refs}"),
        ("Kernel-held", kernel),
        ("Processes", str(len(b.holders))),
        *history,
        *cost_facts,
    ]
    if not bufinfo_ok:
        why = f"debugfs bufinfo unreadable ({DEBUGFS_HINT}, as root)" if live else "the capture has no debugfs bufinfo"
        facts.append(("Importers", f"unknown: {why}"))
    if change is not Change.SAME:
        facts.append(
            (
                "Since last",
                {Change.NEW: "new", Change.GREW: "grew", Change.GONE: "GONE (last seen in the previous scan)"}[change],
            )
        )
    return facts


def device_text(d: DeviceMemory | None) -> str:
    """'0000:00:04.0 (why we know)', or 'unknown (why)': never a guess."""
    if d is None:
        return f"{UNKNOWN_DEVICE} (the scan did not look for its device)"
    return f"{escape(d.pci_address)} ({escape(d.why)})"


def region_text(d: DeviceMemory | None) -> str:
    return REGION_UNKNOWN if d is None or d.region is None else f"region {d.region}"


def attachments_lines(b: Buffer, *, bufinfo_ok: bool) -> list[str]:
    if b.attachments:
        return [escape(a) for a in b.attachments]
    return ["none"] if bufinfo_ok else ["unknown (needs debugfs bufinfo)"]


def fences_lines(b: Buffer, *, bufinfo_ok: bool) -> list[str]:
    if b.fences:
        return [fence_text(f) for f in b.fences]
    return ["none"] if bufinfo_ok else ["unknown (needs debugfs bufinfo)"]


def cgroups_empty_text(snap: Snapshot) -> str:
    """What the cgroup panel shows when it has no row: why the cgroups are unknown, or that no
    process holds a dma-buf."""
    source = snap.sources.get("cgroup")
    if source is None:
        return "cgroups not read by this scan"
    if source != "ok":
        return f"cgroups unknown: {escape(source.removeprefix('unavailable: '))}"
    return "no process holds a dma-buf"


def cgroup_facts_lines(t: CgroupTotal, command_of: Callable[[int], str]) -> list[str]:
    """The highlighted cgroup, under the panel: its whole path, its processes and the buffers it
    shares with other cgroups. COMMAND_OF: a pid's escaped comm."""
    path = "unknown (its processes' /proc/PID/cgroup has no cgroup v2 path)" if t.path is None else escape(t.path)
    procs = ", ".join(f"{pid} {command_of(pid)}" for pid in t.pids[:MAX_LISTED])
    if len(t.pids) > MAX_LISTED:
        procs += f", and {len(t.pids) - MAX_LISTED} more"
    lines = [f"Cgroup     {path}", f"Unit       {escape(t.unit, none='none named by the path')}"]
    lines.append(f"Processes  {procs or '-'}")
    if t.shared_inodes:
        inodes = ", ".join(map(str, t.shared_inodes[:MAX_LISTED]))
        if len(t.shared_inodes) > MAX_LISTED:
            inodes += f", and {len(t.shared_inodes) - MAX_LISTED} more"
        lines.append(f"Shared     {human_bytes(t.shared_bytes)} in {plural(t.shared_buffers, 'buffer')}: {inodes}")
    return lines


MAX_LISTED = 12
DEVICE_CLASSES = tuple(dict.fromkeys(e.exporter_class for e in entries() if e.device_memory))


def device_memory_note(snap: Snapshot) -> str | None:
    """Under the exporter table, when some buffers are device memory: which class rows are not
    RAM, and how much; None when there are none."""
    t = snap.totals
    if not t.device_bytes and not t.device_buffers:
        return None
    classes = "/".join(DEVICE_CLASSES)
    return (
        f"{classes}: device memory, not RAM (a PCI BAR): "
        f"{human_bytes(t.device_bytes)} in {plural(t.device_buffers, 'buffer')}"
    )


def heap_lines(snap: Snapshot) -> list[str]:
    """The heap panel: /dev/dma_heap devices and udmabuf."""
    lines: list[str] = []
    if snap.heaps:
        width = max(len(escape(h.name)) for h in snap.heaps)
        for h in snap.heaps:
            dev = "" if h.major is None else f" {h.major}:{h.minor}"
            lines.append(f"{escape(h.name):<{width}}  {escape(h.dev_path)}{dev}")
    else:
        lines.append("no dma-heaps")
    u = snap.udmabuf
    if u is None or not u.present:
        lines.append("udmabuf  absent")
    else:
        limits = []
        if u.size_limit_mb is not None:
            limits.append(f"size_limit_mb {u.size_limit_mb}")
        if u.list_limit is not None:
            limits.append(f"list_limit {u.list_limit}")
        lines.append(f"udmabuf  {escape(u.dev_path)}")
        if limits:
            lines.append("  " + " · ".join(limits))
    return lines


def sources_line(sources: Mapping[str, str]) -> str:
    missing = sorted(k for k, v in sources.items() if v != "ok")
    return "all sources read" if not missing else "missing: " + ", ".join(missing)


LOOKING = "…"


def parents_text(p: Process, look: ProcessLook) -> str:
    """'300 gst-launch-1.0 ← 250 bash ← 1 systemd'; where the chain stops early, why."""
    links = [f"{p.pid} {escape(p.comm)}"]
    links.extend(f"{pid} {escape(comm, none='?')}" for pid, comm in look.parents)
    text = " ← ".join(links)
    if look.parents_problem:
        text += f" (stops: {escape(look.parents_problem)})"
    return text


def process_facts(
    p: Process,
    mix: Mix,
    look: ProcessLook | None,
    *,
    live: bool,
    change: Change = Change.SAME,
    history: str | None = None,
) -> list[tuple[str, str]]:
    """Label/value pairs for the process detail screen: the scan's view of the process (its
    dma-bufs), then psutil's (its own memory, its parents) on the live machine. LOOK None: psutil
    has not answered yet."""
    uid = f" (uid {p.uid})" if p.uid is not None else ""
    facts = [
        ("PID", str(p.pid)),
        ("Command", escape(p.comm)),
        ("User", f"{escape(p.user)}{uid}"),
        ("Cmdline", escape(p.cmdline) if p.cmdline else f"[{escape(p.comm)}]"),
        (
            "Dma-bufs",
            f"{plural(p.buffers, 'buffer')}, {human_bytes(p.rss_bytes)} (Pss {human_bytes(p.pss_bytes)})",
        ),
        ("Exporters", mix_text(mix) or "-"),
    ]
    if p.device_rss_bytes:
        facts.insert(
            5,
            (
                "",
                f"{human_bytes(p.ram_rss_bytes)} RAM (Pss {human_bytes(p.ram_pss_bytes)}) + "
                f"{human_bytes(p.device_rss_bytes)} device memory (Pss {human_bytes(p.device_pss_bytes)}), not RAM",
            ),
        )
    if history is not None:
        facts.append(("History", history))
    if not live:
        ppid = f" (the capture records parent pid {p.ppid})" if p.ppid is not None else ""
        facts.append(("Memory", "not available for a capture: only the live machine's processes can be asked"))
        facts.append(("Parents", f"not available for a capture{ppid}"))
    elif change is Change.GONE:
        facts.append(("Memory", "not asked: the process has exited"))
    elif look is None:
        facts.append(("Memory", LOOKING))
        facts.append(("Parents", LOOKING))
    elif look.gone is not None:
        facts.append(("Memory", f"unknown: {escape(look.gone)}"))
    else:
        parts = [f"RSS {human_bytes(look.rss_bytes)}" if look.rss_bytes is not None else "RSS unknown"]
        parts.append(f"USS {human_bytes(look.uss_bytes)}" if look.uss_bytes is not None else "USS unknown")
        memory = " · ".join(parts) + " (its own memory, now)"
        if look.memory_problem:
            memory += f"; {escape(look.memory_problem)}"
        facts.append(("Memory", memory))
        facts.append(("Parents", parents_text(p, look)))
    if change is not Change.SAME:
        since = {Change.NEW: "new", Change.GREW: "grew", Change.GONE: "GONE (last seen in the previous scan)"}[change]
        facts.append(("Since last", since))
    return facts


# -- history ------------------------------------------------------------------------------------

CAPTURE_FLAT = "A capture: the same files each refresh, so flat"
SPARK_MAX = 60


def buffer_history_facts(frame: HistoryFrame, inode: int, now: float) -> list[tuple[str, str]]:
    """When this session first saw the buffer, and who exported it (traced) or why that is unknown."""
    if not frame.live:
        return [("First seen", "unknown: a capture records no ages"), ("Creator", f"unknown: tracing {frame.tracing}")]
    seen = frame.seen_at(inode)
    at_start = frame.was_there_at_start(inode)
    if seen is None:
        first = "unknown"
    elif at_start:
        age = age_text(now - seen, at_least=True)
        first = f"{clock_text(seen)} or earlier: there at this session's first refresh ({age})"
    else:
        first = f"{clock_text(seen)} ({age_text(now - seen)} ago)"
    c = frame.creator_of(inode)
    if c is not None:
        creator = f"{c.pid} {escape(c.comm, none='?')} at {clock_text(c.time)} (its dma_buf_export, traced)"
    elif frame.tracing != "ok":
        creator = f"unknown: tracing {frame.tracing}"
    elif at_start:
        creator = "unknown: made before this session's trace began"
    else:
        creator = "unknown: no export of it was traced"
    return [("First seen", first), ("Creator", creator)]


def _known(series: Sequence[int | None] | None) -> list[int] | None:
    """The values of a series, or None when there are none or some are unknown (no bufinfo)."""
    if not series or None in series:
        return None
    return [v for v in series if v is not None]


def history_line(frame: HistoryFrame, pid: int | None, who: str, width: int) -> str:
    """One line: the session's total and the highlighted process (WHO), one block per refresh,
    the newest on the right; a process seen for fewer refreshes starts further right. The
    sparklines share what WIDTH leaves; the head goes first when that is too little. A capture
    shows its total only, and says why it is flat."""
    n = frame.refreshes
    if not n:
        return "History: no refresh yet"
    entries: list[tuple[str, list[int] | None, str]] = [("total", list(frame.total_bytes), "")]
    if pid is not None and frame.live:
        series = frame.series_of(pid)
        values = _known(series)
        why = "no history" if not series else "unknown (no debugfs bufinfo)"
        entries.append((who, values, why))
    sparks = sum(1 for _, values, _ in entries if values is not None)

    def texts(w: int, with_head: bool) -> list[str]:
        if not frame.live:
            out = [CAPTURE_FLAT]
        elif with_head:
            shown = min(n, w) if w else n
            out = [f"History: {plural(shown, 'refresh')} over {age_text(frame.times[-1] - frame.times[-shown])}"]
        else:
            out = []
        for label, values, why in entries:
            if values is None:
                out.append(f"{label} {why}")
            else:
                spark = sparkline(values, w).rjust(min(n, w)) if w else ""
                out.append(f"{label} {spark} {human_bytes(values[-1])}")
        return out

    for with_head in (True, False):
        w = (width - 2 - len(" · ".join(texts(0, with_head)))) // max(sparks, 1)  # 2: the head's digits may grow
        if w >= 8:
            break
    return " · ".join(texts(max(1, min(SPARK_MAX, w)), with_head))


def process_history_text(frame: HistoryFrame, pid: int, width: int = 40) -> str:
    """The process detail's history: its bytes at each refresh it was seen."""
    values = _known(frame.series_of(pid))
    if values is None:
        return "none"
    n = len(values)
    over = plural(n, "refresh") if n <= width else f"the last {width} of {plural(n, 'refresh')}"
    text = f"{sparkline(values, width)} {human_bytes(values[-1])} now, over {over}"
    if not frame.live:
        text += " (a capture: the same files at each refresh, so flat)"
    return text


def tracing_help(tracing: str) -> str:
    """The help's line about creators: traced, or why not."""
    if tracing == "ok":
        return "traced: the dma_buf tracepoints, in a tracefs instance of our own, removed on exit"
    return f"not known: tracing {tracing}"
