"""history/store.py and tracker.py: the schema, changes stored once (not per sample), a reused
pid as a new process, and the recorder loop on synthetic snapshots."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from history_fakes import snapshot

from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.history import recorder, store
from dmabuf_inspect.history.recorder import RecordOptions, record
from dmabuf_inspect.history.tracker import ChangeTracker
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot

KiB = 1024


def replay(monkeypatch: pytest.MonkeyPatch, path: str, snaps: list[Snapshot]) -> sqlite3.Connection:
    """Run the real recorder loop over `snaps` instead of scans; the recording, opened for reading."""
    it: Iterator[Snapshot] = iter(snaps)
    monkeypatch.setattr(recorder, "collect", lambda roots, include_maps: next(it))
    result = record(Roots.from_tree("/nonexistent"), RecordOptions(output=path, interval_s=0.001, samples=len(snaps)))
    assert result.samples == len(snaps)
    return store.open_read(path)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_schema_tables_and_format(tmp_path: Any) -> None:
    conn = store.create(str(tmp_path / "r.db"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        "meta",
        "samples",
        "processes",
        "process_totals",
        "buffers",
        "holdings",
        "creators",
        "trace_events",
        "short_lived",
    }
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.finish(conn)
    assert store.meta(store.open_read(str(tmp_path / "r.db")))["format"] == store.FORMAT


def test_an_existing_file_is_refused_unless_forced(tmp_path: Any) -> None:
    path = str(tmp_path / "r.db")
    store.finish(store.create(path))
    with pytest.raises(UsageError, match="--force"):
        store.create(path)
    store.finish(store.create(path, overwrite=True))


def test_open_read_refuses_other_files(tmp_path: Any) -> None:
    other = tmp_path / "x.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(store.RecordingError):
        store.open_read(str(other))
    text = tmp_path / "x.txt"
    text.write_text("hello")
    with pytest.raises(store.RecordingError):
        store.open_read(str(text))


def test_steady_buffers_are_stored_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sizes = {i: 4 * KiB for i in range(1, 201)}
    held = {(100 + p, 5000 + p, f"app{p}"): range(1 + 20 * p, 21 + 20 * p) for p in range(10)}
    snaps = [snapshot(held, sizes, taken_at=1000.0 + i) for i in range(50)]
    conn = replay(monkeypatch, str(tmp_path / "r.db"), snaps)
    assert count(conn, "samples") == 50
    assert count(conn, "buffers") == 200
    assert count(conn, "holdings") == 200
    assert count(conn, "processes") == 10
    assert count(conn, "process_totals") == 10  # the first sample only: nothing changed after it
    assert conn.execute("SELECT count(*) FROM buffers WHERE last_sample IS NULL").fetchone()[0] == 200


def test_changes_open_and_close_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sizes = {1: 4096, 2: 8192, 3: 4096}
    a = snapshot({(10, 1, "a"): [1, 2]}, sizes, taken_at=1.0)
    b = snapshot({(10, 1, "a"): [1], (11, 7, "b"): [2]}, sizes, taken_at=2.0)  # buffer 2 moves to b
    c = snapshot({(11, 7, "b"): [2, 3]}, sizes, taken_at=3.0, fds={(11, 2): (4, 5)})  # a is gone; b dups its fd
    conn = replay(monkeypatch, str(tmp_path / "r.db"), [a, b, c])
    buffers = dict(conn.execute("SELECT inode, last_sample FROM buffers"))
    assert buffers == {1: 2, 2: None, 3: None}
    holdings = conn.execute(
        "SELECT b.inode, p.pid, h.fds, h.first_sample, h.last_sample FROM holdings h"
        " JOIN buffers b ON b.id = h.buffer_id JOIN processes p ON p.id = h.process_id"
        " ORDER BY h.first_sample, b.inode, p.pid"
    ).fetchall()
    assert holdings == [
        (1, 10, "10", 1, 2),
        (2, 10, "11", 1, 1),
        (2, 11, "10", 2, 2),
        (2, 11, "4,5", 3, None),
        (3, 11, "11", 3, None),
    ]
    procs = conn.execute("SELECT pid, first_sample, last_sample FROM processes ORDER BY id").fetchall()
    assert procs == [(10, 1, 2), (11, 2, None)]
    totals = conn.execute(
        "SELECT p.pid, t.sample_id, t.bytes, t.buffers FROM process_totals t JOIN processes p ON p.id = t.process_id"
        " ORDER BY t.sample_id, p.pid"
    ).fetchall()
    assert totals == [(10, 1, 12288, 2), (10, 2, 4096, 1), (11, 2, 8192, 1), (10, 3, 0, 0), (11, 3, 12288, 2)]


def test_a_reused_pid_is_a_new_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sizes = {1: 4096, 2: 4096}
    first = snapshot({(42, 1000, "server"): [1]}, sizes, taken_at=1.0)
    restarted = snapshot({(42, 2000, "server"): [2]}, sizes, taken_at=2.0)
    conn = replay(monkeypatch, str(tmp_path / "r.db"), [first, restarted])
    rows = conn.execute("SELECT pid, start_ticks, first_sample, last_sample FROM processes ORDER BY id").fetchall()
    assert rows == [(42, 1000, 1, 1), (42, 2000, 2, None)]


def test_same_inode_with_another_size_is_another_buffer() -> None:
    tracker = ChangeTracker()
    tracker.update(snapshot({(1, 1, "a"): [7]}, {7: 4096}), 1)
    ch = tracker.update(snapshot({(1, 1, "a"): [7]}, {7: 8192}), 2)
    assert [b.size_bytes for b in ch.new_buffers] == [8192]
    assert ch.ended_buffers == [1]
    assert len(ch.ended_holdings) == 1 and len(ch.new_holdings) == 1  # the hold is on the new buffer


def test_forget_buffer_reopens_it_at_the_next_sample() -> None:
    tracker = ChangeTracker()
    snap = snapshot({(1, 1, "a"): [7]}, {7: 4096})
    tracker.update(snap, 1)
    tracker.forget_buffer(7)
    ch = tracker.update(snap, 2)
    assert ch.ended_buffers == [1] and [b.id for b in ch.new_buffers] == [2]
    assert ch.new_inodes == {7: 2}
    assert len(ch.new_holdings) == 1 and len(ch.ended_holdings) == 1


def test_rename_updates_the_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sizes = {1: 4096}
    a = snapshot({(1, 1, "a"): [1]}, sizes, names={1: "before"})
    b = snapshot({(1, 1, "a"): [1]}, sizes, names={1: "after\udcff"})
    conn = replay(monkeypatch, str(tmp_path / "r.db"), [a, b])
    assert conn.execute("SELECT name FROM buffers").fetchall() == [(b"after\xff",)]


def test_kernel_only_totals(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sizes = {1: 4096, 2: 65536}
    snap = snapshot({(1, 1, "a"): [1]}, sizes, kernel_only=[2])
    conn = replay(monkeypatch, str(tmp_path / "r.db"), [snap])
    row = conn.execute("SELECT buffers, bytes, userspace_buffers, kernel_only_buffers, kernel_only_bytes FROM samples")
    assert row.fetchone() == (2, 69632, 1, 1, 65536)


def test_a_finished_recording_is_one_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    path = str(tmp_path / "r.db")
    replay(monkeypatch, path, [snapshot({(1, 1, "a"): [1]}, {1: 4096})]).close()
    assert sorted(os.listdir(tmp_path)) == ["r.db"]


def test_ten_thousand_steady_buffers_cost_no_rows_per_sample(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The size budget (50 MB for an hour at 1 s): after the first sample, a steady sample adds
    one `samples` row and nothing else."""
    sizes = {i: 4096 for i in range(1, 10001)}
    held = {(1000 + p, p, f"load{p}"): range(1 + 100 * p, 101 + 100 * p) for p in range(100)}
    snap = snapshot(held, sizes)
    path = str(tmp_path / "r.db")
    replay(monkeypatch, path, [snap] * 2).close()
    size_2 = os.path.getsize(path)
    replay(monkeypatch, str(tmp_path / "r2.db"), [snap] * 202).close()
    per_sample = (os.path.getsize(tmp_path / "r2.db") - size_2) / 200
    assert per_sample < 200, per_sample  # bytes: 3600 samples cost < 1 MB
    assert size_2 < 5_000_000
