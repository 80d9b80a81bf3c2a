"""The TUI's prose: header totals, the partial-view banner, buffer and process facts, the heap panel.

Pure functions of the model (no textual), so they are tested without a screen. Everything a
process chose goes through `escape`. Advice (mount debugfs, run as root, run the bench) is for
the live machine only: a capture is read as it was taken.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from dmabuf_inspect.bench.cache import ExporterCost
from dmabuf_inspect.model import DENIED, Buffer, Fence, Process, Snapshot
from dmabuf_inspect.scan.diff import Change
from dmabuf_inspect.scan.notes import gap_notes
from dmabuf_inspect.scan.views import Mix, mix_text, plural
from dmabuf_inspect.textsafe import escape
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
        t = snap.totals
        first = (
            f"{plural(t.buffers, 'buffer')}, {human_bytes(t.bytes)} total · "
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
) -> list[tuple[str, str]]:
    """Label/value pairs for the buffer detail screen. The mmap cost is COST (set for this buffer
    by whoever measured it), else BENCH (cached bench medians of its exporter; live machine only)."""
    if cost:
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
        ("Class", b.exporter_class),
        ("Name", escape(b.name, none="(none)")),
        ("References", f"count {b.count if b.count is not None else '?'}: {refs}"),
        ("Kernel-held", kernel),
        ("Processes", str(len(b.holders))),
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


def attachments_lines(b: Buffer, *, bufinfo_ok: bool) -> list[str]:
    if b.attachments:
        return [escape(a) for a in b.attachments]
    return ["none"] if bufinfo_ok else ["unknown (needs debugfs bufinfo)"]


def fences_lines(b: Buffer, *, bufinfo_ok: bool) -> list[str]:
    if b.fences:
        return [fence_text(f) for f in b.fences]
    return ["none"] if bufinfo_ok else ["unknown (needs debugfs bufinfo)"]


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
