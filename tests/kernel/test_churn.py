"""Scans under churn, and no leak in the scanner (issue 6).

100 processes start, allocate and free buffers, pass fds over unix sockets and exit, over and
over, while 300 scans run. Every scan must finish without an exception, and every buffer it
reports must have existed with that size and exporter (each allocation is logged by inode).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import churn_load
import psutil
import pytest

from dmabuf_inspect.ioctl.heaps import DmaHeap
from dmabuf_inspect.scan.snapshot import collect

pytestmark = pytest.mark.kernel

PROCESSES = int(os.environ.get("CHURN_PROCESSES", "100"))
SCANS = int(os.environ.get("CHURN_SCANS", "300"))
LEAK_SCANS = int(os.environ.get("LEAK_SCANS", "1000"))


def test_300_scans_under_churn_report_only_real_buffers(tmp_path: Path, record_property: Any) -> None:
    log_path = tmp_path / "allocations"
    log_path.touch()
    before = {b.inode: (b.size_bytes, b.exporter) for b in collect().buffers}
    reported: dict[int, tuple[int, str]] = {}
    scans = 0
    scan_errors: Counter[str] = Counter()  # by kind: a vanished process or fd is none
    with churn_load.running(PROCESSES, log_path):
        t0 = time.monotonic()
        for _ in range(SCANS):
            snap = collect()  # an exception here fails the test
            scans += 1
            if scans % 50 == 0:
                print(f"churn: {scans} scans in {time.monotonic() - t0:.0f} s", flush=True)
            assert not snap.denied_pids
            scan_errors.update(e.kind for e in snap.errors)
            for b in snap.buffers:
                if b.size_source != "maps":  # a mapping seen without its fd: size is a lower bound
                    reported.setdefault(b.inode, (b.size_bytes, b.exporter))
    logged: dict[int, tuple[int, str]] = {}
    for line in log_path.read_text().splitlines():
        inode, size, exporter = line.split()
        logged[int(inode)] = (int(size), exporter)
    assert scans == SCANS
    assert len(logged) > 1000, f"the churn made only {len(logged)} buffers"
    churned = {i: v for i, v in reported.items() if i not in before}
    assert len(churned) > 100, f"scans saw only {len(churned)} churned buffers"
    wrong = {i: v for i, v in churned.items() if logged.get(i) != v}
    assert not wrong, f"reported buffers that never existed so: {list(wrong.items())[:5]}"
    figures = {
        "scans": SCANS,
        "seconds": round(time.monotonic() - t0),
        "buffers_churned": len(logged),
        "churned_seen_by_scans": len(churned),
        "exceptions": 0,
        "scan_errors": sum(scan_errors.values()),
        "scan_error_kinds": " ".join(f"{k}:{n}" for k, n in sorted(scan_errors.items())) or "-",
    }
    for name, value in figures.items():
        record_property(name, value)  # into the lab's junit.xml
    print("churn:", figures)


def test_no_fd_or_memory_leak_over_1000_scans(record_property: Any) -> None:
    with DmaHeap.open("system") as heap:
        held = [heap.alloc(4096) for _ in range(50)]
        maps = [b.mmap() for b in held[::5]]
        me = psutil.Process()
        for _ in range(100):
            collect()
        fds_before, rss_before = me.num_fds(), me.memory_info().rss
        for _ in range(LEAK_SCANS):
            snap = collect()
        fds_after, rss_after = me.num_fds(), me.memory_info().rss
        assert len([b for b in snap.buffers if any(h.pid == os.getpid() for h in b.holders)]) == 50
        del maps
        for b in held:
            b.close()
    assert fds_after == fds_before
    assert rss_after - rss_before < 2 * 1024 * 1024, (rss_before, rss_after)
    for name, value in (
        ("scans", LEAK_SCANS),
        ("fds_before", fds_before),
        ("fds_after", fds_after),
        ("rss_before", rss_before),
        ("rss_after", rss_after),
    ):
        record_property(name, value)
    print(f"leak check: {LEAK_SCANS} scans, fds {fds_before}->{fds_after}, rss {rss_before}->{rss_after}")
