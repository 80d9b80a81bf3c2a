"""The screens: processes with their buffers (main), one buffer's detail, one process's detail, help.

Every screen gets the app's `TuiState` when it is made and only reads it; the app tells the
screens when it changed (`show_view`, `update_chrome`). No screen imports the app.
"""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape as escape_markup
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import get_current_worker

from dmabuf_inspect.model import Process
from dmabuf_inspect.scan.diff import KERNEL_PID, PSEUDO_PIDS, UNSEEN_PID, Change
from dmabuf_inspect.scan.views import plural
from dmabuf_inspect.tui.export import TableState, ViewState, mmap_cost_of
from dmabuf_inspect.tui.proclook import ProcessLook
from dmabuf_inspect.tui.state import TuiState
from dmabuf_inspect.tui.text import (
    PAUSED,
    attachments_lines,
    banner_lines,
    buffer_facts,
    buffer_history_facts,
    bufinfo_read,
    cgroup_facts_lines,
    cgroups_empty_text,
    device_memory_note,
    fences_lines,
    header_lines,
    heap_lines,
    history_line,
    process_facts,
    process_history_text,
    tracing_help,
)
from dmabuf_inspect.tui.viewdata import (
    BUFFERS,
    CGROUPS,
    EMPTY,
    EXPORTERS,
    HOLDERS,
    PROCESSES,
    ViewData,
    holder_rows,
)
from dmabuf_inspect.tui.widgets.rowtable import RowTable


def table_state(table: RowTable) -> TableState:
    return TableState(
        table=table.table,
        sort=table.sort_key,
        descending=table.sort_descending,
        filter=table.filter_text,
        rows=table.rows,
    )


def _sort_text(table: RowTable) -> str:
    return f"sort {table.sort_label} {'▼' if table.sort_descending else '▲'}"


def facts_text(pairs: list[tuple[str, str]]) -> Text:
    width = max((len(k) for k, _ in pairs), default=0)
    return Text("\n".join(f"{k:<{width}}  {v}" for k, v in pairs), no_wrap=True, overflow="ellipsis")


def footer() -> Footer:
    """The key bar, compact so that an 80-column terminal shows every key."""
    return Footer(compact=True)


