"""A scan's holdings (who holds each inode): the C way (_fdwalk.hold) adds exactly what the
Python way adds, process after process, mapped or not; each process's Rss and Pss summed in C
(_fdwalk.held_sums) are the Python sums."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_inspect.kernel import _fdwalk
from dmabuf_inspect.model import Buffer, Holder, MapEntry
from dmabuf_inspect.scan import snapshot

inodes = st.integers(1, 12)
fd_tables = st.dictionaries(inodes, st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True).map(sorted))
map_tables = st.dictionaries(inodes, st.lists(st.integers(1, 4), min_size=1, max_size=2))


def _scan(fds: dict[int, list[int]], maps: dict[int, list[int]]) -> snapshot._ProcScan:
    pscan = snapshot._ProcScan({inode: tuple(f) for inode, f in fds.items()})
    pscan.maps = {
        inode: [MapEntry(0x1000 * k, 0x1000 * (k + pages), "rw-s", 0, inode, None) for k, pages in enumerate(runs)]
        for inode, runs in maps.items()
    }
    return pscan


def _holdings(procs: list[tuple[int, snapshot._ProcScan]], c: bool) -> snapshot._Holdings:
    saved = snapshot._c_hold
    snapshot._c_hold = _fdwalk.hold if c else None
    try:
        holdings = snapshot._Holdings()
        for pid, pscan in procs:
            holdings.add(pid, pscan)
        return holdings
    finally:
        snapshot._c_hold = saved


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(fd_tables, map_tables), max_size=6))
def test_the_c_holdings_are_the_python_holdings(
    tables: list[tuple[dict[int, list[int]], dict[int, list[int]]]],
) -> None:
    procs = [(100 + k, _scan(fds, maps)) for k, (fds, maps) in enumerate(tables)]
    with_c, without = _holdings(procs, c=True), _holdings(procs, c=False)
    assert with_c.held == without.held
    assert with_c.refs == without.refs
    for holders in with_c.held.values():
        for h in holders:
            assert type(h) is Holder and hash(h) == hash(tuple(h))


def test_c_holdings_of_a_buffer_two_processes_share() -> None:
    first, second = _scan({7: [3], 8: [4, 9]}, {}), _scan({7: [5]}, {7: [1, 2]})
    holdings = _holdings([(10, first), (11, second)], c=True)
    assert holdings.held[7] == (Holder(10, (3,), 0, 0), Holder(11, (5,), 2, 0x3000))
    assert holdings.held[8] == (Holder(10, (4, 9), 0, 0),)
    assert holdings.refs == {7: 1 + 1 + 2, 8: 2}


def test_hold_refuses_what_it_cannot_add() -> None:
    with pytest.raises(TypeError, match="tuple type"):
        _fdwalk.hold({}, {}, 1, {7: (3,)}, dict, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a tuple"):
        _fdwalk.hold({}, {}, 1, {7: [3]}, Holder, None)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mappings must be a list"):
        _fdwalk.hold({}, {}, 1, {}, Holder, {7: (1, 2)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="a mapping must be a tuple"):
        _fdwalk.hold({}, {}, 1, {}, Holder, {7: [3]})


def _held_bytes(buffers: list[Buffer], helds: list[AbstractSet[int]], c: bool) -> list[tuple[int, int]]:
    saved = snapshot._c_held_sums
    snapshot._c_held_sums = _fdwalk.held_sums if c else None
    try:
        return snapshot._held_bytes(buffers, helds)
    finally:
        snapshot._c_held_sums = saved


def _buffer(inode: int, size: int, holders: int) -> Buffer:
    held = tuple(Holder(100 + k, (k,), 0, 0) for k in range(holders))
    return Buffer(inode, size, "bufinfo", "system", "heap", None, holders, held, (), (), 0, True)


sizes = st.one_of(st.integers(0, 1 << 40), st.integers(0, (1 << 70)))  # past int64: Python sums then


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers(-5, 1 << 66), st.tuples(sizes, st.integers(0, 4)), max_size=12), st.data())
def test_the_c_sums_of_held_bytes_are_the_python_sums(table: dict[int, tuple[int, int]], data: st.DataObject) -> None:
    buffers = sorted(_buffer(inode, size, n) for inode, (size, n) in table.items())
    held = [b.inode for b in buffers if b.holders]
    some = st.sets(st.sampled_from(held)) if held else st.just(set())
    helds: list[AbstractSet[int]] = data.draw(st.lists(some, max_size=5))
    assert _held_bytes(buffers, helds, c=True) == _held_bytes(buffers, helds, c=False)


def test_held_sums_in_c_and_where_it_steps_aside() -> None:
    buffers = [_buffer(5, 4096, 2), _buffer(6, 100, 0), _buffer(9, 8192, 1)]
    assert _fdwalk.held_sums(buffers, [{5, 9}, {5}, set()]) == [(12288, 2048 + 8192), (4096, 2048), (0, 0)]
    assert _fdwalk.held_sums(buffers[::-1], [{5}]) is None  # not sorted by inode
    assert _fdwalk.held_sums(buffers, [{6}]) is None  # no process holds 6: Python raises
    assert _fdwalk.held_sums([_buffer(5, 1 << 62, 1), _buffer(7, 1 << 62, 1)], [{5, 7}]) is None  # past int64
    with pytest.raises(TypeError):
        _fdwalk.held_sums(buffers, [5])
