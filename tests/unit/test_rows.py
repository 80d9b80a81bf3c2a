"""_fdwalk.rows(): rows of a NamedTuple made in C from columns are the rows the Python way makes
(map(tuple.__new__, repeat(cls), zip(*columns))): type, fields, hashes; and a scan made with it is
the scan made without it."""

from __future__ import annotations

from itertools import repeat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_inspect.kernel import _fdwalk
from dmabuf_inspect.kernel.bpf import records as bpf_records
from dmabuf_inspect.kernel.bpf.programs import VMA
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Buffer, MapEntry
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.scan import snapshot

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class Row(NamedTuple):
    a: int
    b: str | None
    c: tuple[int, ...]


values = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.tuples(st.integers()))


def _as(kind: str, column: list[Any]) -> Any:
    if kind == "list":
        return list(column)
    if kind == "tuple":
        return tuple(column)
    return iter(column) if kind == "iter" else map(lambda v: v, column)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 20).flatmap(lambda n: st.lists(st.lists(values, min_size=n, max_size=n), min_size=3, max_size=3)),
    st.lists(st.sampled_from(["list", "tuple", "iter", "map"]), min_size=3, max_size=3),
)
def test_rows_in_c_are_the_python_rows(columns: list[list[Any]], kinds: list[str]) -> None:
    n = len(columns[0])
    made = _fdwalk.rows(Row, n, tuple(_as(k, c) for k, c in zip(kinds, columns, strict=True)))
    python = list(map(tuple.__new__, repeat(Row), zip(*columns, strict=True)))
    assert made == python
    for row, plain in zip(made, python, strict=True):
        assert type(row) is Row
        assert (row.a, row.b, row.c) == (plain[0], plain[1], plain[2])
        if all(not isinstance(v, list) for v in row):
            assert hash(row) == hash(tuple(plain))


def test_rows_refuses_what_it_cannot_make() -> None:
    with pytest.raises(ValueError, match="column 1 has 1 items, not 2"):
        _fdwalk.rows(Row, 2, ([1, 2], ["x"], [(), ()]))
    with pytest.raises(ValueError, match="column 2 ends before row 1"):
        _fdwalk.rows(Row, 2, ([1, 2], ["x", "y"], iter([()])))
    with pytest.raises(TypeError, match="a tuple type"):
        _fdwalk.rows(dict, 0, ([], [], []))  # type: ignore[type-var]
    with pytest.raises(TypeError):
        _fdwalk.rows(Row, 1, ([1], ["x"], 5))  # type: ignore[arg-type]
    assert _fdwalk.rows(Row, 0, ([], (), iter([]))) == []


@pytest.mark.parametrize("tree", ["k7.3", "k6.12"])
def test_a_scan_with_rows_in_c_is_the_scan_without(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = Roots.from_tree(str(FIXTURES / tree), bpf=False)
    with_c = snapshot.collect(roots)
    monkeypatch.setattr(snapshot, "_c_rows", None)
    monkeypatch.setattr(bpf_records, "_c_rows", None)
    without = snapshot.collect(roots)
    assert with_c.buffers and with_c.buffers == without.buffers
    assert all(type(b) is Buffer for b in with_c.buffers)
    assert [hash(b) for b in with_c.buffers] == [hash(b) for b in without.buffers]


def test_vma_records_become_map_entries_in_c() -> None:
    data = VMA.pack(7, 0, 0x1000, 0x3000, 2, 99, 0x1 | 0x2 | 0x80, b"buf\0".ljust(32, b"\0"))
    (entry,) = bpf_records.parse_vma_records(data, 4096)[7]
    assert type(entry) is MapEntry and entry == MapEntry(0x1000, 0x3000, "rw-s", 8192, 99, "buf")