class ViewScreen(Screen[None]):
    """A screen that shows the latest ViewData, with the header and banner on top."""

    def __init__(self, state: TuiState) -> None:
        super().__init__()
        self.state = state

    def compose_chrome(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield Static(id="banner", classes="banner")

    def on_mount(self) -> None:
        view = self.state.view
        self.update_chrome()
        if view is not None:
            self.show_view(view)

    def update_chrome(self) -> None:
        """Header and banner; cheap, called whenever the refresh state changes."""
        state = self.state
        snap = state.view.snapshot if state.view else None
        first, second = header_lines(
            snap,
            source=state.source.label,
            live=state.source.live,
            paused=state.paused,
            interval_s=state.interval_s,
            scanning=state.scanning,
        )
        summary = Text(f"{first}\n{second}", no_wrap=True, overflow="ellipsis")
        if state.paused:
            start = len(first) + 1
            summary.stylize("bold reverse", start, start + len(PAUSED))
        self.query_one("#summary", Static).update(summary)
        banner = self.query_one("#banner", Static)
        lines = banner_lines(snap, state.last_error, live=state.source.live)
        banner.update(Text("\n".join(lines)))
        banner.set_class(bool(lines), "shown")

    def show_view(self, view: ViewData) -> None:
        raise NotImplementedError

    def view_state(self) -> ViewState:
        raise NotImplementedError

    def open_process(self, pid: int) -> None:
        """The detail of process PID (not of the pseudo-process of the buffers no process holds)."""
        if pid in PSEUDO_PIDS:
            self.notify("That row is not a process: it gathers the buffers no process was seen holding", timeout=3)
            return
        self.app.push_screen(ProcessScreen(self.state, pid))


class MainScreen(ViewScreen):
    """Processes (top), the buffers of the highlighted one (bottom), exporters and heaps (side)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", tooltip="Filter the focused table"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("i", "process", "Process", tooltip="Details of the highlighted process: its memory, its parents"),
        Binding("x", "toggle_side", "Side", tooltip="Show or hide the exporter and heap panel"),
        Binding(
            "g",
            "cgroups",
            "Cgroups",
            show=False,
            tooltip="Per-cgroup totals: processes, buffers, bytes, Pss, bytes shared with other cgroups",
        ),
    ]

    SIDE_MIN_WIDTH = 150  # narrower screens start with the exporter panel hidden (x shows it)

    def __init__(self, state: TuiState) -> None:
        super().__init__(state)
        self._filter_target = "processes"
        self._pid: int | None = None
        self._side_toggled = False

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield Static(id="history")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Label("Processes", id="processes-title", classes="title")
                yield RowTable(PROCESSES, id="processes", empty_text="scanning…")
                yield Label("Buffers", id="buffers-title", classes="title")
                yield RowTable(BUFFERS, id="buffers", empty_text="select a process")
            with Vertical(id="side"):
                yield Label("Exporters", classes="title")
                yield RowTable(
                    EXPORTERS, id="exporters", empty_text="no buffers", cursor_blurred=False, selectable=False
                )
                yield Static(id="device-note")
                yield Label("Heaps", classes="title")
                yield Static(id="heaps")
        with Horizontal(id="filter-bar"):
            yield Label("Filter processes", id="filter-label")
            yield Input(placeholder="pid, command, user, exporter…", id="filter", compact=True)
        yield footer()

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
        processes.set_table(view.processes_table)  # with device memory: Rss and Pss of RAM, Dev apart
        processes.set_data(view.processes)
        self._show_buffers(view, processes.cursor_key, reset=False)
        self.query_one("#exporters", RowTable).set_data(view.exporters)
        note = device_memory_note(view.snapshot)
        device_note = self.query_one("#device-note", Static)
        device_note.display = note is not None
        device_note.update(Text(note or ""))
        self.query_one("#heaps", Static).update(Text("\n".join(heap_lines(view.snapshot)), no_wrap=True))
        self._titles()
        self._history()

    def _history(self) -> None:
        """The history line: the session's total and the highlighted process, one block a refresh."""
        view = self.state.view
        line = self.query_one("#history", Static)
        if view is None or view.history is None:
            line.display = False
            return
        line.display = True
        pid = self._pid
        who = "" if pid is None else view.command_of(pid) if pid in PSEUDO_PIDS else f"{pid} {view.command_of(pid)}"
        text = history_line(view.history, pid, who, self.size.width - 2)
        line.update(Text(text, no_wrap=True, overflow="ellipsis"))

    def _show_buffers(self, view: ViewData, pid: int | None, *, reset: bool) -> None:
        self._pid = pid
        buffers = self.buffers
        buffers.empty_text = "no buffers" if pid is not None else "select a process"
        data = view.buffers_of.get(pid, EMPTY) if pid is not None else EMPTY
        buffers.set_data(data, reset=reset)

    def _titles(self) -> None:
        view = self.state.view
        p = self.processes
        shown, total = len(p.rows), len(p.all_rows)
        count = f"{shown} of {total}" if p.filter_text else str(total)
        filt = f" · filter “{p.filter_text}”" if p.filter_text else ""
        self.query_one("#processes-title", Label).update(
            Text(f"Processes ({count}) · {_sort_text(p)}{filt}", no_wrap=True, overflow="ellipsis")
        )
        b = self.buffers
        unjoined = ""
        if self._pid is None or view is None:
            who = ""
        elif self._pid == KERNEL_PID:
            who = " held only by the kernel"
        elif self._pid == UNSEEN_PID:
            who = " no process was seen holding (one may hold them unseen)"
        else:
            who = f" of {self._pid} {view.command_of(self._pid)}"
            proc = view.process_by_pid.get(self._pid)
            if proc is not None and proc.unjoined_fds:
                unjoined = f" + {plural(len(proc.unjoined_fds), 'fd')} not tied to a buffer"
        shown, total = len(b.rows), len(b.all_rows)
        count = f"{shown} of {total}" if b.filter_text else str(total)
        filt = f" · filter “{b.filter_text}”" if b.filter_text else ""
        self.query_one("#buffers-title", Label).update(
            Text(f"Buffers{who} ({count}{unjoined}) · {_sort_text(b)}{filt}", no_wrap=True, overflow="ellipsis")
        )

    @on(RowTable.Highlighted, "#processes")
    def _process_highlighted(self, event: RowTable.Highlighted) -> None:
        view = self.state.view
        if view is not None and event.key != self._pid:
            self._show_buffers(view, event.key, reset=True)
            self._titles()
            self._history()

    @on(RowTable.Arranged)
    def _arranged(self) -> None:
        self._titles()

    @on(RowTable.Selected, "#processes")
    def _process_selected(self) -> None:
        self.buffers.focus()

    @on(RowTable.Selected, "#buffers")
    def _buffer_selected(self, event: RowTable.Selected) -> None:
        self.app.push_screen(BufferScreen(self.state, event.key))

    def action_process(self) -> None:
        pid = self.processes.cursor_key
        if pid is not None:
            self.open_process(pid)

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
        self._history()

    def action_cgroups(self) -> None:
        self.app.push_screen(CgroupScreen(self.state))

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

    def __init__(self, state: TuiState, inode: int) -> None:
        super().__init__(state)
        self.inode = inode

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with VerticalScroll(id="detail"):
            yield Label(f"Buffer {self.inode}", id="detail-title", classes="title")
            yield Static(id="facts")
            yield Label("Holders", id="holders-title", classes="title")
            yield RowTable(HOLDERS, id="holders", empty_text="no process holds it")
            yield Label("Attachments (importing devices)", classes="title")
            yield Static(id="attachments")
            yield Label("Fences", classes="title")
            yield Static(id="fences")
        yield footer()

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
        bufinfo_ok = bufinfo_read(view.snapshot)
        state = self.state
        live = state.source.live
        cost, bench = mmap_cost_of(b, state.mmap_costs, state.bench)
        history = () if view.history is None else buffer_history_facts(view.history, b.inode, view.snapshot.taken_at)
        pairs = buffer_facts(
            b,
            change,
            cost,
            bufinfo_ok=bufinfo_ok,
            bench=bench,
            bench_problem=state.bench_problem,
            live=live,
            history=history,
            device=next((d for d in view.snapshot.device_memory if d.inode == b.inode), None),
        )
        facts.update(facts_text(pairs))
        name = f"Buffer {self.inode}" if self.inode >= 0 else "Buffer (inode unknown)"
        self.query_one("#detail-title", Label).update(
            Text(name + (" · GONE" if change is Change.GONE else ""), no_wrap=True)
        )
        holders = self.query_one("#holders", RowTable)
        holders.empty_text = (
            "no process holds it: only the kernel does"
            if b.kernel_only
            else "no process was seen holding it, but one may: some dma-buf fds could not be tied to a buffer"
        )
        holders.set_data(holder_rows(view, self.inode))
        self.query_one("#holders-title", Label).update(f"Holders ({plural(len(holders.all_rows), 'process')})")
        self.query_one("#attachments", Static).update(
            Text("\n".join(attachments_lines(b, bufinfo_ok=bufinfo_ok)), no_wrap=True)
        )
        self.query_one("#fences", Static).update(Text("\n".join(fences_lines(b, bufinfo_ok=bufinfo_ok)), no_wrap=True))

    @on(RowTable.Selected, "#holders")
    def _holder_selected(self, event: RowTable.Selected) -> None:
        self.open_process(event.key)

    def action_back(self) -> None:
        self.dismiss()

    def view_state(self) -> ViewState:
        holders = table_state(self.query_one("#holders", RowTable))
        return ViewState(screen="buffer", inode=self.inode, holders=holders)


class ProcessScreen(ViewScreen):
    """One process: its dma-bufs (from the scan), its own memory and its parents (psutil, live only)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
    ]

    class Looked(Message):
        """psutil answered about the process (posted from the worker thread)."""

        def __init__(self, look: ProcessLook) -> None:
            super().__init__()
            self.look = look

    def __init__(self, state: TuiState, pid: int) -> None:
        super().__init__(state)
        self.pid = pid
        self.look: ProcessLook | None = None
        """psutil's latest answer; None until the first one."""
        self.looks = 0
        """How many times psutil was asked (once per refresh while the screen is open)."""

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with VerticalScroll(id="detail"):
            yield Label(f"Process {self.pid}", id="detail-title", classes="title")
            yield Static(id="facts")
            yield Label("Buffers", id="process-buffers-title", classes="title")
            yield RowTable(BUFFERS, id="process-buffers", empty_text="no buffers")
        yield footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#process-buffers", RowTable).focus()

    def _process(self, view: ViewData) -> Process | None:
        return view.process_by_pid.get(self.pid)

    def show_view(self, view: ViewData) -> None:
        p = self._process(view)
        facts = self.query_one("#facts", Static)
        if p is None:
            facts.update(Text(f"Process {self.pid} holds no dma-buf in this scan.", no_wrap=True))
            return
        change = view.diff.process(self.pid)
        self._show_facts(view, p, change)
        self.query_one("#detail-title", Label).update(
            Text(f"Process {p.pid} {view.command_of(p.pid)}" + (" · GONE" if change is Change.GONE else ""))
        )
        self.query_one("#process-buffers", RowTable).set_data(view.buffers_of.get(self.pid, EMPTY))
        self._buffers_title()
        looker = self.state.look_process
        if looker is not None and self.state.source.live and change is not Change.GONE:
            self.looks += 1
            self._look(p.pid, p.start_ticks)

    def _show_facts(self, view: ViewData, p: Process, change: Change) -> None:
        mix = view.exporter_mix.get(p.pid, ())
        history = None if view.history is None else process_history_text(view.history, p.pid)
        pairs = process_facts(p, mix, self.look, live=self.state.source.live, change=change, history=history)
        self.query_one("#facts", Static).update(facts_text(pairs))

    @work(thread=True, exclusive=True, group="look", exit_on_error=False)
    def _look(self, pid: int, start_ticks: int | None) -> None:
        looker = self.state.look_process
        if looker is None:
            return
        look = looker(pid, start_ticks)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Looked(look))

    @on(Looked)
    def _looked(self, message: Looked) -> None:
        self.look = message.look
        view = self.state.view
        p = self._process(view) if view is not None else None
        if view is not None and p is not None:
            self._show_facts(view, p, view.diff.process(self.pid))

    @on(RowTable.Arranged, "#process-buffers")
    def _buffers_title(self) -> None:
        table = self.query_one("#process-buffers", RowTable)
        self.query_one("#process-buffers-title", Label).update(
            Text(f"Buffers ({len(table.all_rows)}) · {_sort_text(table)}", no_wrap=True, overflow="ellipsis")
        )

    @on(RowTable.Selected, "#process-buffers")
    def _buffer_selected(self, event: RowTable.Selected) -> None:
        self.app.push_screen(BufferScreen(self.state, event.key))

    def action_back(self) -> None:
        self.dismiss()

    def view_state(self) -> ViewState:
        buffers = table_state(self.query_one("#process-buffers", RowTable))
        return ViewState(screen="process", buffers=buffers, selected_pid=self.pid)


