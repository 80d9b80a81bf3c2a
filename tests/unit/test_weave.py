"""`_fdwalk.weave_columns()`: the C writer of the JSON text of many objects of one shape (issue 12).

It must write exactly what the Python way writes ("".join of the pieces and the values' text),
and refuse what it cannot write rather than write something else.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_inspect.kernel import _fdwalk

PIECES = ('{"a":', ',"b":', ',"c":[', "]}")
NESTED = ('{"pid":', ',"fds":[', "]}")


def text(value: Any) -> str:
    """A value as weave_columns() writes it."""
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return ",".join(map(int.__repr__, value))
    if isinstance(value, int):
        return int.__repr__(value)
    return str(value)


def reference(pieces: tuple[str, ...], rows: list[tuple[Any, ...]], sep: str) -> str:
    return sep.join("".join(chain.from_iterable(zip(pieces, [*map(text, row), ""], strict=True))) for row in rows)


def columns_of(rows: list[tuple[Any, ...]], width: int = 3) -> tuple[list[Any], ...]:
    return tuple(map(list, zip(*rows, strict=True))) if rows else tuple([] for _ in range(width))


ints = st.integers(min_value=-(2**70), max_value=2**70)
values = st.one_of(st.none(), ints, st.text(st.characters(max_codepoint=127)), st.tuples(ints, ints, ints))


@given(st.lists(st.tuples(values, values, values)), st.sampled_from([",", "", ",\n"]))
def test_weave_columns_writes_what_join_writes(rows: list[tuple[Any, ...]], sep: str) -> None:
    assert _fdwalk.weave_columns(PIECES, columns_of(rows), sep, {}, {}) == reference(PIECES, rows, sep)


@given(st.lists(st.tuples(values, values, st.sampled_from(["x", "y", 3]))), st.sampled_from([",", "", ",\n"]))
def test_a_column_with_a_table_is_written_through_it(rows: list[tuple[Any, ...]], sep: str) -> None:
    table = {"x": '"ex"', "y": "null", 3: "[3]"}
    looked_up = [(a, b, table[c]) for a, b, c in rows]
    assert _fdwalk.weave_columns(PIECES, columns_of(rows), sep, {}, {2: table}) == reference(PIECES, looked_up, sep)


def test_a_nested_column_is_woven_as_rows() -> None:
    columns = ((1, 2), (((10, (3,)), (11, (4, 5))), ()), [(), (7,)])
    expected = '{"a":1,"b":{"pid":10,"fds":[3]},{"pid":11,"fds":[4,5]},"c":[]},{"a":2,"b":,"c":[7]}'
    assert _fdwalk.weave_columns(PIECES, columns, ",", {1: NESTED}, {}) == expected


def test_tuples_and_lists_of_one_length_are_columns() -> None:
    assert _fdwalk.weave_columns(PIECES, ([1, 2], ("x", "y"), [(), (1,)]), ";", {}, {}) == (
        '{"a":1,"b":x,"c":[]};{"a":2,"b":y,"c":[1]}'
    )
    assert _fdwalk.weave_columns(PIECES, ((), (), ()), ",", {}, {}) == ""


@pytest.mark.parametrize(
    ("columns", "lookups", "error"),
    [
        (((True,), (1,), (2,)), {}, TypeError),  # a bool is no number here: the caller writes true/false
        (((1.5,), (1,), (2,)), {}, TypeError),
        (((1,), ((1, "x"),), (2,)), {}, TypeError),
        (((1,), ("é",), (2,)), {}, ValueError),  # not ASCII: the caller JSON-encodes strings first
        (((1,), (2,)), {}, ValueError),  # a column fewer than the pieces want
        (((1, 2), (2,), (3,)), {}, ValueError),  # columns of different lengths
        (((1,), {2}, (3,)), {}, TypeError),  # a column that is no tuple nor list
        (((1,), (2,), ("z",)), {2: {"x": "1"}}, KeyError),  # a value its table has no text for
        (((1,), (2,), ("x",)), {2: ["1"]}, TypeError),  # a table that is no dict
    ],
)
def test_what_it_cannot_write_is_refused(
    columns: tuple[Any, ...], lookups: dict[int, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="weave"):
        _fdwalk.weave_columns(PIECES, columns, ",", {}, lookups)
