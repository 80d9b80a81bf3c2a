"""Tables derived from a snapshot, computed once here for every front end (CLI, JSON, TUI, export).

Each function is the one implementation of its view; signatures stay stable (new needs get new
functions). Text that a process chose is escaped only by the functions whose name ends in `_text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from dmabuf_inspect.model import OUTSIDE, Buffer, Heap, Process, Snapshot, Udmabuf
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.textsafe import escape, json_name
from dmabuf_inspect.units import human_bytes

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any


class ExporterTotal(NamedTuple):
    """The buffers of one exporter: how many, how large, and how much of it only the kernel holds."""

    exporter: str
    exporter_class: str
    buffers: int
    bytes: int
    userspace_bytes: int
    # None when the snapshot cannot tell: debugfs bufinfo unread (kernel-only buffers unlisted), or a
    # buffer of this exporter that no process was seen holding may be held by one unseen
    # (Buffer.kernel_only None). userspace_bytes is then a lower bound where it is below bytes.
    kernel_only_bytes: int | None


def exporter_totals(snap: Snapshot) -> list[ExporterTotal]:
    """One row per (exporter, class), largest first, then by exporter name. A buffer counts as
    kernel-only only when Buffer.kernel_only is True."""
    acc: dict[tuple[str, str], list[int]] = {}  # [buffers, bytes, userspace, kernel-only, unknown]
    for b in snap.buffers:
        row = acc.get((b.exporter, b.exporter_class))
        if row is None:
            row = acc[(b.exporter, b.exporter_class)] = [0, 0, 0, 0, 0]
        row[0] += 1
        row[1] += b.size_bytes
        if b.holders:
            row[2] += b.size_bytes
        elif b.holders_known:
            row[3] += b.size_bytes
        else:
            row[4] += 1
    # every buffer was listed, held or not (debugfs bufinfo, or a BPF dma-buf iterator)
    listed = snap.totals.kernel_only_bytes is not None or any(
        snap.sources.get(s, "").startswith("ok") for s in ("bufinfo", "bpf")
    )
    totals = [
        ExporterTotal(e, c, n, size, user, kern if listed and not unknown else None)
        for (e, c), (n, size, user, kern, unknown) in acc.items()
    ]
    return sorted(totals, key=lambda t: (-t.bytes, t.exporter, t.exporter_class))


def unknown_holders_text(snap: Snapshot) -> str:
    """What a buffer whose holders are unknown (Buffer.kernel_only None) shows instead of them:
    '?' and why, in a word. Never '(kernel)': one may be held by a process that went unseen."""
    if any(p.unjoined_fds for p in snap.processes):
        return "? (fds not tied)"
    if snap.sources.get("maps", "ok") != "ok":
        return "? (maps not read)"
    if snap.denied_pids:
        return "? (processes unreadable)"
    if any(e.kind == OUTSIDE for e in snap.errors):
        return "? (links outside)"
    return "?"


def buffers_cell(p: Process) -> str:
    """A process's buffer count: '3', or '0+2?' when 2 more of its dma-buf fds could not be tied
    to a buffer (Process.unjoined_fds), as the TUI shows it."""
    return f"{p.buffers}+{len(p.unjoined_fds)}?" if p.unjoined_fds else str(p.buffers)


def lower_bound_bytes_text(n: int, p: Process) -> str:
    """A process's Rss or Pss: exact, or with fds not tied to a buffer a lower bound ('≥4.0 MiB'),
    or '?' when nothing at all could be tied."""
    if not p.unjoined_fds:
        return human_bytes(n)
    return f"≥{human_bytes(n)}" if n else "?"


Mix = tuple[tuple[str, int], ...]  # (exporter, buffers), most buffers first, ties by exporter name


def mix_of(buffers: Iterable[Buffer]) -> Mix:
    """The exporters of these buffers, with how many buffers each: most first, ties by name."""
    counts: dict[str, int] = {}
    for b in buffers:
        counts[b.exporter] = counts.get(b.exporter, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def exporter_mix(snap: Snapshot) -> dict[int, Mix]:
    """pid -> the exporters of the buffers it holds (by fd or mapping)."""
    held: dict[int, list[Buffer]] = {}
    for b in snap.buffers:
        for h in b.holders:
            held.setdefault(h.pid, []).append(b)
    return {pid: mix_of(bufs) for pid, bufs in held.items()}


def mix_text(mix: Mix) -> str:
    """'udmabuf:3 system:1', escaped for a terminal."""
    return " ".join(f"{escape(e)}:{n}" for e, n in mix)


# ---- filters: `list`/`buffers` --pid and --exporter ------------------------------------------------


def exporter_names(values: Iterable[str]) -> tuple[str, ...]:
    """What --exporter was given ("udmabuf,SYSTEM", repeatable) as names to match: split at commas,
    stripped, case-folded, empty parts dropped, first occurrence kept."""
    out: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                out[part.strip().casefold()] = None
    return tuple(out)


def exporter_matcher(names: Iterable[str]) -> Callable[[Buffer], bool]:
    """A test for buffers whose exporter or class is one of `names`, case-insensitively."""
    wanted = frozenset(n.casefold() for n in names)
    return lambda b: b.exporter.casefold() in wanted or b.exporter_class.casefold() in wanted


def filter_snapshot(snap: Snapshot, pids: Iterable[int] | None, exporters: Iterable[str] | None) -> Snapshot:
    """The snapshot restricted to the buffers these processes hold and these exporters (names or
    classes, case-insensitive) made; None or empty: no restriction. The processes kept are the
    asked ones (or all) that still hold a buffer, with buffers, Rss and Pss counted over the kept
    buffers only. Totals, sources and errors stay those of the whole snapshot."""
    pid_set = frozenset(pids or ())
    names = tuple(exporters or ())
    if not pid_set and not names:
        return snap
    buffers: Iterable[Buffer] = snap.buffers
    if names:
        buffers = filter(exporter_matcher(names), buffers)
    if pid_set:
        buffers = (b for b in buffers if any(h.pid in pid_set for h in b.holders))
    kept = tuple(buffers)
    per_pid: dict[int, list[int]] = {}  # pid -> [buffers, rss, pss, device rss, device pss]
    device = {d.inode for d in snap.device_memory}  # device-memory buffers (issue 16)
    for b in kept:
        share = b.size_bytes // len(b.holders) if b.holders else 0
        on_device = b.inode in device
        for h in b.holders:
            acc = per_pid.get(h.pid)
            if acc is None:
                acc = per_pid[h.pid] = [0, 0, 0, 0, 0]
            acc[0] += 1
            acc[1] += b.size_bytes
            acc[2] += share
            if on_device:
                acc[3] += b.size_bytes
                acc[4] += share
    processes = tuple(
        p._replace(buffers=acc[0], rss_bytes=acc[1], pss_bytes=acc[2], device_rss_bytes=acc[3], device_pss_bytes=acc[4])
        for p in snap.processes
        if (acc := per_pid.get(p.pid)) is not None and (not pid_set or p.pid in pid_set)
    )
    kept_inodes = {b.inode for b in kept} if device else set()
    device_memory = tuple(d for d in snap.device_memory if d.inode in kept_inodes)
    return snap._replace(buffers=kept, processes=processes, device_memory=device_memory)


def filter_miss_text(snap: Snapshot, pids: Iterable[int] | None, exporters: Iterable[str] | None) -> str | None:
    """Why `filter_snapshot(snap, pids, exporters)` kept no buffer, in one line for a terminal
    ('no process 99999 holds dma-bufs'); None when it kept one or nothing was asked. `snap` is the
    whole snapshot."""
    pid_list = sorted(set(pids or ()))
    names = tuple(exporters or ())
    if not pid_list and not names:
        return None
    if filter_snapshot(snap, pid_list, names).buffers:
        return None
    if pid_list and not filter_snapshot(snap, pid_list, None).buffers:
        denied = [p for p in pid_list if p in snap.denied_pids]
        if denied:
            who = ", ".join(map(str, denied))
            return f"{plural_word(len(denied), 'process')} {who} could not be read (permission denied)"
        who = " or ".join(map(str, pid_list))
        return f"no process {who} holds dma-bufs"
    quoted = " or ".join(repr(n) for n in names)
    if names and not filter_snapshot(snap, None, names).buffers:
        here = sorted({b.exporter for b in snap.buffers})
        classes = sorted({b.exporter_class for b in snap.buffers})
        listed = f"{', '.join(map(escape, here))} (classes: {', '.join(classes)})" if here else "none"
        return f"no buffer from exporter {escape(quoted)}; exporters here: {listed}"
    who = " or ".join(map(str, pid_list))
    return f"process {who} holds no buffer from exporter {escape(quoted)}"


# ---- per-process rows: `list` --------------------------------------------------------------------

PROCESS_SORTS: dict[str, Callable[[Process], tuple[Any, ...]]] = {
    "rss": lambda p: (-p.rss_bytes, p.pid),
    "pss": lambda p: (-p.pss_bytes, p.pid),
    "buffers": lambda p: (-p.buffers, p.pid),
    "pid": lambda p: (p.pid,),
    "comm": lambda p: (p.comm, p.pid),
    "user": lambda p: (p.user, p.pid),
}


class ProcessRow(NamedTuple):
    """One process of the per-process table and the exporters of the buffers it holds."""

    process: Process
    mix: Mix


_RAM_SORTS: dict[str, Callable[[Process], tuple[Any, ...]]] = {
    "rss": lambda p: (-p.ram_rss_bytes, p.pid),
    "pss": lambda p: (-p.ram_pss_bytes, p.pid),
}


def process_rows(snap: Snapshot, sort: str = "rss", *, ram: bool = False) -> list[ProcessRow]:
    """The per-process table, sorted by one of PROCESS_SORTS (largest first for sizes and counts,
    ties by pid); with `ram`, rss and pss sort by their RAM part (Process.ram_rss_bytes), as a
    table that shows device memory apart does. Linear in the holders, plus the sort."""
    mix = exporter_mix(snap)
    key = (_RAM_SORTS.get(sort) if ram else None) or PROCESS_SORTS[sort]
    return [ProcessRow(p, mix.get(p.pid, ())) for p in sorted(snap.processes, key=key)]


BUFFER_SORTS: dict[str, Callable[[Buffer], tuple[Any, ...]]] = {
    "size": lambda b: (-b.size_bytes, b.inode),
    "inode": lambda b: (b.inode,),
    "exporter": lambda b: (b.exporter, -b.size_bytes),
    "holders": lambda b: (-len(b.holders), b.inode),
}


def sorted_buffers(buffers: Iterable[Buffer], sort: str = "size") -> list[Buffer]:
    """Buffers in the order of one of BUFFER_SORTS."""
    return sorted(buffers, key=BUFFER_SORTS[sort])


# ---- devices: `heaps --json` and the `heaps`/`udmabuf` keys of `dump` -------------------------------


def heap_entries(heaps: Sequence[Heap]) -> list[dict[str, Any]]:
    """The JSON of the dma-buf heaps: name (valid UTF-8), dev_path, major, minor, and name_hex with
    the exact bytes when the name is not UTF-8."""
    out = []
    for heap in heaps:
        name, name_hex = json_name(heap.name)
        entry: dict[str, Any] = {
            "name": name,
            "dev_path": json_name(heap.dev_path)[0],
            "major": heap.major,
            "minor": heap.minor,
        }
        if name_hex is not None:
            entry["name_hex"] = name_hex
        out.append(entry)
    return out


def udmabuf_entry(udmabuf: Udmabuf) -> dict[str, Any]:
    """The JSON of /dev/udmabuf: present, dev_path and the module's limits (null where unread)."""
    return {
        "present": udmabuf.present,
        "dev_path": json_name(udmabuf.dev_path)[0],
        "size_limit_mb": udmabuf.size_limit_mb,
        "list_limit": udmabuf.list_limit,
    }


# ---- words ------------------------------------------------------------------------------------------


def plural_word(n: int, word: str) -> str:
    """'process' or 'processes', 'buffer' or 'buffers': the word alone, for n things."""
    if n == 1:
        return word
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def plural(n: int, word: str) -> str:
    """'1 buffer', '2 buffers', '1 process', '3 processes'."""
    return f"{n} {plural_word(n, word)}"
