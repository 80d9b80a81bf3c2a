"""The live TUI: a worker thread scans and indexes, the UI thread only shows.

A scan (`collector`, blocking I/O) and `prepare()` (diff + formatted rows) run in one
`@work(thread=True, exclusive=True)` worker; its immutable `ViewData` is posted back and
applied in one `batch_update()`. A tick while a scan is still running is skipped, so a slow
scan never piles up threads and never freezes the screen.

The app owns the `TuiState` and gives it to the screens it makes; it imports the screens, they
never import it.

The session's history (history/timeline.py) is fed by the same worker: after each scan it adds
the snapshot and copies a `HistoryFrame` into the view. On the live machine with `trace_root`,
the app traces the dma_buf events as `record` does, in a tracefs instance of its own that is
removed when the app exits: by a key, by an exception, or by SIGINT, SIGTERM or SIGHUP when
`handle_signals` is set (`dmabuf-inspect tui` sets it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input
from textual.worker import Worker, WorkerState, get_current_worker

from dmabuf_inspect.bench.cache import BenchCache, CacheReader
from dmabuf_inspect.errors import describe_oserror
from dmabuf_inspect.history.timeline import Timeline
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.tui import proclook
from dmabuf_inspect.tui.export import ViewState, export_document, write_export
from dmabuf_inspect.tui.historyview import CAPTURE_TRACING, NOT_TRACED, HistoryFrame, add_and_frame
from dmabuf_inspect.tui.proclook import ProcessLooker
from dmabuf_inspect.tui.screens import BufferScreen, CgroupScreen, HelpScreen, MainScreen, ProcessScreen, ViewScreen
from dmabuf_inspect.tui.state import LIVE, Source, TuiState
from dmabuf_inspect.tui.viewdata import ViewData, prepare
from dmabuf_inspect.tui.widgets.rowtable import RowTable

Collector = Callable[[], Snapshot]
EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DmabufInspectApp(App[int]):
    """htop for dma-bufs. `collector` returns a fresh Snapshot each call (tests pass a fake)."""

    CSS_PATH = "app.tcss"
    TITLE = "dmabuf-inspect"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "toggle_pause", "Pause", tooltip="Pause or resume the live refresh"),
        Binding("r", "refresh_now", "Refresh", tooltip="Scan now"),
        Binding("e", "export", "Export", tooltip="Write the current view to a JSON file"),
    ]

    class ViewReady(Message):
        """A scan finished and was indexed (posted from the worker thread)."""

        def __init__(self, view: ViewData, bench: tuple[BenchCache | None, str | None] = (None, None)) -> None:
            super().__init__()
            self.view = view
            self.bench = bench

    class ScanFailed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class Exported(Message):
        def __init__(self, path: str | None, error: str | None) -> None:
            super().__init__()
            self.path = path
            self.error = error

    def __init__(
        self,
        collector: Collector,
        *,
        interval_s: float = 2.0,
        source: Source = LIVE,
        export_dir: str | None = None,
        mmap_costs: Mapping[int, str] | None = None,
        bench_cache_dir: str | None = None,
        look_process: ProcessLooker | None = None,
        cursor_blink: bool = True,
        history_points: int = 300,
        trace_root: str | None = None,
        handle_signals: bool = False,
    ) -> None:
        """LOOK_PROCESS asks about one process for its detail screen; by default psutil on the
        live machine, and nothing for a capture. HISTORY_POINTS: refreshes kept for the history
        line. TRACE_ROOT: the tracefs to trace buffer creators in (live machine only; None: no
        tracing). HANDLE_SIGNALS: SIGINT, SIGTERM and SIGHUP end the app cleanly."""
        super().__init__()
        self.collector = collector
        if look_process is None and source.live:
            look_process = proclook.look
        self.state = TuiState(
            source=source,
            interval_s=interval_s,
            mmap_costs=dict(mmap_costs or {}),
            look_process=look_process if source.live else None,
        )
        self.export_dir = export_dir if export_dir is not None else os.getcwd()
        self._bench_reader = CacheReader(bench_cache_dir)  # used by the scan worker only
        self.cursor_blink = cursor_blink
        self.last_export: str | None = None
        self.last_export_error: str | None = None
        self.last_apply_s: float | None = None
        """Seconds the UI thread spent applying the last refresh."""
        self.scans = 0
        self.timeline = Timeline(points=history_points)
        """The session's history: the scan worker adds to it; the screens see its frames only."""
        self._timeline_lock = threading.Lock()  # the worker's add and the exit's close
        self._trace_root = trace_root
        self._handle_signals = handle_signals
        self._old_handlers: dict[int, Any] = {}

    # What the screens show lives in `state`; these read it, for callers and tests.

    @property
    def view(self) -> ViewData | None:
        return self.state.view

    @property
    def paused(self) -> bool:
        return self.state.paused

    @property
    def scanning(self) -> bool:
        return self.state.scanning

    @property
    def last_error(self) -> str | None:
        return self.state.last_error

    @property
    def source(self) -> str:
        return self.state.source.label

    def get_default_screen(self) -> Screen[None]:
        return MainScreen(self.state)

    @property
    def tracing(self) -> str:
        """'ok', or why buffer creators are not traced ('unavailable: why')."""
        return self.timeline.tracing

    def on_mount(self) -> None:
        if not self.cursor_blink:
            for box in self.query(Input):
                box.cursor_blink = False
        if self._handle_signals:
            self._catch_signals()
        self._start_tracing()
        self.set_interval(self.state.interval_s, self._tick, name="refresh")
        self.start_scan()

    def on_unmount(self) -> None:
        self.close_history()
        self._release_signals()

    # -- history and tracing ----------------------------------------------------------------

    def _start_tracing(self) -> None:
        """Before the first scan, so that buffers made from then on have their creator."""
        tl = self.timeline
        if not self.state.source.live:
            tl.tracing = CAPTURE_TRACING
        elif self._trace_root is None:
            tl.tracing = NOT_TRACED
        else:
            with self._timeline_lock:
                try:
                    tl.start_tracing(self._trace_root)
                except OSError as exc:  # one the instance setup did not foresee: the TUI works without
                    tl.tracing = f"unavailable: {describe_oserror('making the trace instance', exc)}"

    def close_history(self) -> None:
        """Remove the trace instance (waits for a scan worker's `add` in progress). Idempotent."""
        with self._timeline_lock:
            self.timeline.close()

    def _catch_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in EXIT_SIGNALS:
            old = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, self._exit_on_signal, signum)
            except (ValueError, RuntimeError):  # not the main thread: signals stay as they were
                continue
            self._old_handlers[signum] = old

    def _exit_on_signal(self, signum: int) -> None:
        self.close_history()  # first: the exit below may not get to run if the process is torn down
        self.exit(128 + signum, return_code=128 + signum)

    def _release_signals(self) -> None:
        if not self._old_handlers:
            return
        loop = asyncio.get_running_loop()
        for signum, old in self._old_handlers.items():
            loop.remove_signal_handler(signum)
            if old is not None:
                signal.signal(signum, old)
        self._old_handlers = {}

    # -- scanning ---------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.state.paused:
            self.start_scan()

    def start_scan(self) -> bool:
        """Start a scan unless one is running; returns whether one was started."""
        state = self.state
        if state.scanning:
            return False
        state.scanning = True
        view = state.view
        self._collect(
            view.snapshot if view is not None else None, view.history if view is not None else None, state.source.live
        )
        self._update_chrome()
        return True

    @work(thread=True, exclusive=True, group="collect", exit_on_error=False)
    def _collect(self, previous: Snapshot | None, past: HistoryFrame | None, live: bool) -> None:
        worker = get_current_worker()
        try:
            snapshot = self.collector()
            with self._timeline_lock:
                history = add_and_frame(self.timeline, snapshot, past, live=live)
            view = prepare(snapshot, previous, history)
            # bench results measure this machine: they say nothing about a capture's
            bench = self._bench_reader.read(snapshot.kernel) if live else (None, None)
        except OSError as exc:
            if not worker.is_cancelled:
                self.post_message(self.ScanFailed(describe_oserror("scanning", exc)))
            return
        except Exception as exc:  # a scan bug must not kill the UI or print a traceback over it
            if not worker.is_cancelled:
                self.post_message(self.ScanFailed(f"{type(exc).__name__}: {exc}"))
            return
        if not worker.is_cancelled:
            self.post_message(self.ViewReady(view, bench))

    @on(ViewReady)
    def _view_ready(self, message: ViewReady) -> None:
        self.state.scanning = False
        self.scans += 1
        self.state.bench, self.state.bench_problem = message.bench
        self.apply_view(message.view)

    @on(ScanFailed)
    def _scan_failed(self, message: ScanFailed) -> None:
        self.state.scanning = False
        self.state.last_error = message.error
        self._update_chrome()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "collect" and event.state in (WorkerState.CANCELLED, WorkerState.ERROR):
            self.state.scanning = False
            self._update_chrome()

    def apply_view(self, view: ViewData) -> None:
        """Show a prepared view on every screen of the stack (UI thread)."""
        t0 = time.perf_counter()
        self.state.view = view
        self.state.last_error = None
        with self.batch_update():
            for screen in self.screen_stack:
                if isinstance(screen, ViewScreen) and screen.is_mounted:
                    screen.show_view(view)
                    screen.update_chrome()
        self.last_apply_s = time.perf_counter() - t0

    def _update_chrome(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ViewScreen) and screen.is_mounted:
                screen.update_chrome()

    # -- actions ----------------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        self.state.paused = not self.state.paused
        self.notify("Paused: r still scans on demand" if self.paused else "Live again", timeout=2)
        self._update_chrome()

    def action_refresh_now(self) -> None:
        if not self.start_scan():
            self.notify("A scan is still running", timeout=2)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_help(), tracing=self.tracing))

    def key_help(self) -> list[tuple[str, str]]:
        """(key, what it does) for the help screen, from the bindings themselves."""
        out: list[tuple[str, str]] = []
        groups: list[tuple[str, list[BindingType]]] = [
            ("", list(self.BINDINGS)),
            ("processes: ", list(MainScreen.BINDINGS)),
            ("tables: ", list(RowTable.BINDINGS)),
            ("buffer: ", list(BufferScreen.BINDINGS)),
            ("process: ", list(ProcessScreen.BINDINGS)),
            ("cgroups: ", list(CgroupScreen.BINDINGS)),
        ]
        for prefix, bindings in groups:
            for b in bindings:
                if not isinstance(b, Binding):
                    continue
                if not (b.show or b.tooltip or b.key == "escape"):
                    continue
                shown = b.key_display or {"slash": "/", "question_mark": "?"}.get(b.key, b.key)
                out.append((shown, prefix + (b.tooltip or b.description)))
        out.append(("tab", "next table"))
        out.append(("arrows", "move (also pgup/pgdn, home/end); click a header to sort by it"))
        return out

    def action_export(self) -> None:
        view = self.view
        screen = self.screen
        if view is None or not isinstance(screen, ViewScreen):
            self.notify("Nothing to export yet", severity="warning", markup=False)
            return
        self._write_export(view, screen.view_state(), dict(self.state.mmap_costs), self.state.bench)

    @work(thread=True, group="export", exit_on_error=False)
    def _write_export(self, view: ViewData, state: ViewState, costs: dict[int, str], bench: BenchCache | None) -> None:
        try:
            path = write_export(self.export_dir, export_document(view, state, costs, bench))
        except OSError as exc:
            self.post_message(self.Exported(None, describe_oserror(f"writing to {self.export_dir}", exc)))
            return
        self.post_message(self.Exported(path, None))

    @on(Exported)
    def _exported(self, message: Exported) -> None:
        if message.path is not None:
            self.last_export = message.path
            self.last_export_error = None
            self.notify(f"Exported to {escape(message.path)}", timeout=4, markup=False)
        else:
            self.last_export_error = message.error or "export failed"
            self.notify(escape(self.last_export_error), severity="error", timeout=6, markup=False)
