"""The recording file: one SQLite database (stdlib sqlite3, WAL), changes only.

A steady buffer costs one `buffers` row and one `holdings` row per holder for the whole
recording, not one per sample: a row opens when a sample first sees something and closes
(`last_sample`) at the last sample that saw it. `last_sample` NULL means "still there at the
last sample". Per-process totals are a step function: a row only when a process's bytes or
buffers changed. Each sample is one transaction, so the file is consistent after any stop;
a recorder killed mid-sample loses that sample only.

    meta            key -> value: format, kernel, started, ended, interval_s, tracing, trace_clock,
                    lost_events, sources (JSON)
    samples         one row per sample: time, scan_s, totals (all, userspace, kernel-only)
    processes       a process is (pid, start_ticks): a reused pid is another row
    process_totals  (process, sample) -> bytes, buffers, where they changed
    buffers         one row per buffer life: inode, size, exporter, name, first/last sample, creator
    holdings        one row per (buffer, process) hold while its fds and maps stay the same
    creators        the dma_buf_export event of a buffer a sample saw: pid, start_ticks, comm, time
    trace_events    dma_buf_fd of another process, attach and detach, for buffers a sample saw
    short_lived     per creating process: exports whose buffer no sample saw (count, bytes)

Text that any process chose (buffer names, comm, cmdline) is stored as BLOB: its exact bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from dmabuf_inspect.errors import DmabufInspectError, UsageError

FORMAT = "dmabuf-inspect-record/1"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    scan_s REAL NOT NULL,
    buffers INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    userspace_buffers INTEGER NOT NULL,
    userspace_bytes INTEGER NOT NULL,
    kernel_only_buffers INTEGER,
    kernel_only_bytes INTEGER,
    trace_events INTEGER,
    lost_events INTEGER
);
CREATE TABLE processes (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    comm BLOB NOT NULL,
    cmdline BLOB NOT NULL,
    uid INTEGER,
    first_sample INTEGER NOT NULL,
    last_sample INTEGER
);
CREATE TABLE process_totals (
    process_id INTEGER NOT NULL,
    sample_id INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    buffers INTEGER NOT NULL,
    PRIMARY KEY (process_id, sample_id)
) WITHOUT ROWID;
CREATE TABLE creators (
    id INTEGER PRIMARY KEY,
    inode INTEGER NOT NULL,
    time REAL NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    tid INTEGER NOT NULL,
    comm BLOB,
    exporter TEXT NOT NULL,
    size_bytes INTEGER NOT NULL
);
CREATE TABLE buffers (
    id INTEGER PRIMARY KEY,
    inode INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    exporter TEXT NOT NULL,
    name BLOB,
    first_sample INTEGER NOT NULL,
    last_sample INTEGER,
    creator_id INTEGER
);
CREATE TABLE holdings (
    id INTEGER PRIMARY KEY,
    buffer_id INTEGER NOT NULL,
    process_id INTEGER NOT NULL,
    fds TEXT NOT NULL,
    maps INTEGER NOT NULL,
    first_sample INTEGER NOT NULL,
    last_sample INTEGER
);
CREATE TABLE trace_events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    inode INTEGER NOT NULL,
    buffer_id INTEGER,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    comm BLOB,
    fd INTEGER,
    dev_name TEXT
);
CREATE TABLE short_lived (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    comm BLOB,
    exports INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
"""

_INDEXES = """
CREATE INDEX IF NOT EXISTS holdings_buffer ON holdings (buffer_id);
CREATE INDEX IF NOT EXISTS buffers_alive ON buffers (last_sample, first_sample);
"""


class RecordingError(DmabufInspectError):
    """The recording file can't be made or read."""


def to_blob(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def from_blob(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    if isinstance(data, str):
        return data
    return bytes(data).decode("utf-8", "surrogateescape")


def create(path: str, *, overwrite: bool = False) -> sqlite3.Connection:
    """A new, empty recording at `path` (WAL mode). Refuses an existing file unless `overwrite`."""
    if os.path.exists(path):
        if not overwrite:
            raise UsageError(f"{path} exists; give another --output or add --force to replace it")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
    except sqlite3.Error as exc:
        raise RecordingError(f"creating {path}: {exc}") from None
    return conn


class transaction:
    """`with transaction(conn):` BEGIN ... COMMIT, or ROLLBACK when the block raises (also
    KeyboardInterrupt and our signal exception: the file keeps the last whole sample)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def set_meta(conn: sqlite3.Connection, items: dict[str, Any]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in items.items()],
    )


def finish(conn: sqlite3.Connection) -> None:
    """Indexes for the report, then fold the WAL back into the file and close it: a finished
    recording is one self-contained file, to attach to a bug report as it is."""
    try:
        conn.executescript(_INDEXES)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with contextlib.suppress(sqlite3.OperationalError):  # a reader has it open: it stays WAL
            conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def open_read(path: str) -> sqlite3.Connection:
    """A recording, for reading (also while the recorder still writes it)."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise RecordingError(f"{path} is not a recording made by `dmabuf-inspect record` ({exc})") from None
    if row is None or row[0] != FORMAT:
        found = row[0] if row else "none"
        raise RecordingError(f"{path} has format {found!r}; this version reads {FORMAT!r}")
    return conn


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta"))


def meta_json(values: dict[str, str], key: str, default: Any = None) -> Any:
    raw = values.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def insert_many(conn: sqlite3.Connection, table: str, rows: Iterable[tuple[Any, ...]], width: int) -> None:
    marks = ", ".join("?" * width)
    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
