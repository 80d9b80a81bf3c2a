"""The screens: processes with their buffers (main), one buffer's detail, and help."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, Static

from dmabuf_inspect.scan.diff import KERNEL_PID, Change
from dmabuf_inspect.tui.export import TableState, ViewState, mmap_cost_of
from dmabuf_inspect.tui.text import (
    attachments_lines,
    banner_lines,
    buffer_facts,
    fences_lines,
    header_lines,
    heap_lines,
)
from dmabuf_inspect.tui.viewdata import (
    BUFFER_COLUMNS,
    BUFFER_DEFAULT_SORT,
    EMPTY,
    EXPORTER_COLUMNS,
    EXPORTER_DEFAULT_SORT,
    HOLDER_COLUMNS,
    HOLDER_DEFAULT_SORT,
    PROCESS_COLUMNS,
    PROCESS_DEFAULT_SORT,
    ViewData,
    holder_rows,
)
from dmabuf_inspect.tui.widgets.rowtable import RowTable

if TYPE_CHECKING:
    from dmabuf_inspect.tui.app import DmabufInspectApp


def table_state(table: RowTable) -> TableState:
    return TableState(
        columns=table.columns,
        sort_column=table.sort_column,
        descending=table.sort_descending,
        filter=table.filter_text,
        rows=table.rows,
    )


def _sort_text(table: RowTable) -> str:
    label = table.columns[table.sort_column].label or "change"
    return f"sort {label} {'▼' if table.sort_descending else '▲'}"


class ViewScreen(Screen[None]):
    """A screen that shows the latest ViewData, with the header and banner on top."""

    @property
    def dmabuf_app(self) -> DmabufInspectApp:
        from dmabuf_inspect.tui.app import DmabufInspectApp

        app = self.app
        assert isinstance(app, DmabufInspectApp)
        return app

    def compose_chrome(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield Static(id="banner", classes="banner")

    def on_mount(self) -> None:
        view = self.dmabuf_app.view
        self.update_chrome()
        if view is not None:
            self.show_view(view)

    def update_chrome(self) -> None:
        """Header and banner; cheap, called whenever the refresh state changes."""
        app = self.dmabuf_app
        view = app.view
        first, second = header_lines(
            view.snapshot if view else None,
            source=app.source,
            paused=app.paused,
            interval_s=app.interval_s,
            scanning=app.scanning,
        )
        summary = Text(f"{first}\n{second}", no_wrap=True, overflow="ellipsis")
        self.query_one("#summary", Static).update(summary)
        banner = self.query_one("#banner", Static)
        lines = banner_lines(view.snapshot if view else None, app.last_error)
        banner.update(Text("\n".join(lines)))
        banner.set_class(bool(lines), "shown")

    def show_view(self, view: ViewData) -> None:
        raise NotImplementedError

    def view_state(self) -> ViewState:
        raise NotImplementedError


class MainScreen(ViewScreen):
    """Processes (top), the buffers of the highlighted one (bottom), exporters and heaps (side)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", tooltip="Filter the focused table"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("x", "toggle_side", "Exporters", tooltip="Show or hide the exporter and heap panel"),
    ]

    SIDE_MIN_WIDTH = 150  # narrower screens start with the exporter panel hidden (x shows it)

    def __init__(self) -> None:
        super().__init__()
        self._filter_target = "processes"
        self._pid: int | None = None
        self._side_toggled = False

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Label("Processes", id="processes-title", classes="title")
                yield RowTable(
                    PROCESS_COLUMNS, id="processes", sort_column=PROCESS_DEFAULT_SORT, empty_text="scanning…"
                )
                yield Label("Buffers", id="buffers-title", classes="title")
                yield RowTable(
                    BUFFER_COLUMNS, id="buffers", sort_column=BUFFER_DEFAULT_SORT, empty_text="select a process"
                )
            with Vertical(id="side"):
                yield Label("Exporters", classes="title")
                yield RowTable(
                    EXPORTER_COLUMNS,
                    id="exporters",
                    sort_column=EXPORTER_DEFAULT_SORT,
                    empty_text="no buffers",
                    cursor_blurred=False,
                )
                yield Label("Heaps", classes="title")
                yield Static(id="heaps")
        with Horizontal(id="filter-bar"):
            yield Label("Filter processes", id="filter-label")
            yield Input(placeholder="pid, command, user, exporter…", id="filter", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#processes", RowTable).focus()

    @property
    def processes(self) -> RowTable:
        return self.query_one("#processes", RowTable)

    @property
    def buffers(self) -> RowTable:
        return self.query_one("#buffers", RowTable)

    @property
    def selected_pid(self) -> int | None:
        return self._pid

    def show_view(self, view: ViewData) -> None:
        processes = self.processes
        processes.empty_text = "no process holds a dma-buf"
        processes.set_data(view.processes)
        self._show_buffers(view, processes.cursor_key, reset=False)
        self.query_one("#exporters", RowTable).set_data(view.exporters)
        self.query_one("#heaps", Static).update(Text("\n".join(heap_lines(view.snapshot)), no_wrap=True))
        self._titles()

    def _show_buffers(self, view: ViewData, pid: int | None, *, reset: bool) -> None:
        self._pid = pid
        buffers = self.buffers
        buffers.empty_text = "no buffers" if pid is not None else "select a process"
        data = view.buffers_of.get(pid, EMPTY) if pid is not None else EMPTY
        buffers.set_data(data, reset=reset)

    def _titles(self) -> None:
        view = self.dmabuf_app.view
        p = self.processes
        shown, total = len(p.rows), len(p.all_rows)
        count = f"{shown} of {total}" if p.filter_text else str(total)
        filt = f" · filter “{p.filter_text}”" if p.filter_text else ""
        self.query_one("#processes-title", Label).update(
            Text(f"Processes ({count}) · {_sort_text(p)}{filt}", no_wrap=True, overflow="ellipsis")
        )
        b = self.buffers
        if self._pid is None or view is None:
            who = ""
        elif self._pid == KERNEL_PID:
            who = " held only by the kernel"
        else:
            who = f" of {self._pid} {view.command_of(self._pid)}"
        shown, total = len(b.rows), len(b.all_rows)
        count = f"{shown} of {total}" if b.filter_text else str(total)
        filt = f" · filter “{b.filter_text}”" if b.filter_text else ""
        self.query_one("#buffers-title", Label).update(
            Text(f"Buffers{who} ({count}) · {_sort_text(b)}{filt}", no_wrap=True, overflow="ellipsis")
        )

    @on(RowTable.Highlighted, "#processes")
    def _process_highlighted(self, event: RowTable.Highlighted) -> None:
        view = self.dmabuf_app.view
        if view is not None and event.key != self._pid:
            self._show_buffers(view, event.key, reset=True)
            self._titles()

    @on(RowTable.Arranged)
    def _arranged(self) -> None:
        self._titles()

    @on(RowTable.Selected, "#processes")
    def _process_selected(self) -> None:
        self.buffers.focus()

    @on(RowTable.Selected, "#buffers")
    def _buffer_selected(self, event: RowTable.Selected) -> None:
        self.app.push_screen(BufferScreen(event.key))

    def action_filter(self) -> None:
        focused = self.focused
        self._filter_target = "buffers" if focused is self.buffers else "processes"
        target = self.query_one(f"#{self._filter_target}", RowTable)
        box = self.query_one("#filter", Input)
        box.placeholder = (
            "pid, command, user, exporter… (enter keeps it, esc clears it)"
            if self._filter_target == "processes"
            else "inode, exporter, class, name… (enter keeps it, esc clears it)"
        )
        self.query_one("#filter-label", Label).update(f"Filter {self._filter_target}:")
        box.value = target.filter_text
        self.query_one("#filter-bar").add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(f"#{self._filter_target}", RowTable).set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#filter-bar").remove_class("shown")
        self.query_one(f"#{self._filter_target}", RowTable).focus()

    def action_clear_filter(self) -> None:
        bar = self.query_one("#filter-bar")
        if bar.has_class("shown"):
            self.query_one("#filter", Input).value = ""
            self.query_one(f"#{self._filter_target}", RowTable).set_filter("")
            bar.remove_class("shown")
            self.query_one(f"#{self._filter_target}", RowTable).focus()
            return
        focused = self.focused
        if isinstance(focused, RowTable) and focused.filter_text:
            focused.set_filter("")

    def on_resize(self, event: events.Resize) -> None:
        if not self._side_toggled:
            self.query_one("#side").set_class(event.size.width < self.SIDE_MIN_WIDTH, "hidden")

    def action_toggle_side(self) -> None:
        self._side_toggled = True
        self.query_one("#side").toggle_class("hidden")

    def view_state(self) -> ViewState:
        return ViewState(
            screen="processes",
            processes=table_state(self.processes),
            buffers=table_state(self.buffers) if self._pid is not None else None,
            selected_pid=self._pid,
        )


class BufferScreen(ViewScreen):
    """Everything about one buffer: holders across processes, attachments, fences, refs, cost."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
    ]

    def __init__(self, inode: int) -> None:
        super().__init__()
        self.inode = inode

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with VerticalScroll(id="detail"):
            yield Label(f"Buffer {self.inode}", id="detail-title", classes="title")
            yield Static(id="facts")
            yield Label("Holders", id="holders-title", classes="title")
            yield RowTable(
                HOLDER_COLUMNS,
                id="holders",
                sort_column=HOLDER_DEFAULT_SORT,
                empty_text="no process holds it: only the kernel does",
            )
            yield Label("Attachments (importing devices)", classes="title")
            yield Static(id="attachments")
            yield Label("Fences", classes="title")
            yield Static(id="fences")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#holders", RowTable).focus()

    def show_view(self, view: ViewData) -> None:
        b = view.buffer_by_inode.get(self.inode)
        facts = self.query_one("#facts", Static)
        if b is None:
            facts.update(Text(f"Buffer {self.inode} is not in this scan.", no_wrap=True))
            return
        change = view.diff.buffer(self.inode)
        bufinfo_ok = view.snapshot.sources.get("bufinfo") == "ok"
        app = self.dmabuf_app
        cost, bench = mmap_cost_of(b, app.mmap_costs, app.bench)
        pairs = buffer_facts(b, change, cost, bufinfo_ok=bufinfo_ok, bench=bench, bench_problem=app.bench_problem)
        width = max(len(k) for k, _ in pairs)
        lines = "\n".join(f"{k:<{width}}  {v}" for k, v in pairs)
        facts.update(Text(lines, no_wrap=True, overflow="ellipsis"))
        self.query_one("#detail-title", Label).update(
            Text(f"Buffer {self.inode}" + (" · GONE" if change is Change.GONE else ""), no_wrap=True)
        )
        holders = self.query_one("#holders", RowTable)
        holders.set_data(holder_rows(view, self.inode))
        self.query_one("#holders-title", Label).update(f"Holders ({len(holders.all_rows)} processes)")
        self.query_one("#attachments", Static).update(
            Text("\n".join(attachments_lines(b, bufinfo_ok=bufinfo_ok)), no_wrap=True)
        )
        self.query_one("#fences", Static).update(Text("\n".join(fences_lines(b, bufinfo_ok=bufinfo_ok)), no_wrap=True))

    def action_back(self) -> None:
        self.dismiss()

    def view_state(self) -> ViewState:
        holders = table_state(self.query_one("#holders", RowTable))
        return ViewState(screen="buffer", inode=self.inode, holders=holders)


HELP = """\
[b]dmabuf-inspect[/b]: every dma-buf on this machine, who holds it, live.

[b]Marks[/b] (since the previous refresh)
  [b]+[/b] new      a buffer (or process) that was not there
  [b]^[/b] grew     more bytes, buffers or references than before
  [b]-[/b] gone     was there, is not any more (shown for one refresh)

[b]Columns[/b]
  Rss  every buffer the process holds by fd or by mapping
  Pss  each buffer divided by the number of processes holding it
  Shared  how many other processes hold the buffer
  Kernel-held  references no fd or mapping explains (count - fds - mappings)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.keys), default=0)
        lines = [f"  [b]{k:<{width}}[/b]  {d}" for k, d in self.keys]
        with VerticalScroll(id="help"):
            yield Static(HELP + "\n[b]Keys[/b]\n" + "\n".join(lines), id="help-text")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss()
