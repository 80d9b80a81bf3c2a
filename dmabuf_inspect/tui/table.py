"""Tables declared once: each column is a header, a cell and a sort key, looked up by its key.

A `Table` turns the items of one kind (a process line, a buffer held by a process...) into
`Row`s: every cell formatted and escaped once, in the worker thread, with the value each
column sorts by beside it. The widget, the screens and the export name columns by key
("rss_bytes"), never by position. Nothing here imports textual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from rich.cells import cell_len

from dmabuf_inspect.scan.diff import Change

SortValue = int | str
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Column(Generic[T]):
    key: str  # the name exports and lookups use
    label: str  # the header
    cell: Callable[[T], str]  # the text shown, escaped
    sort: Callable[[T], SortValue]  # what the column sorts by
    justify: Literal["left", "right"] = "left"
    max_width: int = 40
    descending_first: bool = False  # numbers sort largest first when the column is picked


@dataclass(frozen=True, slots=True)
class Row:
    key: int  # pid, inode, or the index of a small table's row
    cells: tuple[str, ...]  # escaped, ready to show, in the table's column order
    sort: tuple[SortValue, ...]  # one per column, same order
    change: Change = Change.SAME
    search: str = ""  # lower-case text the `/` filter looks in


@dataclass(frozen=True, slots=True)
class Table(Generic[T]):
    """The columns of one table and the column it is sorted by at first."""

    name: str
    columns: tuple[Column[T], ...]
    default_sort: str
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _cells: tuple[Callable[[T], str], ...] = field(init=False, repr=False, compare=False)
    _sorts: tuple[Callable[[T], SortValue], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {c.key: i for i, c in enumerate(self.columns)}
        if len(index) != len(self.columns):
            raise ValueError(f"table {self.name}: two columns share a key")
        if self.default_sort not in index:
            raise ValueError(f"table {self.name}: no column {self.default_sort!r} to sort by")
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_cells", tuple(c.cell for c in self.columns))
        object.__setattr__(self, "_sorts", tuple(c.sort for c in self.columns))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.columns)

    def index(self, key: str) -> int:
        """Where column KEY sits in a row's cells; KeyError for a column this table lacks."""
        return self._index[key]

    def column(self, key: str) -> Column[T]:
        return self.columns[self._index[key]]

    def row(self, key: int, item: T, change: Change = Change.SAME, search: str = "") -> Row:
        cells = tuple([cell(item) for cell in self._cells])
        return Row(key, cells, tuple([sort(item) for sort in self._sorts]), change, search)

    def cell(self, row: Row, key: str) -> str:
        return row.cells[self._index[key]]

    def value(self, row: Row, key: str) -> SortValue:
        return row.sort[self._index[key]]


@dataclass(frozen=True, slots=True)
class RowSet:
    rows: tuple[Row, ...]
    widths: tuple[int, ...]  # of the widest cell per column, capped by the column's max_width

    @classmethod
    def build(cls, table: Table[T], rows: Iterable[Row]) -> RowSet:
        columns = table.columns
        rows = tuple(rows)
        floor = [len(c.label) + 2 if c.label else 1 for c in columns]  # room for the sort arrow
        widths = list(floor)
        caps = [max(c.max_width, f) for c, f in zip(columns, floor, strict=True)]
        for i in range(len(columns)):
            cells = [r.cells[i] for r in rows]
            if all(map(str.isascii, cells)):
                w = max(map(len, cells), default=0)
            else:
                w = max(map(cell_len, cells), default=0)
            widths[i] = min(max(widths[i], w), caps[i])
        return cls(rows, tuple(widths))


EMPTY = RowSet((), ())


def arrange(table: Table[T], rows: Sequence[Row], sort: str, descending: bool, query: str) -> tuple[Row, ...]:
    """Filter by `query` (case-insensitive substring), then sort by column `sort`.

    Ties keep ascending key order in both directions (Python's sort is stable under reverse).
    """
    column = table.index(sort)
    q = query.strip().lower()
    picked = [r for r in rows if q in r.search] if q else list(rows)
    if descending:
        picked.sort(key=lambda r: r.key)
        picked.sort(key=lambda r: r.sort[column], reverse=True)
    else:
        picked.sort(key=lambda r: (r.sort[column], r.key))
    return tuple(picked)
