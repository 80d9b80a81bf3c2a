"""`_fdwalk.weave()`: the C writer of the JSON text of many objects of one shape (issue 12).

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
    """A value as weave() writes it."""
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return ",".join(map(int.__repr__, value))
    if isinstance(value, int):
        return int.__repr__(value)
    return str(value)


def reference(pieces: tuple[str, ...], rows: list[tuple[Any, ...]], sep: str) -> str:
    return sep.join("".join(chain.from_iterable(zip(pieces, [*map(text, row), ""], strict=True))) for row in rows)


ints = st.integers(min_value=-(2**70), max_value=2**70)
values = st.one_of(st.none(), ints, st.text(st.characters(max_codepoint=127)), st.tuples(ints, ints, ints))


@given(st.lists(st.tuples(values, values, values)), st.sampled_from([",", "", ",\n"]))
def test_weave_writes_what_join_writes(rows: list[tuple[Any, ...]], sep: str) -> None:
    assert _fdwalk.weave(PIECES, rows, sep) == reference(PIECES, rows, sep)


def test_a_nested_column_is_woven_as_rows() -> None:
    rows = [(1, ((10, (3,)), (11, (4, 5))), ()), (2, (), (7,))]
    expected = '{"a":1,"b":{"pid":10,"fds":[3]},{"pid":11,"fds":[4,5]},"c":[]},{"a":2,"b":,"c":[7]}'
    assert _fdwalk.weave(PIECES, rows, ",", {1: NESTED}) == expected


def test_any_iterable_of_rows() -> None:
    rows = zip([1, 2], ["x", "y"], [(), (1,)], strict=True)
    assert _fdwalk.weave(PIECES, rows, ";") == '{"a":1,"b":x,"c":[]};{"a":2,"b":y,"c":[1]}'


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([(True, 1, 2)], TypeError),  # a bool is no number here: the caller writes true/false
        ([(1.5, 1, 2)], TypeError),
        ([(1, 2)], TypeError),  # a row of the wrong length
        ([[1, 2, 3]], TypeError),  # a row that is no tuple
        ([(1, (1, "x"), 2)], TypeError),
        ([(1, "é", 2)], ValueError),  # not ASCII: the caller JSON-encodes strings first
    ],
)
def test_what_it_cannot_write_is_refused(rows: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="weave"):
        _fdwalk.weave(PIECES, rows, ",")


def test_an_error_from_the_rows_iterator_comes_through() -> None:
    def rows() -> Any:
        yield (1, 2, 3)
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        _fdwalk.weave(PIECES, rows(), ",")


# weave_columns(): the same text from columns, with no row tuple, some columns through a table.
@given(st.lists(st.tuples(values, values, st.sampled_from(["x", "y", 3]))), st.sampled_from([",", "", ",\n"]))
def test_weave_columns_writes_what_weave_writes(rows: list[tuple[Any, ...]], sep: str) -> None:
    columns = tuple(map(list, zip(*rows, strict=True))) if rows else ([], [], [])
    table = {"x": '"ex"', "y": "null", 3: "[3]"}
    looked_up = [(a, b, table[c]) for a, b, c in rows]
    assert _fdwalk.weave_columns(PIECES, columns, sep, {}, {2: table}) == _fdwalk.weave(PIECES, looked_up, sep)


def test_weave_columns_with_a_nested_column_and_tuples() -> None:
    columns = ((1, 2), (((10, (3,)), (11, (4, 5))), ()), [(), (7,)])
    expected = '{"a":1,"b":{"pid":10,"fds":[3]},{"pid":11,"fds":[4,5]},"c":[]},{"a":2,"b":,"c":[7]}'
    assert _fdwalk.weave_columns(PIECES, columns, ",", {1: NESTED}, {}) == expected


@pytest.mark.parametrize(
    ("columns", "lookups", "error"),
    [
        (((1,), (2,)), {}, ValueError),  # a column fewer than the pieces want
        (((1, 2), (2,), (3,)), {}, ValueError),  # columns of different lengths
        (((1,), {2}, (3,)), {}, TypeError),  # a column that is no tuple nor list
        (((1,), (2,), ("z",)), {2: {"x": "1"}}, KeyError),  # a value its table has no text for
        (((1,), (2,), ("x",)), {2: ["1"]}, TypeError),  # a table that is no dict
        (((True,), (2,), (3,)), {}, TypeError),
    ],
)
def test_what_weave_columns_cannot_write_is_refused(
    columns: tuple[Any, ...], lookups: dict[int, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="weave"):
        _fdwalk.weave_columns(PIECES, columns, ",", {}, lookups)
