"""Does `record` keep up with 1 000 exports per second, and does it count what the kernel drops?

Run as root in the kernel lab, on a kernel with the dma_buf tracepoints (7.x):
    python3 benchmarks/bench_trace.py [--rate 1000] [--seconds 10]

  keep_up   `dmabuf-inspect record --interval 1` runs while a child process exports --rate
            4 KiB system-heap buffers a second for --seconds (each closed at once, every 100th
            held until the end). Then, from the recording: exports accounted for (creators of the
            buffers a sample saw + the short-lived exports per process) against the exports the
            child made, the lost-event count, and the recorder's CPU time.
  parse     the drain alone: 20 000 exports with nobody reading, then one read_events() of the
            instance (4 MiB per CPU): events parsed per second of CPU.
  overrun   the same with a 16 KiB ring buffer and nobody reading: what the kernel dropped
            (per-CPU stats) against what the LOST markers said.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dmabuf_inspect.ioctl import uapi  # noqa: E402
from dmabuf_inspect.kernel import tracefs  # noqa: E402

SIZE = 4096


def heap_alloc(heap_fd: int, size: int = SIZE) -> int:
    buf = bytearray(bytes(uapi.dma_heap_allocation_data(len=size, fd=0, fd_flags=os.O_RDWR | os.O_CLOEXEC)))
    fcntl.ioctl(heap_fd, uapi.DMA_HEAP_IOCTL_ALLOC, buf)
    return int(uapi.dma_heap_allocation_data.from_buffer(buf).fd)


def exporter(rate: float, seconds: float, ready_w: int, report_w: int) -> None:
    heap = os.open("/dev/dma_heap/system", os.O_RDWR | os.O_CLOEXEC)
    held = []
    os.write(ready_w, b"x")
    n = 0
    t0 = time.monotonic()
    while (now := time.monotonic() - t0) < seconds:
        due = int(now * rate) + 1
        while n < due:
            fd = heap_alloc(heap)
            n += 1
            if n % 100 == 0:
                held.append(fd)
            else:
                os.close(fd)
        time.sleep(max(0.0, (n / rate) - (time.monotonic() - t0)))
    os.write(report_w, json.dumps({"exports": n, "seconds": time.monotonic() - t0, "held": len(held)}).encode())
    time.sleep(3.0)  # hold the every-100th buffers while the recorder takes its last samples


def keep_up(rate: float, seconds: float, workdir: str) -> dict[str, Any]:
    db = os.path.join(workdir, "trace.db")
    rec = subprocess.Popen(
        [sys.executable, "-m", "dmabuf_inspect", "record", "-o", db, "--interval", "1", "-q"], cwd=HERE.parent
    )
    while not os.path.exists(db) or _samples(db) < 1:
        time.sleep(0.05)
    ready_r, ready_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(report_r)
        exporter(rate, seconds, ready_w, report_w)
        os._exit(0)
    os.close(ready_w)
    os.close(report_w)
    os.read(ready_r, 1)
    made = json.loads(os.read(report_r, 4096))
    time.sleep(2.5)  # two more samples see the held buffers
    rec.send_signal(2)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.waitpid(pid, 0)
    conn = sqlite3.connect(db)
    creators = conn.execute("SELECT count(*) FROM creators WHERE pid = ?", (pid,)).fetchone()[0]
    short = conn.execute("SELECT coalesce(sum(exports), 0) FROM short_lived WHERE pid = ?", (pid,)).fetchone()[0]
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    return {
        "exports_made": made["exports"],
        "export_seconds": made["seconds"],
        "rate_achieved": made["exports"] / made["seconds"],
        "creators_recorded": creators,
        "short_lived_counted": short,
        "accounted_for": creators + short,
        "lost_events": json.loads(meta.get("lost_events", "null")),
        "tracing": meta.get("tracing"),
        "samples": samples,
        "recorder_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "file_bytes": os.path.getsize(db),
    }


def _samples(db: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0


def _export(n: int) -> None:
    heap = os.open("/dev/dma_heap/system", os.O_RDWR | os.O_CLOEXEC)
    for _ in range(n):
        os.close(heap_alloc(heap))
    os.close(heap)


def parse(n: int) -> dict[str, Any]:
    with tracefs.TraceInstance.create(name="bench-trace-parse") as trace:
        _export(n)
        t0 = time.process_time()
        events, lost_markers = trace.read_events()
        cpu = time.process_time() - t0
        return {
            "exports": n,
            "events_read": len(events),
            "cpu_s": cpu,
            "events_per_cpu_s": len(events) / cpu if cpu else None,
            "lost_events": trace.lost_events(),
            "lost_markers": lost_markers,
        }


def overrun(n: int) -> dict[str, Any]:
    with tracefs.TraceInstance.create(name="bench-trace-overrun", buffer_kb=16) as trace:
        _export(n)
        events, lost_markers = trace.read_events()
        return {
            "exports": n,
            "events_expected": 2 * n,
            "events_read": len(events),
            "lost_events_stats": trace.lost_events(),
            "lost_markers": lost_markers,
            "read_plus_lost": len(events) + trace.lost_events(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    reason = tracefs.unavailable_reason()
    if reason is not None:
        print(json.dumps({"kernel": os.uname().release, "unavailable": reason}))
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-trace-", dir="/var/tmp") as workdir:
        out = {
            "kernel": os.uname().release,
            "keep_up": keep_up(args.rate, args.seconds, workdir),
            "parse": parse(20000),
            "overrun": overrun(5000),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
