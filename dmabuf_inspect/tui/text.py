"""The TUI's prose: header totals, the partial-view banner, buffer facts, the heap panel.

Pure functions of the model (no textual), so they are tested without a screen. Everything a
process chose goes through `escape`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from dmabuf_inspect.bench.cache import ExporterCost
from dmabuf_inspect.model import Buffer, Fence, Snapshot
from dmabuf_inspect.scan.diff import Change
from dmabuf_inspect.scan.notes import partial_notes
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import human_bytes

DEBUGFS_HINT = "mount -t debugfs none /sys/kernel/debug"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s" if not word.endswith("s") else f"{n} {word}es"


def clock_text(taken_at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(taken_at))


def header_lines(
    snap: Snapshot | None,
    *,
    source: str,
    paused: bool,
    interval_s: float,
    scanning: bool,
) -> tuple[str, str]:
    """Two header lines: what is held where, then the state of the live refresh."""
    if snap is None:
        first = "dmabuf-inspect · first scan…"
    else:
        t = snap.totals
        kernel = (
            f"{human_bytes(t.kernel_only_bytes)} kernel-only"
            if t.kernel_only_bytes is not None
            else "kernel-only unknown (no debugfs)"
        )
        first = (
            f"dmabuf-inspect · {plural(t.buffers, 'buffer')} · {human_bytes(t.bytes)} total · "
            f"{human_bytes(t.userspace_bytes)} held by processes · {kernel}"
        )
    state = "PAUSED" if paused else f"every {interval_s:g}s"
    parts = []
    if snap is not None:
        parts.append(plural(len(snap.processes), "process"))
        parts.append(f"kernel {escape(snap.kernel)}")
    parts.append(source)
    if snap is not None:
        parts.append(f"updated {clock_text(snap.taken_at)}")
    parts.append(state)
    if scanning:
        parts.append("scanning…")
    return first, " · ".join(parts)


def banner_lines(snap: Snapshot | None, error: str | None = None) -> list[str]:
    """Why the view is partial and how to see more; empty when nothing is missing."""
    lines: list[str] = []
    if error:
        lines.append(f"Last scan failed: {escape(error)}. Showing the previous one; r retries.")
    if snap is not None:
        for note in partial_notes(snap):
            if note.startswith("debugfs"):
                if os.geteuid() != 0:
                    note += f"; run as root to see them (with debugfs mounted: {DEBUGFS_HINT})"
                else:
                    note += f"; mount debugfs to see them: {DEBUGFS_HINT}"
            lines.append(escape(note))
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
) -> list[tuple[str, str]]:
    """Label/value pairs for the buffer detail screen. The mmap cost is COST (set for this buffer
    by whoever measured it), else BENCH (cached bench medians of its exporter)."""
    if cost:
        cost_facts = [("mmap cost", cost)]
    elif bench is not None:
        cost_facts = bench_cost_facts(bench)
    elif bench_problem:
        cost_facts = [("mmap cost", f"{NOT_MEASURED} (cached result unreadable: {escape(bench_problem)})")]
    else:
        cost_facts = [("mmap cost", NOT_MEASURED)]
    refs = f"{b.fd_refs} fd + {b.map_refs} mapping"
    if b.count is None:
        kernel = "unknown (no source printed the reference count)"
    else:
        kernel = str(b.kernel_refs if b.kernel_refs is not None else "?")
    facts = [
        ("Inode", str(b.inode)),
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
        facts.append(("Importers", f"unknown: debugfs bufinfo unreadable ({DEBUGFS_HINT}, as root)"))
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
