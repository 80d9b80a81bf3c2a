"""The TUI tests' scenes and a fake collector that plays snapshots back.

The snapshot builders live in benchmarks/synthetic.py, which the TUI benchmark uses too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from synthetic import TAKEN_AT, KiB, MiB, Proc, buf, snapshot, synthetic

from dmabuf_inspect.kernel import tracefs
from dmabuf_inspect.model import Fence, Snapshot

__all__ = ["TAKEN_AT", "FakeTracefs", "KiB", "MiB", "Proc", "buf", "snapshot", "synthetic"]


class FakeCollector:
    """Returns the given snapshots in turn, then the last one again; counts calls."""

    def __init__(self, *snapshots: Snapshot) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0

    def __call__(self) -> Snapshot:
        self.calls += 1
        return self.snapshots[min(self.calls, len(self.snapshots)) - 1]


PROCS = (
    Proc(100, "gnome-shell", "/usr/bin/gnome-shell"),
    Proc(200, "Xwayland", "/usr/bin/Xwayland :0 -rootless", user="gdm", uid=120),
    Proc(300, "gst-launch-1.0", "gst-launch-1.0 v4l2src ! waylandsink", user="bob", uid=1001),
    Proc(400, "firefox", "/usr/lib/firefox/firefox"),
)

VGEM_FENCE = Fence(usage="write", driver="vgem", timeline="unbound", seqno="1", context=None, signaled=False)


def scene_before() -> Snapshot:
    """A desktop: the compositor shares buffers with Xwayland and a video pipeline."""
    return snapshot(
        [
            buf(
                1001,
                8 * MiB,
                "drm",
                name="scanout",
                holders=[(100, [12, 13], 1), (200, [7], 0)],
                count=5,
                attachments=["0000:00:02.0"],
                fences=[VGEM_FENCE],
            ),
            buf(1002, 4 * MiB, "system", name="gst-pool-0", holders=[(300, [20], 1), (100, [30], 0)]),
            buf(1003, 4 * MiB, "system", name="gst-pool-1", holders=[(300, [21], 1)]),
            buf(1004, 64 * KiB, "udmabuf", name="cursor", holders=[(100, [40], 0)]),
            buf(1005, 2 * MiB, "i915", holders=[(400, [50], 0)]),
            buf(1006, 1 * MiB, "drm", name="fw-held", count=1, attachments=["vgem"]),
        ],
        PROCS,
    )


def scene_after() -> Snapshot:
    """The next refresh: the pipeline leaks a buffer and gains a ref, firefox closed its buffer."""
    return snapshot(
        [
            buf(
                1001,
                8 * MiB,
                "drm",
                name="scanout",
                holders=[(100, [12, 13], 1), (200, [7], 0)],
                count=5,
                attachments=["0000:00:02.0"],
                fences=[VGEM_FENCE],
            ),
            buf(1002, 4 * MiB, "system", name="gst-pool-0", holders=[(300, [20, 22], 1), (100, [30], 0)]),
            buf(1003, 4 * MiB, "system", name="gst-pool-1", holders=[(300, [21], 1)]),
            buf(1004, 64 * KiB, "udmabuf", name="cursor", holders=[(100, [40], 0)]),
            buf(1006, 1 * MiB, "drm", name="fw-held", count=1, attachments=["vgem"]),
            buf(1007, 4 * MiB, "system", name="gst-pool-2", holders=[(300, [23], 1)]),
        ],
        PROCS,
        taken_at=TAKEN_AT + 2,
    )


class FakeTracefs:
    """A tracefs under a temporary directory that `TraceInstance.create` accepts (it has
    events/dma_buf and a writable instances/), where the app makes and removes its own instance
    for real. Only the kernel's part is played: `_setup`, which writes the instance's control
    files, is replaced by a pipe standing for trace_pipe, and `emit_export` writes lines into it as the
    kernel would. The scene's pids are not this machine's: the creating process is not looked up
    in /proc (`resolve_task` answers "gone"), so its comm is the event's."""

    WALL_OFFSET_S = TAKEN_AT - 100.0  # trace clock 101.5 is TAKEN_AT + 1.5

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        (root / "events" / "dma_buf").mkdir(parents=True)
        (root / "instances").mkdir()
        self.write_fd: int | None = None
        self.made: list[str] = []
        fake = self

        def setup(cls: type[tracefs.TraceInstance], path: str, events: tuple[str, ...], buffer_kb: int) -> Any:
            read_fd, fake.write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            fake.made.append(path)
            return cls(path=path, clock="boot", pipe_fd=read_fd, wall_offset_s=fake.WALL_OFFSET_S)

        monkeypatch.setattr(tracefs.TraceInstance, "_setup", classmethod(setup))
        monkeypatch.setattr(
            tracefs, "resolve_task", lambda tid, tgid=None, proc=None: tracefs.Task(tgid or tid, None, None)
        )

    @property
    def instances(self) -> list[str]:
        return sorted(os.listdir(self.root / "instances"))

    def emit_export(self, pid: int, comm: str, inode: int, size: int, trace_s: float) -> None:
        """A dma_buf_export line as trace_pipe prints it with record-tgid (7.x)."""
        prefix = f"{comm:>16}-{pid:<7} ({pid:>7}) [001] ...1. {trace_s:12.6f}"
        line = f"{prefix}: dma_buf_export: exp_name=system size={size} ino={inode}\n"
        assert self.write_fd is not None, "no instance was made"
        os.write(self.write_fd, line.encode())

    def close(self) -> None:
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None
