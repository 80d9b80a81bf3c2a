"""What grew and who made it, from a recording: growth per process, new buffers by creator, totals.

Reads a file written by `dmabuf-inspect record` (also while it is still recording). --json
prints the document described by schemas/report-1.schema.json (schema dmabuf-inspect-report/1).
--svg and --png write the totals over time as a picture for a bug report (PNG needs Pillow:
pip install 'dmabuf-inspect[png]').
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any

from dmabuf_inspect.cli.tables import human_bytes, render_table
from dmabuf_inspect.history import store
from dmabuf_inspect.history.report import build_report
from dmabuf_inspect.textsafe import escape

NAME = "report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording made by `dmabuf-inspect record`")
    parser.add_argument("--json", action="store_true", help="the report as JSON (schema dmabuf-inspect-report/1)")
    parser.add_argument("--pid", type=int, action="append", metavar="PID", help="only this process (repeatable)")
    parser.add_argument("--comm", action="append", metavar="NAME", help="only processes with this comm (repeatable)")
    parser.add_argument(
        "--all-buffers", action="store_true", help="every buffer seen, not only new-and-alive and kernel-only ones"
    )
    parser.add_argument("--svg", metavar="FILE", help="write the totals over time as SVG")
    parser.add_argument("--png", metavar="FILE", help="write the totals over time as PNG (needs Pillow)")
    parser.add_argument("--no-chart", action="store_true", help="no chart in the terminal")


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


def _who(creator: dict[str, Any] | None) -> str:
    if creator is None:
        return "unknown"
    return f"{escape(creator['comm'])}[{creator['pid']}]"


def render(doc: dict[str, Any]) -> str:
    out = []
    duration = (doc["ended"] or 0) - (doc["started"] or 0)
    lost = doc["lost_events"]
    tracing = (
        doc["tracing"] if doc["tracing"] != "ok" else "ok" + (f", {lost} events lost" if lost else ", no events lost")
    )
    out.append(
        f"Recording of kernel {escape(doc['kernel'])}: {doc['samples']} samples every {doc['interval_s'] or '-'} s, "
        f"{_when(doc['started'])} to {_when(doc['ended'])} ({duration:.0f} s)"
    )
    out.append(f"Tracing: {escape(tracing)}" + ("" if doc["tracing"] == "ok" else "; creators are unknown"))
    if lost:
        out.append(f"The kernel dropped {lost} trace events: some creators are unknown.")
    rows = [
        [
            str(p["pid"]),
            escape(p["comm"]),
            human_bytes(p["first_bytes"]),
            human_bytes(p["last_bytes"]),
            human_bytes(p["max_bytes"]),
            _signed(p["growth_bytes"]),
            f"{p['first_buffers']}->{p['last_buffers']}",
            "yes" if p["growing"] else "",
        ]
        for p in doc["processes"]
    ]
    out += ["", "PROCESSES (growing first)"]
    out.append(
        render_table(
            ["PID", "COMM", "FIRST", "LAST", "MAX", "GROWTH", "BUFS", "GROWING"], rows, frozenset({0, 2, 3, 4, 5})
        )
        if rows
        else "  none held dma-bufs"
    )
    groups = doc["new_alive_by_creator"]
    out += ["", "MADE DURING THE RECORDING, STILL ALIVE AT THE END (by creator and exporter)"]
    if groups:
        rows = [
            [
                _who(g["creator"]),
                escape(g["exporter"]),
                str(g["buffers"]),
                human_bytes(g["bytes"]),
                " ".join(map(str, g["holders_at_end"])) + (" (kernel)" if g["kernel_only"] else ""),
            ]
            for g in groups
        ]
        out.append(render_table(["CREATOR", "EXPORTER", "BUFS", "BYTES", "HOLDERS AT END"], rows, frozenset({2, 3})))
    else:
        out.append("  none")
    kernel_only = [b for b in doc["buffers"] if b["kernel_only_at_end"]]
    out += ["", "KERNEL-ONLY AT THE END (no process holds them)"]
    if kernel_only:
        rows = [
            [
                str(b["inode"]),
                human_bytes(b["size_bytes"]),
                escape(b["exporter"]),
                escape(b["name"]),
                _who(b["creator"]),
                "yes" if b["created_during"] else "before",
            ]
            for b in kernel_only
        ]
        out.append(
            render_table(["INODE", "SIZE", "EXPORTER", "NAME", "CREATOR", "MADE DURING"], rows, frozenset({0, 1}))
        )
    elif any(b["kernel_only_at_end"] is None for b in doc["buffers"]) or not doc["buffers"]:
        out.append("  unknown without debugfs bufinfo" if doc["sources"].get("bufinfo", "ok") != "ok" else "  none")
    else:
        out.append("  none")
    if doc["short_lived"]:
        rows = [[_who(s), str(s["exports"]), human_bytes(s["bytes"])] for s in doc["short_lived"][:10]]
        out += [
            "",
            "EXPORTED AND GONE BETWEEN SAMPLES",
            render_table(["CREATOR", "EXPORTS", "BYTES"], rows, frozenset({1, 2})),
        ]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from dmabuf_inspect.history.chart import ChartSeries, terminal_chart, write_png, write_svg

    conn = store.open_read(args.file)
    try:
        doc = build_report(
            conn, pids=set(args.pid or ()) or None, comms=set(args.comm or ()) or None, all_buffers=args.all_buffers
        )
    finally:
        conn.close()
    series = ChartSeries.of_report(doc)
    if args.svg:
        write_svg(series, args.svg)
    if args.png:
        write_png(series, args.png)
    if args.json:
        json.dump(doc, sys.stdout, indent=2 if sys.stdout.isatty() else None)
        sys.stdout.write("\n")
        return 0
    print(render(doc))
    if not args.no_chart and len(series.seconds) > 1:
        width = min(shutil.get_terminal_size((100, 24)).columns, 120)
        chart = terminal_chart(series, width=width, height=16, color=sys.stdout.isatty())
        if chart is None:
            print("\n(no chart: plotext is not installed)")
        else:
            print("\n" + chart)
    return 0
