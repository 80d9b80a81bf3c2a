"""What grew and who made it: the report of a recording, as the document `report --json`
prints (schema `dmabuf-inspect-report/1`, schemas/report-1.schema.json).

    doc = build_report(store.open_read("leak.db"))       # every process, the interesting buffers
    doc = build_report(conn, pids={1234}, comms={"Xwayland"}, all_buffers=True)

`growing` (`is_growing`): a process grew steadily when, over the samples it held buffers in
(at least 4), it ended above where it started, its mean bytes rose from each third of those
samples to the next, and more of its steps went up than down. A process that grew at start-up
and then held steady is not growing, nor one that allocates and frees in turn; one that leaked
a buffer every few seconds is, also with frees in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from dmabuf_inspect.history import store
from dmabuf_inspect.textsafe import json_name

SCHEMA_ID = "dmabuf-inspect-report/1"
MIN_SAMPLES_FOR_GROWING = 4


def is_growing(values: Sequence[int]) -> bool:
    """See the module doc: `values` are one process's bytes at each sample it was seen in."""
    n = len(values)
    if n < MIN_SAMPLES_FOR_GROWING or values[-1] <= values[0]:
        return False
    thirds = (values[: n // 3], values[n // 3 : 2 * n // 3], values[2 * n // 3 :])
    means = [sum(part) / len(part) for part in thirds]
    if not (means[0] < means[1] < means[2]):
        return False
    ups = sum(1 for a, b in pairwise(values) if b > a)
    downs = sum(1 for a, b in pairwise(values) if b < a)
    return ups > downs


def expand_steps(steps: Sequence[tuple[int, int]], first: int, last: int) -> list[int]:
    """A step function [(sample, value), ...] (sorted, starting at `first`) as one value per
    sample from `first` to `last`."""
    out: list[int] = []
    value = 0
    at = 0
    for sample in range(first, last + 1):
        while at < len(steps) and steps[at][0] <= sample:
            value = steps[at][1]
            at += 1
        out.append(value)
    return out


def _name(blob: bytes | str | None) -> str | None:
    return json_name(store.from_blob(blob))[0]


def _start_time(meta: dict[str, str], start_ticks: int | None) -> float | None:
    boot = store.meta_json(meta, "boot_time")
    hz = store.meta_json(meta, "clock_ticks")
    if start_ticks is None or not isinstance(boot, (int, float)) or not isinstance(hz, int) or hz <= 0:
        return None
    return float(boot) + start_ticks / hz


def _processes(
    conn: sqlite3.Connection, meta: dict[str, str], end: int, wanted: set[int] | None
) -> list[dict[str, Any]]:
    steps: dict[int, list[tuple[int, int, int]]] = {}
    for pid_row, sample, nbytes, nbuffers in conn.execute(
        "SELECT process_id, sample_id, bytes, buffers FROM process_totals ORDER BY process_id, sample_id"
    ):
        steps.setdefault(pid_row, []).append((sample, nbytes, nbuffers))
    out = []
    for pid_row, pid, start_ticks, comm_blob, cmdline_blob, first, last in conn.execute(
        "SELECT id, pid, start_ticks, comm, cmdline, first_sample, last_sample FROM processes ORDER BY id"
    ):
        comm = store.from_blob(comm_blob) or ""
        if wanted is not None and pid not in wanted:
            continue
        rows = steps.get(pid_row, [])
        if not rows:
            continue
        until = end if last is None else last
        byte_values = expand_steps([(s, b) for s, b, _ in rows], first, until)
        buffer_values = expand_steps([(s, n) for s, _, n in rows], first, until)
        if not byte_values:
            continue
        at_end = rows[-1] if last is None else (end, 0, 0)
        out.append(
            {
                "pid": pid,
                "start_ticks": start_ticks,
                "start_time": _start_time(meta, start_ticks),
                "comm": json_name(comm)[0],
                "cmdline": _name(cmdline_blob),
                "first_seen_sample": first,
                "last_seen_sample": until,
                "alive_at_end": last is None,
                "first_bytes": byte_values[0],
                "last_bytes": at_end[1],
                "max_bytes": max(byte_values),
                "first_buffers": buffer_values[0],
                "last_buffers": at_end[2],
                "max_buffers": max(buffer_values),
                "growth_bytes": at_end[1] - byte_values[0],
                "growing": is_growing(byte_values),
            }
        )
    out.sort(key=lambda p: (not p["growing"], -p["growth_bytes"], -p["last_bytes"], p["pid"]))
    return out


def _creator(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if row is None or row[0] is None:
        return None
    pid, start_ticks, tid, comm, when = row
    return {"pid": pid, "start_ticks": start_ticks, "tid": tid, "comm": _name(comm), "time": when}


def _selected_pids(conn: sqlite3.Connection, pids: set[int] | None, comms: set[str] | None) -> set[int] | None:
    """The pids that --pid and --comm select (either one), or None for all."""
    if not pids and not comms:
        return None
    wanted = set(pids or ())
    if comms:
        wanted.update(
            pid for pid, comm in conn.execute("SELECT pid, comm FROM processes") if store.from_blob(comm) in comms
        )
    return wanted


def _buffers(
    conn: sqlite3.Connection,
    end: int,
    sample_time: dict[int, float],
    kernel_only_known: bool,
    wanted: set[int] | None,
    comms: set[str] | None,
    all_buffers: bool,
) -> list[dict[str, Any]]:
    holders: dict[int, list[int]] = {}
    for buffer_id, pid in conn.execute(
        "SELECT h.buffer_id, p.pid FROM holdings h JOIN processes p ON p.id = h.process_id"
        " WHERE h.last_sample IS NULL ORDER BY h.buffer_id, p.pid"
    ):
        holders.setdefault(buffer_id, []).append(pid)
    where = "" if all_buffers else " WHERE b.last_sample IS NULL"
    out = []
    for row in conn.execute(
        "SELECT b.id, b.inode, b.size_bytes, b.exporter, b.name, b.first_sample, b.last_sample,"
        " c.pid, c.start_ticks, c.tid, c.comm, c.time"
        " FROM buffers b LEFT JOIN creators c ON c.id = b.creator_id" + where + " ORDER BY b.id"
    ):
        bid, inode, size, exporter, name, first, last = row[:7]
        creator = _creator(row[7:])
        alive = last is None
        held_by = holders.get(bid, []) if alive else []
        kernel_only = (alive and not held_by) if kernel_only_known else None
        created_during = first > 1
        if not all_buffers and not ((created_during and alive) or kernel_only):
            continue
        if wanted is not None and not (
            set(held_by) & wanted
            or (creator is not None and (creator["pid"] in wanted or (comms and creator["comm"] in comms)))
        ):
            continue
        out.append(
            {
                "inode": inode,
                "size_bytes": size,
                "exporter": exporter,
                "name": _name(name),
                "first_seen": sample_time.get(first),
                "last_seen": sample_time.get(end if alive else last),
                "created_during": created_during,
                "alive_at_end": alive,
                "creator": creator,
                "holders_at_end": held_by,
                "kernel_only_at_end": kernel_only,
            }
        )
    return out


def group_new_alive(buffers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Buffers made during the recording and alive at its end, by creator and exporter."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for b in buffers:
        if not (b["created_during"] and b["alive_at_end"]):
            continue
        c = b["creator"]
        key = (None, None, None) if c is None else (c["pid"], c["start_ticks"], c["comm"])
        g = groups.setdefault(
            (*key, b["exporter"]),
            {
                "creator": None if c is None else {"pid": c["pid"], "start_ticks": c["start_ticks"], "comm": c["comm"]},
                "exporter": b["exporter"],
                "buffers": 0,
                "bytes": 0,
                "holders_at_end": set(),
                "kernel_only": 0,
            },
        )
        g["buffers"] += 1
        g["bytes"] += b["size_bytes"]
        g["holders_at_end"].update(b["holders_at_end"])
        g["kernel_only"] += 1 if b["kernel_only_at_end"] else 0
    out = list(groups.values())
    for g in out:
        g["holders_at_end"] = sorted(g["holders_at_end"])
    out.sort(key=lambda g: (-g["bytes"], -g["buffers"]))
    return out


def build_report(
    conn: sqlite3.Connection,
    *,
    pids: set[int] | None = None,
    comms: set[str] | None = None,
    all_buffers: bool = False,
) -> dict[str, Any]:
    """The report document of the recording behind `conn`."""
    meta = store.meta(conn)
    samples = conn.execute(
        "SELECT id, time, bytes, buffers, kernel_only_bytes, kernel_only_buffers FROM samples ORDER BY id"
    ).fetchall()
    end = samples[-1][0] if samples else 0
    sample_time = {s[0]: s[1] for s in samples}
    kernel_only_known = bool(samples) and samples[-1][4] is not None
    tracing = meta.get("tracing", "unavailable: unknown")
    started = store.meta_json(meta, "started")
    ended = store.meta_json(meta, "ended")
    if not isinstance(ended, (int, float)):
        ended = samples[-1][1] if samples else started  # killed before it could say (SIGKILL)
    wanted = _selected_pids(conn, pids, comms)
    buffers = _buffers(conn, end, sample_time, kernel_only_known, wanted, comms, all_buffers)
    lost = store.meta_json(meta, "lost_events")
    if lost is None and tracing == "ok" and samples:
        lost = conn.execute("SELECT lost_events FROM samples WHERE id = ?", (end,)).fetchone()[0]
    short_lived = [
        {"pid": pid, "start_ticks": st, "comm": _name(comm), "exports": n, "bytes": nbytes}
        for pid, st, comm, n, nbytes in conn.execute(
            "SELECT pid, start_ticks, comm, exports, bytes FROM short_lived ORDER BY bytes DESC, pid"
        )
        if wanted is None or pid in wanted
    ]
    return {
        "schema": SCHEMA_ID,
        "kernel": meta.get("kernel", "unknown"),
        "started": started,
        "ended": ended,
        "samples": len(samples),
        "interval_s": store.meta_json(meta, "interval_s"),
        "stopped_by": meta.get("stopped_by"),
        "tracing": tracing,
        "lost_events": lost if tracing == "ok" else None,
        "sources": store.meta_json(meta, "sources", {}),
        "processes": _processes(conn, meta, end, wanted),
        "buffers": buffers,
        "new_alive_by_creator": group_new_alive(buffers),
        "short_lived": short_lived,
        "totals": [
            {"time": t, "bytes": nbytes, "buffers": nbuf, "kernel_only_bytes": ko}
            for _, t, nbytes, nbuf, ko, _ in samples
        ],
    }
