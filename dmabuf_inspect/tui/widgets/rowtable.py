"""A sortable, filterable table that renders only the rows on screen.

Textual's DataTable measures every cell when rows change: with 10 000 buffers a refresh took
seconds. Here rows arrive pre-formatted with their column widths (`RowSet`), the table keeps
them in one tuple, and `render_line` builds only the visible lines.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dmabuf_inspect.scan.diff import Change
from dmabuf_inspect.tui.table import EMPTY, Row, RowSet, Table, arrange

_GAP = " "
_CHANGE_CLASS = {
    Change.NEW: "row-table--new",
    Change.GREW: "row-table--grew",
    Change.GONE: "row-table--gone",
}


def fit(text: str, width: int, justify: str) -> str:
    """`text` cut (with an ellipsis) or padded to exactly `width` cells."""
    n = len(text) if text.isascii() else cell_len(text)
    if n > width:
        if width <= 1:
            return set_cell_size(text, width)
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - n)
    return pad + text if justify == "right" else text + pad


class RowTable(ScrollView, can_focus=True):
    """Rows of pre-formatted cells; the header stays on the first line."""

    DEFAULT_CSS = """
    RowTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        &:focus { background-tint: $foreground 5%; }
        & > .row-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .row-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .row-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
        }
        & > .row-table--new { color: $success; text-style: bold; }
        & > .row-table--grew { color: $warning; text-style: bold; }
        & > .row-table--gone { color: $foreground-muted; text-style: strike; }
        & > .row-table--empty { color: $foreground-muted; text-style: italic; }
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "row-table--header",
        "row-table--cursor",
        "row-table--new",
        "row-table--grew",
        "row-table--gone",
        "row-table--empty",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Open", tooltip="Open the highlighted row"),
        Binding("s", "sort_next", "Sort", tooltip="Sort by the next column"),
        Binding("S", "sort_reverse", "Reverse", show=False, tooltip="Reverse the sort order"),
    ]

    class Highlighted(Message):
        """The row under the cursor changed (key None: no rows)."""

        def __init__(self, table: RowTable, key: int | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> RowTable:
            return self.table

    class Selected(Message):
        """Enter (or a click on the highlighted row) on a row; only where the table is `selectable`."""

        def __init__(self, table: RowTable, key: int) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> RowTable:
            return self.table

    class Arranged(Message):
        """Sort or filter changed, or new rows arrived; labels showing counts may update."""

        def __init__(self, table: RowTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> RowTable:
            return self.table

    def __init__(
        self,
        table: Table[Any],
        *,
        sort: str | None = None,
        sort_descending: bool | None = None,
        empty_text: str = "nothing here",
        cursor_blurred: bool = True,
        selectable: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.table = table
        self.columns = table.columns
        self.sort_key = table.default_sort if sort is None else sort
        column = table.column(self.sort_key)
        self.sort_descending = column.descending_first if sort_descending is None else sort_descending
        self.filter_text = ""
        self.empty_text = empty_text
        self.cursor_blurred = cursor_blurred  # show the cursor (dimmed) while another widget has focus
        self.selectable = selectable  # enter opens the row (Selected); the footer shows it only then
        self._data: RowSet = EMPTY
        self._rows: tuple[Row, ...] = ()
        self._data_widths: tuple[int, ...] = tuple(len(c.label) + 2 for c in self.columns)
        self._widths = self._data_widths  # the last column shrunk to the screen when it is the one too wide
        self._cursor = 0
        self._last_key: int | None = None

    # -- data -------------------------------------------------------------------------------

    @property
    def rows(self) -> tuple[Row, ...]:
        """The rows shown, filtered and sorted."""
        return self._rows

    @property
    def all_rows(self) -> tuple[Row, ...]:
        return self._data.rows

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_key(self) -> int | None:
        return self._rows[self._cursor].key if self._rows else None

    def set_table(self, table: Table[Any]) -> None:
        """Show rows of another table (the same rows with other columns); the sort stays where
        the new table has its column. set_data follows with rows of TABLE."""
        if table is self.table:
            return
        self.table = table
        self.columns = table.columns
        if self.sort_key not in table.keys:
            self.sort_key = table.default_sort
            self.sort_descending = table.column(self.sort_key).descending_first
        self._data = EMPTY
        self._rows = ()
        self._data_widths = tuple(len(c.label) + 2 for c in self.columns)
        self._widths = self._data_widths

    def set_data(self, data: RowSet, *, reset: bool = False) -> None:
        """Show new rows; the cursor stays on its row's key while that key is there.

        With `reset`, the cursor goes to the first row (another process's buffers).
        """
        key = None if reset else self.cursor_key
        self._data = data
        if data.widths:
            self._data_widths = data.widths
        self._rearrange(key)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._rearrange(self.cursor_key)

    @property
    def sort_label(self) -> str:
        """The header of the column sorted by ('change' for the mark column, which has none)."""
        return self.table.column(self.sort_key).label or "change"

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Sort by column `key`; picking the sorted column again flips the order."""
        column = self.table.column(key)
        if descending is None:
            descending = not self.sort_descending if key == self.sort_key else column.descending_first
        self.sort_key = key
        self.sort_descending = descending
        self._rearrange(self.cursor_key)

    def move_cursor_to_key(self, key: int) -> bool:
        for i, r in enumerate(self._rows):
            if r.key == key:
                self._move(i)
                return True
        return False

    def _rearrange(self, key: int | None) -> None:
        self._rows = arrange(self.table, self._data.rows, self.sort_key, self.sort_descending, self.filter_text)
        index = 0
        if key is not None:
            for i, r in enumerate(self._rows):
                if r.key == key:
                    index = i
                    break
            else:
                index = min(self._cursor, max(len(self._rows) - 1, 0))
        self._cursor = index
        self._fit_widths()
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Arranged(self))
        self._post_highlight()

    # -- cursor -----------------------------------------------------------------------------

    def _post_highlight(self) -> None:
        key = self.cursor_key
        if key != self._last_key:
            self._last_key = key
            self.post_message(self.Highlighted(self, key))

    def _page(self) -> int:
        return max(self.scrollable_content_region.height - 2, 1)

    def _move(self, index: int) -> None:
        self._cursor = max(0, min(index, len(self._rows) - 1)) if self._rows else 0
        self._scroll_to_cursor()
        self.refresh()
        self._post_highlight()

    def _scroll_to_cursor(self) -> None:
        visible = self.scrollable_content_region.height - 1
        if visible <= 0:
            return
        top = round(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False, immediate=True)

    def _fit_widths(self) -> None:
        """Widths to render with, and the virtual size: only what is left overflows sideways."""
        widths = list(self._data_widths)
        gaps = len(_GAP) * (len(widths) - 1)
        room = self.scrollable_content_region.width - gaps - sum(widths[:-1])
        floor = len(self.columns[-1].label) + 2
        if room > 0 and widths[-1] > room:
            widths[-1] = max(room, floor)
        self._widths = tuple(widths)
        self.virtual_size = Size(sum(widths) + gaps, max(len(self._rows), 1) + 1)  # room for the empty text

    def on_resize(self, _event: events.Resize) -> None:
        self._fit_widths()
        self._scroll_to_cursor()

    def action_cursor_up(self) -> None:
        self._move(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self._cursor + 1)

    def action_page_up(self) -> None:
        self._move(self._cursor - self._page())

    def action_page_down(self) -> None:
        self._move(self._cursor + self._page())

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._rows) - 1)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "select" or self.selectable  # False: hidden from the footer, enter does nothing

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None and self.selectable:
            self.post_message(self.Selected(self, key))

    def action_sort_next(self) -> None:
        keys = self.table.keys
        self.sort_by(keys[(keys.index(self.sort_key) + 1) % len(keys)])

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_key, not self.sort_descending)

    def column_at(self, x: int) -> str | None:
        """The key of the column under content x (scroll included)."""
        edge = 0
        for column, w in zip(self.columns, self._widths, strict=True):
            edge += w + len(_GAP)
            if x < edge:
                return column.key
        return None

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        scroll_x, scroll_y = self.scroll_offset
        if offset.y == 0:
            column = self.column_at(offset.x + scroll_x)
            if column is not None:
                self.sort_by(column)
            event.stop()
            return
        index = scroll_y + offset.y - 1
        if 0 <= index < len(self._rows):
            again = index == self._cursor
            self._move(index)
            if again:
                self.action_select()
            event.stop()

    # -- rendering --------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def _header_segments(self) -> list[Segment]:
        header = self.get_component_rich_style("row-table--header")
        sorted_style = header + Style(bold=True, underline=True)
        segments: list[Segment] = []
        arrow = " ▼" if self.sort_descending else " ▲"
        for i, (col, w) in enumerate(zip(self.columns, self._widths, strict=True)):
            if i:
                segments.append(Segment(_GAP, header))
            if col.key == self.sort_key:
                label = col.label + arrow if col.label else ("▼" if self.sort_descending else "▲")
                segments.append(Segment(fit(label, w, col.justify), sorted_style))
            else:
                segments.append(Segment(fit(col.label, w, col.justify), header))
        return segments

    def _row_style(self, row: Row, base: Style, cursor: bool) -> Style:
        # Full (not partial) component styles: their translucent colours are blended with the
        # background only that way.
        if cursor:
            style = self.get_component_rich_style("row-table--cursor")
            if row.change is not Change.SAME:
                style += Style(bold=row.change is not Change.GONE, strike=row.change is Change.GONE)
            return style
        if row.change is not Change.SAME:
            return self.get_component_rich_style(_CHANGE_CLASS[row.change])
        return base

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("row-table--header")
            return Strip(self._header_segments()).crop_extend(scroll_x, scroll_x + width, header)
        index = scroll_y + y - 1
        if index >= len(self._rows):
            if index == 0:
                text = self.empty_text
                if self.filter_text and self._data.rows:
                    text = f"no rows match “{self.filter_text}” (esc clears the filter)"
                empty = self.get_component_rich_style("row-table--empty")
                return Strip([Segment(" " + text, empty)]).crop_extend(scroll_x, scroll_x + width, base)
            return Strip.blank(width, base)
        row = self._rows[index]
        style = self._row_style(row, base, index == self._cursor and (self.cursor_blurred or self.has_focus))
        cells = [fit(cell, w, col.justify) for cell, w, col in zip(row.cells, self._widths, self.columns, strict=True)]
        text = _GAP.join(cells)
        return Strip([Segment(text, style)], cell_len(text)).crop_extend(scroll_x, scroll_x + width, style)
