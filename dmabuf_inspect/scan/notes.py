"""What the text front ends say about a snapshot beside the table: gaps, once each."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.textsafe import escape


def partial_notes(snap: Snapshot) -> list[str]:
    """One line per gap in the view: denied processes, unreadable debugfs."""
    notes: list[str] = []
    if snap.denied_pids:
        n = len(snap.denied_pids)
        how = (
            "run as root (sudo dmabuf-inspect) to see them"
            if os.geteuid() != 0
            else "even as root (a sandbox or security module refuses)"
        )
        notes.append(
            f"{n} process{'es' if n != 1 else ''} could not be read (permission denied), {how}; "
            "`dmabuf-inspect dump` lists them under errors"
        )
    bufinfo = snap.sources.get("bufinfo", "ok")
    if bufinfo != "ok":
        notes.append(f"debugfs bufinfo {bufinfo}: kernel-only buffers, fences and attachments are not shown")
    return notes


def print_notes(snap: Snapshot, stream: TextIO | None = None) -> None:
    """The gaps on stderr; none about sources when the output already listed them (no buffers)."""
    notes = partial_notes(snap)
    if not snap.buffers:
        notes = [n for n in notes if not n.startswith("debugfs")]
    for note in notes:
        print(f"dmabuf-inspect: {note}", file=stream or sys.stderr)


def no_buffers_text(snap: Snapshot) -> str:
    """What `list`/`buffers` print instead of an empty table."""
    lines = [f"No dma-bufs found on this machine (kernel {escape(snap.kernel)})."]
    missing = {k: v for k, v in snap.sources.items() if v != "ok"}
    if missing:
        lines.append("Sources that were not available:")
        lines.extend(f"  {name}: {escape(why.removeprefix('unavailable: '))}" for name, why in sorted(missing.items()))
    read = sorted(k for k, v in snap.sources.items() if v == "ok")
    if read:
        lines.append("Read: " + ", ".join(read) + ".")
    return "\n".join(lines)
