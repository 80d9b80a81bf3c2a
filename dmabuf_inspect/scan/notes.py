"""What the text front ends say about a snapshot beside the table: gaps, once each."""

from __future__ import annotations

import os
import sys

from dmabuf_inspect.model import DENIED, OUTSIDE, UNJOINED, Snapshot
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.textsafe import escape

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import TextIO


class Note(NamedTuple):
    """One gap in the view, said once: `kind` is what programs filter on, `text` what people read."""

    kind: str  # denied | outside | unjoined | bufinfo
    text: str  # unescaped: escape() it for a terminal


def gap_notes(snap: Snapshot) -> list[Note]:
    """One note per kind of gap: denied processes, links out of a capture, fds not tied to a
    buffer, unreadable debugfs bufinfo. Counted from the structured `snap.errors`."""
    notes: list[Note] = []
    if snap.denied_pids:
        n = len(snap.denied_pids)
        how = (
            "run as root (sudo dmabuf-inspect) to see them"
            if os.geteuid() != 0
            else "even as root (a sandbox or security module refuses)"
        )
        notes.append(
            Note(
                DENIED,
                f"{n} process{'es' if n != 1 else ''} could not be read (permission denied), {how}; "
                "`dmabuf-inspect dump` lists them under errors",
            )
        )
    outside = sum(1 for e in snap.errors if e.kind == OUTSIDE)
    if outside:
        notes.append(
            Note(
                OUTSIDE,
                f"{outside} link{'s lead' if outside != 1 else ' leads'} outside the capture and "
                f"{'were' if outside != 1 else 'was'} not followed; `dmabuf-inspect dump` lists "
                f"{'them' if outside != 1 else 'it'} under errors",
            )
        )
    unjoined = [p for p in snap.processes if p.unjoined_fds]
    if unjoined:
        fds = sum(len(p.unjoined_fds) for p in unjoined)
        notes.append(
            Note(
                UNJOINED,
                f"{fds} dma-buf fd{'s' if fds != 1 else ''} of {len(unjoined)} "
                f"process{'es' if len(unjoined) != 1 else ''} could not be tied to a buffer on this kernel: "
                "which buffers they hold, and which only the kernel holds, is unknown",
            )
        )
    bufinfo = snap.sources.get("bufinfo", "ok")
    if bufinfo != "ok":
        if snap.sources.get("bpf", "").startswith("ok"):  # BPF listed every buffer (issue 14)
            notes.append(Note("bufinfo", f"debugfs bufinfo {bufinfo}: fences are not shown"))
        else:
            notes.append(
                Note("bufinfo", f"debugfs bufinfo {bufinfo}: kernel-only buffers, fences and attachments are not shown")
            )
    return notes


def partial_notes(snap: Snapshot) -> list[str]:
    """The text of gap_notes()."""
    return [note.text for note in gap_notes(snap)]


def print_notes(snap: Snapshot, stream: TextIO | None = None) -> None:
    """The gaps on stderr; none about sources when the output already listed them (no buffers)."""
    notes = gap_notes(snap)
    if not snap.buffers:
        notes = [n for n in notes if n.kind != "bufinfo"]
    for note in notes:
        print(f"dmabuf-inspect: {escape(note.text)}", file=stream or sys.stderr)


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
