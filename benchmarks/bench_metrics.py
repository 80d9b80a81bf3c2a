"""What Prometheus metrics cost against `dump`, and how fast `serve` answers a scrape (issue 15).

Run as root in the kernel lab:
    python3 benchmarks/bench_metrics.py [--processes 100] [--buffers 100] [--rounds 5]
It starts the load (benchmarks/loadgen.py: N processes x M system-heap buffers, every fourth
mapped, plus 8 shared by all), then:
  end to end   `dmabuf-inspect metrics -q` and `dmabuf-inspect dump -q`, each a whole fresh
               process (start-up, imports, scan, output to /dev/null), timed from outside, once
               each per round in an order that turns every round;
  serve        one `dmabuf-inspect serve --min-interval S` process; after a warm-up scrape, each
               round makes a cold scrape (the last scan is older than S: this scrape scans) and
               then a cached one (within S: the last result, no scan), timed by the client;
  in process   collect() without and with the cgroup reads of its processes (what `observe()`
               and `dump` ask for), in turns, and the exposition of the result.
Prints one JSON object: best and median of each, the ratio of the bests and the median of the
per-round ratios (metrics / dump in the same round), and the size of the exposition.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loadgen import load  # noqa: E402

from dmabuf_inspect.kernel.reader import Roots  # noqa: E402
from dmabuf_inspect.metrics.collector import exposition  # noqa: E402
from dmabuf_inspect.metrics.source import Observation, observe  # noqa: E402
from dmabuf_inspect.scan.snapshot import collect  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(HERE.parent))


def _whole_process(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", *args], stdout=subprocess.DEVNULL, check=True, env=ENV, cwd="/"
    )
    return time.perf_counter() - t0


def _scrape(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def _stats(values: list[float]) -> dict[str, object]:
    return {"best": min(values), "median": statistics.median(values), "all": values}


def _serve(min_interval: float, rounds: int, err_path: Path) -> dict[str, object]:
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dmabuf_inspect",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--min-interval",
                str(min_interval),
            ],
            stderr=err,
            env=ENV,
            cwd="/",
        )
    try:
        deadline = time.monotonic() + 300
        port = None
        while port is None:
            m = re.search(rb"serving http://127\.0\.0\.1:(\d+)/metrics", err_path.read_bytes())
            if m:
                port = int(m.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench_metrics: serve did not start: {err_path.read_text()}")
            else:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/metrics"
        first, size = _scrape(url)  # the first scrape also imports prometheus_client
        cold: list[float] = []
        cached: list[float] = []
        for _ in range(rounds):
            time.sleep(min_interval + 0.2)
            cold.append(_scrape(url)[0])
            cached.append(_scrape(url)[0])
        return {
            "min_interval_s": min_interval,
            "first_scrape_s": first,
            "cold_scrape_s": _stats(cold),
            "cached_scrape_s": _stats(cached),
            "cold_over_cached": min(cold) / min(cached),
            "response_bytes": size,
        }
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-interval", type=float, default=2.0, help="serve's --min-interval (default 2 s)")
    args = ap.parse_args()
    contenders = {"metrics": ("metrics", "-q"), "dump": ("dump", "-q")}
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    with load(args.processes, args.buffers, shared=args.shared):
        obs = observe(Roots())  # also warms the dentry caches for everyone
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(_whole_process(*contenders[name]))
        served = _serve(args.min_interval, args.rounds, Path("/var/tmp/bench_metrics_serve.err"))
        collect_s: list[float] = []
        with_cgroups_s: list[float] = []
        expo_s: list[float] = []
        text = b""
        roots = Roots()
        for r in range(args.rounds):
            for cgroups in (False, True) if r % 2 == 0 else (True, False):  # turns each round
                t0 = time.perf_counter()
                snap = collect(roots, cgroups=cgroups)
                (with_cgroups_s if cgroups else collect_s).append(time.perf_counter() - t0)
            obs = Observation(snap, with_cgroups_s[-1])
            t2 = time.perf_counter()
            text = exposition(obs)
            expo_s.append(time.perf_counter() - t2)
    snap = obs.snapshot
    per_round = [m / d for m, d in zip(times["metrics"], times["dump"], strict=True)]
    result = {
        "load": {
            "processes": args.processes,
            "buffers_per_process": args.buffers,
            "shared": args.shared,
            "buffers": len(snap.buffers),
            "holding_processes": len(snap.processes),
            "fds": sum(b.fd_refs for b in snap.buffers),
            "mappings": sum(b.map_refs for b in snap.buffers),
        },
        "rounds": args.rounds,
        "end_to_end_s": {name: _stats(t) for name, t in times.items()},
        "metrics_over_dump": {
            "of_bests": min(times["metrics"]) / min(times["dump"]),
            "median_per_round": statistics.median(per_round),
        },
        "serve": served,
        "in_process_s": {
            "collect": _stats(collect_s),
            "collect_with_cgroups": _stats(with_cgroups_s),
            "exposition": _stats(expo_s),
        },
        "cgroups_over_collect": {
            "of_bests": min(with_cgroups_s) / min(collect_s),
            "median_per_round": statistics.median(w / c for w, c in zip(with_cgroups_s, collect_s, strict=True)),
        },
        "exposition": {
            "bytes": len(text),
            "samples": sum(1 for line in text.splitlines() if not line.startswith(b"#")),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