CGROUP_NOTE = (
    "Bytes: each buffer once per cgroup. Shared: the part that processes of another cgroup hold "
    "too (in the Bytes of each). Pss (each buffer's size over its holders) adds up over cgroups."
)


class CgroupScreen(ViewScreen):
    """Per-cgroup totals (scan.cgroups): processes, buffers, bytes, Pss, shared bytes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield Label("Cgroups", id="cgroups-title", classes="title")
        yield RowTable(CGROUPS, id="cgroups", empty_text="scanning…", selectable=False)
        with VerticalScroll(id="cgroup-detail"):
            yield Static(id="cgroup-facts")
        yield footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.cgroups.focus()

    @property
    def cgroups(self) -> RowTable:
        return self.query_one("#cgroups", RowTable)

    def show_view(self, view: ViewData) -> None:
        table = self.cgroups
        table.empty_text = cgroups_empty_text(view.snapshot)
        table.set_data(view.cgroups)
        self._title()
        self._facts()

    @on(RowTable.Arranged, "#cgroups")
    def _title(self) -> None:
        table = self.cgroups
        self.query_one("#cgroups-title", Label).update(
            Text(f"Cgroups ({len(table.all_rows)}) · {_sort_text(table)}", no_wrap=True, overflow="ellipsis")
        )

    @on(RowTable.Highlighted, "#cgroups")
    def _facts(self) -> None:
        view = self.state.view
        key = self.cgroups.cursor_key
        total = view.cgroup_totals[key] if view is not None and key is not None else None
        lines = [] if total is None else cgroup_facts_lines(total, view.command_of if view is not None else str)
        source = view.snapshot.sources.get("cgroup", "ok") if view is not None else "ok"
        if source != "ok" and view is not None:  # every process in one row, "(unknown)": say why once
            lines.insert(0, cgroups_empty_text(view.snapshot))
        self.query_one("#cgroup-facts", Static).update(Text("\n".join([*lines, "", CGROUP_NOTE]).strip("\n")))

    def action_back(self) -> None:
        self.dismiss()

    def view_state(self) -> ViewState:
        return ViewState(screen="cgroups", cgroups=table_state(self.cgroups))


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
  Dev  device memory (vfio: a PCI BAR), not RAM; Rss and Pss are then RAM only
  Age  since this session first saw the buffer (≥: there at its first refresh)
  Kernel-held  references no fd or mapping explains (count - fds - mappings)
  0+2?  two more dma-buf fds that could not be tied to a buffer (before Linux 5.3);
        the sizes beside them are then lower bounds (≥)

[b]Process detail[/b] (i, or enter on a holder)
  Memory   the process's own RSS and USS, asked when the detail opens or refreshes
           (live machine only; USS of another user's process needs root)
  Parents  pid and command up to pid 1
  History  its dma-buf bytes at each refresh of this session
"""

