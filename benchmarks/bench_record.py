"""What `record` costs on a steady 10 000-buffer load (issue 13): per sample against one scan,
and the file size and recorder RSS after 1 000 samples.

Run as root in the kernel lab:
    python3 benchmarks/bench_record.py [--processes 100] [--buffers 100] [--rounds 15]
        [--samples 1000] [--live-samples 40]

It starts the load (benchmarks/loadgen.py: 100 processes x 100 system-heap buffers, every fourth
mapped, 8 shared), then, on that load, in one boot:
  per_sample  in one process, --rounds rounds of: one `collect()` (the scan every sample does),
              then the recorder's own work on that snapshot: ChangeTracker.update + the sample's
              transaction (write_sample). Both timed in the same round; the ratio is per round.
  replay      a fresh process runs the real recorder loop (`record()`) for --samples samples with
              the scan replaced by one real snapshot of this load taken at its start: the file's
              size and the process's VmRSS at samples 1, 10, 100, 500 and the last (what the
              recorder itself keeps, without the scan's noise or the hours the scans would take)
  live        `dmabuf-inspect record --interval 0.001 --samples --live-samples` on the load: real
              scans; its VmRSS read every 0.5 s by this process, and the file's size
Prints one JSON object. Sizes in bytes; an hour at 1 s is extrapolated from the replay's growth
per sample after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loadgen import load  # noqa: E402

from dmabuf_inspect.history import recorder, store  # noqa: E402
from dmabuf_inspect.history.recorder import RecordOptions, write_sample  # noqa: E402
from dmabuf_inspect.history.tracker import ChangeTracker, SampleRow  # noqa: E402
from dmabuf_inspect.kernel.reader import Roots  # noqa: E402
from dmabuf_inspect.model import Snapshot  # noqa: E402
from dmabuf_inspect.scan.snapshot import collect  # noqa: E402


def vm_rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _row(sample_id: int, snap: Snapshot) -> SampleRow:
    t = snap.totals
    return SampleRow(
        sample_id, snap.taken_at, 0.0, t.buffers, t.bytes, t.buffers, t.userspace_bytes, None, None, None, None
    )


def per_sample(rounds: int, workdir: str) -> dict[str, Any]:
    conn = store.create(os.path.join(workdir, "per-sample.db"))
    tracker = ChangeTracker()
    snap = collect()
    t0 = time.perf_counter()
    ch = tracker.update(snap, 1)
    write_sample(conn, _row(1, snap), ch, None)
    first = time.perf_counter() - t0
    scans, recs, ratios = [], [], []
    for i in range(2, rounds + 2):
        t0 = time.perf_counter()
        snap = collect()
        scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        ch = tracker.update(snap, i)
        write_sample(conn, _row(i, snap), ch, None)
        rec = time.perf_counter() - t0
        scans.append(scan)
        recs.append(rec)
        ratios.append(rec / scan)
    store.finish(conn)
    return {
        "buffers": snap.totals.buffers,
        "holders": sum(len(b.holders) for b in snap.buffers),
        "processes": len(snap.processes),
        "collect_s": {"best": min(scans), "median": statistics.median(scans)},
        "recorder_s": {"best": min(recs), "median": statistics.median(recs)},
        "recorder_first_sample_s": first,
        "recorder_over_collect": {"of_bests": min(recs) / min(scans), "median_per_round": statistics.median(ratios)},
        "rounds": rounds,
    }


def replay_child(db: str, samples: int) -> None:
    """In a fresh process: the real recorder loop over one real snapshot, `samples` times."""
    snap = collect()
    vars(recorder)["collect"] = lambda roots, include_maps: snap
    marks = {1, 10, 100, 500, samples}
    seen: dict[int, int] = {}

    def on_sample(p: recorder.Progress) -> None:
        if p.samples in marks:
            seen[p.samples] = vm_rss()

    t0 = time.perf_counter()
    recorder.record(
        Roots(), RecordOptions(output=db, interval_s=1e-6, samples=samples, trace=False), on_sample=on_sample
    )
    elapsed = time.perf_counter() - t0
    print(json.dumps({"rss_at_sample": seen, "seconds": elapsed, "buffers": snap.totals.buffers}))


def replay(samples: int, workdir: str) -> dict[str, Any]:
    db = os.path.join(workdir, "replay.db")
    sizes = {}
    for n in (2, samples):
        path = f"{db}.{n}"
        out = subprocess.run(
            [sys.executable, __file__, "--replay-child", path, str(n)], capture_output=True, text=True, check=True
        )
        sizes[n] = os.path.getsize(path)
        result = json.loads(out.stdout)
    per_sample_bytes = (sizes[samples] - sizes[2]) / (samples - 2)
    return {
        "samples": samples,
        "file_bytes": sizes[samples],
        "file_bytes_after_2_samples": sizes[2],
        "bytes_per_steady_sample": per_sample_bytes,
        "hour_at_1s_bytes_estimate": sizes[2] + per_sample_bytes * 3598,
        "rss_at_sample": result["rss_at_sample"],
        "seconds": result["seconds"],
    }


def live(samples: int, workdir: str) -> dict[str, Any]:
    db = os.path.join(workdir, "live.db")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dmabuf_inspect",
            "record",
            "-o",
            db,
            "--interval",
            "0.001",
            "--samples",
            str(samples),
            "-q",
        ],
        cwd=HERE.parent,
    )
    rss: list[tuple[float, int]] = []
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            rss.append((round(time.monotonic() - t0, 1), vm_rss(proc.pid)))
        except OSError:
            break
        time.sleep(0.5)
    proc.wait()
    values = [r for _, r in rss if r]
    return {
        "samples": samples,
        "seconds": time.monotonic() - t0,
        "file_bytes": os.path.getsize(db),
        "rss_first": values[0] if values else None,
        "rss_after_a_quarter": values[len(values) // 4] if values else None,
        "rss_last": values[-1] if values else None,
        "rss_max": max(values, default=None),
        "rss_trace": rss[:: max(1, len(rss) // 20)],
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--replay-child":
        replay_child(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--buffers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--live-samples", type=int, default=40)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-record-", dir="/var/tmp") as workdir,
        load(args.processes, args.buffers),
    ):
        out = {
            "kernel": os.uname().release,
            "load": {"processes": args.processes, "buffers_each": args.buffers},
            "per_sample": per_sample(args.rounds, workdir),
            "replay": replay(args.samples, workdir),
            "live": live(args.live_samples, workdir),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
