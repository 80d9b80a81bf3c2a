"""`dmabuf-inspect record` as a subprocess on a fixture tree: SIGINT and SIGTERM end it with a
file `report` reads; SIGKILL leaves one too; the progress line on a terminal, and --quiet."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest
from paths import FIXTURES, REPO

TREE = str(FIXTURES / "k6.12")


def start(db: str, *extra: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dmabuf_inspect", "--tree", TREE, "record", "-o", db, *extra],
        cwd=REPO,
        text=True,
        **kw,
    )


def samples(db: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_for(db: str, n: int) -> None:
    deadline = time.monotonic() + 30
    while samples(db) < n:
        assert time.monotonic() < deadline, "the recorder wrote no samples"
        time.sleep(0.02)


def report(db: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "report", db, "--json"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_recording_cleanly(tmp_path: Any, signum: int) -> None:
    db = str(tmp_path / "r.db")
    proc = start(db, "--interval", "0.001", "-q", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(db, 5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err == ""
    doc = report(db)
    assert doc["samples"] >= 5 and doc["stopped_by"] == signal.Signals(signum).name
    assert {p["comm"] for p in doc["processes"]} == {"camera-app", "weston", "gpu-test"}
    assert sorted(os.listdir(tmp_path)) == ["r.db"]  # folded back into one file


def test_sigkill_leaves_a_readable_recording(tmp_path: Any) -> None:
    db = str(tmp_path / "r.db")
    proc = start(db, "--interval", "0.001", "-q", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(db, 5)
    proc.kill()
    proc.wait()
    doc = report(db)
    assert doc["samples"] >= 5 and doc["stopped_by"] is None
    assert doc["ended"] == doc["totals"][-1]["time"]


def test_duration_and_samples(tmp_path: Any) -> None:
    db = str(tmp_path / "d.db")
    proc = start(db, "--interval", "0.1", "--duration", "0.45", "-q", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.wait(timeout=30) == 0
    doc = report(db)
    assert doc["samples"] == 5 and doc["stopped_by"] == "duration"  # at 0, 0.1, 0.2, 0.3, 0.4 s
    assert doc["tracing"] == "unavailable: reading a captured tree, not this machine"


def test_progress_line_on_a_terminal(tmp_path: Any) -> None:
    db = str(tmp_path / "p.db")
    leader, follower = os.openpty()
    proc = start(db, "--interval", "0.01", "--samples", "3", stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    assert proc.wait(timeout=30) == 0
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    text = b"".join(chunks).decode()
    assert "\r" in text and "3 samples, 5 buffers (23.1 MiB)" in text
    assert "creators will be unknown" in text and "report" in text


def test_quiet_and_not_a_terminal_print_nothing(tmp_path: Any) -> None:
    db = str(tmp_path / "q.db")
    proc = start(db, "--samples", "2", "--interval", "0.01", "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")
    proc = start(db, "--samples", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--force" in err and "Traceback" not in err