CGROUP_HELP = """\
[b]Cgroups[/b] (g): per cgroup v2 path and the unit it names (service, session, container)
  Bytes   each buffer once, however many of the cgroup's processes hold it
  Shared  the part that processes of another cgroup hold too (in the Bytes of each)
  Pss     the processes' Pss, summed: it adds up over cgroups
"""

HISTORY_HELP = """\
[b]History[/b] (this session's last refreshes only)
  The line under the header: the total, and the highlighted process, one block per refresh
  Creator  who exported a buffer (buffer detail), from the dma_buf tracepoints (Linux 7.0+, root)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str]], *, tracing: str | None = None) -> None:
        """TRACING: "ok", or why buffer creators are not traced; said once, here and in the detail."""
        super().__init__()
        self.keys = keys
        self.tracing = tracing

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.keys), default=0)
        lines = [f"  [b]{k:<{width}}[/b]  {d}" for k, d in self.keys]
        history = CGROUP_HELP + "\n" + HISTORY_HELP
        if self.tracing is not None:
            history += f"  Creators now  {escape_markup(tracing_help(self.tracing))}\n"
        with VerticalScroll(id="help"):
            yield Static(HELP + "\n[b]Keys[/b]\n" + "\n".join(lines) + "\n\n" + history, id="help-text")
        yield footer()

    def action_close(self) -> None:
        self.dismiss()
