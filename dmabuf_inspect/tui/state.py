"""What the screens show besides their rows: the app writes it, the screens read it.

The app owns one `TuiState` and hands it to every screen it makes; a screen never reaches into
the app. When the state changes, the app calls the screens' `show_view` / `update_chrome`.
Nothing here imports textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dmabuf_inspect.bench.cache import BenchCache
from dmabuf_inspect.tui.proclook import ProcessLooker
from dmabuf_inspect.tui.viewdata import ViewData


@dataclass(frozen=True, slots=True)
class Source:
    """Where the snapshots come from: the live machine, or a capture (what the header shows)."""

    label: str  # "live", or "capture DIR"
    live: bool


LIVE = Source("live", live=True)


@dataclass(slots=True)
class TuiState:
    """The app's state as the screens see it (mutable: the app updates it as scans arrive)."""

    source: Source
    interval_s: float
    view: ViewData | None = None
    """The snapshot on screen, indexed; None until the first scan is in."""
    paused: bool = False
    """While paused, ticks do not scan; `r` still does."""
    scanning: bool = False
    """A scan is in flight; ticks wait for it instead of starting another."""
    last_error: str | None = None
    """Why the last scan failed; None once one succeeds."""
    bench: BenchCache | None = None
    """`dmabuf-inspect bench` results cached for the scanned kernel (live machine only)."""
    bench_problem: str | None = None
    """Why the bench cache could not be read, when it exists but could not."""
    mmap_costs: dict[int, str] = field(default_factory=dict)
    """inode -> what touching it from the CPU costs, filled by whoever measured it; may stay empty."""
    look_process: ProcessLooker | None = None
    """Asks about one live process for its detail (psutil); None for a capture."""
