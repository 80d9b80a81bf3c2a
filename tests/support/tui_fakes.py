"""The TUI tests' scenes and a fake collector that plays snapshots back.

The snapshot builders live in benchmarks/synthetic.py, which the TUI benchmark uses too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from synthetic import TAKEN_AT, KiB, MiB, Proc, buf, snapshot, synthetic

from dmabuf_inspect.model import Fence, Snapshot

__all__ = ["TAKEN_AT", "KiB", "MiB", "Proc", "buf", "snapshot", "synthetic"]


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
