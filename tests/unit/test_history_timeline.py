"""history/timeline.py: what the TUI keeps of a session (sparklines, first seen, creators)."""

from __future__ import annotations

from typing import Any

from history_fakes import snapshot

from dmabuf_inspect.history.timeline import Creator, Timeline
from dmabuf_inspect.kernel.tracefs import TraceEvent

SIZES = {i: 4096 * i for i in range(1, 20)}


class FakeTrace:
    def __init__(self) -> None:
        self.queue: list[TraceEvent] = []

    def read_events(self) -> tuple[list[TraceEvent], int]:
        out, self.queue = self.queue, []
        return out, 0

    def wall_time(self, ts: float) -> float:
        return ts + 1000.0

    def close(self) -> None:
        pass


def test_series_first_seen_and_bounds() -> None:
    tl = Timeline(points=3)
    for i in range(5):
        tl.add(snapshot({(10, 1, "a"): range(1, 2 + i)}, SIZES, taken_at=100.0 + i))
    assert tl.total_bytes() == [sum(SIZES[j] for j in range(1, 2 + i)) for i in (2, 3, 4)]
    assert tl.process_bytes(10, 1) == tl.total_bytes()
    assert tl.process_bytes(10, 2) == []  # another process under the same pid
    assert tl.first_seen(1) == 100.0 and tl.first_seen(5) == 104.0
    tl.add(snapshot({(10, 1, "a"): [5]}, SIZES, taken_at=200.0))
    assert tl.first_seen(1) is None and tl.first_seen(5) == 104.0  # only live buffers are kept
    tl.add(snapshot({(11, 9, "b"): [5]}, SIZES, taken_at=201.0))
    assert tl.process_bytes(10, 1) == [] and tl.process_bytes(11, 9) == [SIZES[5]]


def test_creators_from_the_trace(monkeypatch: Any) -> None:
    from dmabuf_inspect.kernel import tracefs

    monkeypatch.setattr(tracefs, "resolve_task", lambda tid, tgid=None, proc=None: tracefs.Task(tid, 77, None))
    tl = Timeline()
    fake = FakeTrace()
    tl.trace = fake  # type: ignore[assignment]
    fake.queue = [TraceEvent("dma_buf_export", 10, 10, "maker", 0, 5.0, "system", 4096, 1)]
    tl.add(snapshot({(10, 77, "maker"): [1]}, SIZES, taken_at=1006.0))
    assert tl.creator(1) == Creator(10, 77, "maker", 1005.0)
    fake.queue = [TraceEvent("dma_buf_export", 10, 10, "maker", 0, 7.0, "system", 4096, 9)]
    tl.add(snapshot({(10, 77, "maker"): [1]}, SIZES, taken_at=1008.0))
    tl.add(snapshot({(10, 77, "maker"): [1]}, SIZES, taken_at=1009.0))
    tl.add(snapshot({(10, 77, "maker"): [1, 9]}, SIZES, taken_at=1010.0))
    assert tl.creator(9) is None  # its export waited one refresh, no more: memory stays bounded
    assert tl.pending == {}
