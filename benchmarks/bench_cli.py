"""The commands a person runs, timed as whole processes, against the C floor and lsof (issue 12).

In the kernel lab, as root:
    python3 benchmarks/bench_cli.py [--processes 100] [--buffers 100] [--rounds 7]
It starts the load (benchmarks/loadgen.py), runs `dmabuf-inspect dump` once to warm the caches,
then runs --rounds rounds; each round runs every contender once, as a whole process, in an order
that turns by one every round:
  dump          dmabuf-inspect dump > /dev/null
  list          dmabuf-inspect list > /dev/null
  version       dmabuf-inspect --version          (start-up alone)
  import        python -c 'import dmabuf_inspect'
  classify_fd   python -c 'from dmabuf_inspect import classify_fd'
  python        python -c pass                    (a bare interpreter)
  floor_min, floor_naive   ../shared/bench/floor_scan.c (gcc -O2) in its two modes
  lsof          lsof -n -P > /dev/null            (when installed)
`dmabuf-inspect` is the console script pip wrote next to this interpreter (not a pyenv shim), or
`python -m dmabuf_inspect` when there is none; every Python contender runs on the interpreter of
that script (its #! line), whatever `python3` is on PATH. Every time is wall-clock, from spawn to
wait4().
Python runs with its bytecode cached, as from an installed package (PYTHONPYCACHEPREFIX, filled by
one warm-up run of each contender before the rounds).
Then `python -X importtime` of `import dmabuf_inspect` and of `-c pass`, --rounds times each.

Prints one JSON object: per contender best, median and all times; the peak RSS of every `dump`;
per-round ratios (median): (dump - python) / floor_min, (list - python) / floor_min, lsof / dump,
lsof / list, (import - python) / python, (classify_fd - python) / python; and the importtime totals.

On a machine without dma-bufs, `--synthetic DIR` writes a capture-shaped tree of the same size
into DIR (when DIR has no proc/ yet) and times `dmabuf-inspect --tree DIR dump` and `list` against
a bare interpreter there (no floor, no lsof: a profile target, not the measure of issue 12).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
sys.path.insert(0, str(HERE))

Contender = Callable[[], "Run"]


class Run:
    """One whole process: its wall-clock seconds and its peak RSS."""

    __slots__ = ("max_rss_bytes", "seconds", "stdout")

    def __init__(self, seconds: float, max_rss_bytes: int, stdout: bytes = b"") -> None:
        self.seconds, self.max_rss_bytes, self.stdout = seconds, max_rss_bytes, stdout


# Bytecode as an installed package has it: compiled once (by the warm-up run of each contender),
# in a cache of this run's own, since the checkout may be read-only (the lab) and its __pycache__
# stale; without one, every run compiles every module it imports from source again. /var/tmp is
# the guest's own tmpfs in the lab, as a package's bytecode would be on a local disk: on the
# shared 9p /tmp, importing what `dump` imports took 0.6 s longer (a run in the 6.12 guest).
PYCACHE = f"/var/tmp/bench_cli-pycache-{os.getpid()}"


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=f"{CHECKOUT}:{path}" if path else str(CHECKOUT), PYTHONPYCACHEPREFIX=PYCACHE)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def spawn(argv: list[str], *, capture: bool = False) -> Run:
    """argv as a whole process, stdout to /dev/null (or a pipe read to the end), stderr to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    read_end = write_end = -1
    if capture:
        read_end, write_end = os.pipe()
    out = write_end if capture else devnull
    actions = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    exe = argv[0] if "/" in argv[0] else (shutil.which(argv[0]) or argv[0])
    t0 = time.perf_counter()
    pid = os.posix_spawn(exe, argv, _env(), file_actions=actions)
    chunks = []
    if capture:
        os.close(write_end)
        while chunk := os.read(read_end, 1 << 16):
            chunks.append(chunk)
        os.close(read_end)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench_cli: {' '.join(argv)} exited {code}")
    return Run(seconds, usage.ru_maxrss * 1024, b"".join(chunks))


def entry_point() -> tuple[list[str], str]:
    """The command line of `dmabuf-inspect`, and the interpreter it runs on (every Python
    contender uses that one: a `python3` on PATH may be another, with another start-up)."""
    script = Path(sysconfig.get_path("scripts")) / "dmabuf-inspect"
    if script.exists():
        first = script.read_text().splitlines()[0]
        python = first[2:].strip() if first.startswith("#!") and " " not in first[2:].strip() else sys.executable
        return [str(script)], python
    return [sys.executable, "-m", "dmabuf_inspect"], sys.executable


def floor_binary() -> Path | None:
    for src in (CHECKOUT.parent / "shared" / "bench" / "floor_scan.c", CHECKOUT / "shared" / "bench" / "floor_scan.c"):
        if src.exists():
            out = Path("/tmp/floor_scan_cli")
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
            return out
    return None


def rounds(contenders: dict[str, Contender], n: int) -> dict[str, list[Run]]:
    """Every contender once to warm up (not counted), then once per round, the order turned by
    one each round."""
    names = list(contenders)
    for name in names:
        contenders[name]()
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for r in range(n):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(contenders[name]())
    return runs


def importtime_us(python: str, code: str) -> int:
    """Microseconds `python -X importtime -c CODE` reports for the imports CODE made: the
    cumulative times of the top-level imports after `site` (the interpreter's own start-up)."""
    err = subprocess.run(
        [python, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stderr
    total, after_site = 0, False
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m is None:
            continue
        if m.group(2) == "site":
            after_site = True
        elif after_site:
            total += int(m.group(1))
    return total


def summary(runs: list[Run]) -> dict[str, object]:
    t = [r.seconds for r in runs]
    return {"best": min(t), "median": statistics.median(t), "all": [round(x, 4) for x in t]}


def per_round(a: list[Run], b: list[Run], minus: list[Run] | None = None) -> float:
    """Median over rounds of (a - minus) / b."""
    ratios = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        base = minus[i].seconds if minus is not None else 0.0
        ratios.append((x.seconds - base) / y.seconds)
    return statistics.median(ratios)


def contenders_for(entry: list[str], python: str, tree: list[str]) -> dict[str, Contender]:
    return {
        "dump": lambda: spawn([*entry, *tree, "dump"]),
        "list": lambda: spawn([*entry, *tree, "list"]),
        "version": lambda: spawn([*entry, "--version"]),
        "import": lambda: spawn([python, "-c", "import dmabuf_inspect"]),
        "classify_fd": lambda: spawn([python, "-c", "from dmabuf_inspect import classify_fd"]),
        "python": lambda: spawn([python, "-c", "pass"]),
    }


def report(runs: dict[str, list[Run]], n_rounds: int, python: str) -> dict[str, object]:
    result: dict[str, object] = {
        "rounds": n_rounds,
        "seconds": {name: summary(r) for name, r in runs.items()},
        "dump_peak_rss_bytes": max(r.max_rss_bytes for r in runs["dump"]),
    }
    ratios: dict[str, float] = {
        "(import - python) / python": per_round(runs["import"], runs["python"], runs["python"]),
        "(classify_fd - python) / python": per_round(runs["classify_fd"], runs["python"], runs["python"]),
        "(version - python) / python": per_round(runs["version"], runs["python"], runs["python"]),
    }
    if "floor_min" in runs:
        for cmd in ("dump", "list"):
            ratios[f"({cmd} - python) / floor_min"] = per_round(runs[cmd], runs["floor_min"], runs["python"])
            ratios[f"({cmd} - python) / floor_min, of bests"] = (
                min(r.seconds for r in runs[cmd]) - min(r.seconds for r in runs["python"])
            ) / min(r.seconds for r in runs["floor_min"])
            ratios[f"({cmd} - python) / floor_naive"] = per_round(runs[cmd], runs["floor_naive"], runs["python"])
    if "lsof" in runs:
        for cmd in ("dump", "list"):
            ratios[f"lsof / {cmd}"] = per_round(runs["lsof"], runs[cmd])
    result["ratios_median_per_round"] = ratios
    importtime_us(python, "from dmabuf_inspect import classify_fd")  # compiles classify into the cache
    imports = [importtime_us(python, "import dmabuf_inspect") for _ in range(n_rounds)]
    classify = [importtime_us(python, "from dmabuf_inspect import classify_fd") for _ in range(n_rounds)]
    result["importtime_us"] = {
        "import dmabuf_inspect": {"best": min(imports), "median": statistics.median(imports)},
        "from dmabuf_inspect import classify_fd": {"best": min(classify), "median": statistics.median(classify)},
        "python -c pass, wall (best, median)": [
            round(min(r.seconds for r in runs["python"]) * 1e6),
            round(statistics.median(r.seconds for r in runs["python"]) * 1e6),
        ],
    }
    return result


def lab(args: argparse.Namespace) -> dict[str, object]:
    from loadgen import load

    entry, python = entry_point()
    contenders = contenders_for(entry, python, [])
    binary = floor_binary()
    if binary is not None:
        contenders["floor_min"] = lambda: spawn([str(binary), "1", "min"])
        contenders["floor_naive"] = lambda: spawn([str(binary), "1", "naive"])
    lsof = shutil.which("lsof")
    if lsof is not None:
        contenders["lsof"] = lambda: spawn([lsof, "-n", "-P"])
    with load(args.processes, args.buffers, shared=args.shared):
        doc = json.loads(spawn([*entry, "dump"], capture=True).stdout)  # also warms the dentry caches
        floor_saw = spawn([str(binary), "1", "min"], capture=True).stdout.decode() if binary else ""
        runs = rounds(contenders, args.rounds)
        result = report(runs, args.rounds, python)
    result["load"] = {
        "processes": args.processes,
        "buffers_per_process": args.buffers,
        "shared": args.shared,
        "buffers": len(doc["buffers"]),
        "fds": sum(len(h["fds"]) for b in doc["buffers"] for h in b["holders"]),
        "mappings": sum(h["maps"] for b in doc["buffers"] for h in b["holders"]),
        "floor_saw": floor_saw.strip(),
    }
    result["entry"] = entry
    result["python"] = python
    result["kernel"] = os.uname().release
    return result


# ---- a capture-shaped tree of the lab's load, for profiling on a machine without dma-bufs ----


def make_tree(root: Path, processes: int, per_proc: int, shared: int, size: int = 4096, map_every: int = 4) -> None:
    """`processes` processes holding `per_proc` own buffers each (every `map_every`-th mapped) and
    `shared` buffers held by all: the load of benchmarks/loadgen.py, written as a capture."""
    proc = root / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "osrelease").write_text("6.12.0-synthetic\n")
    (root / "dev" / "dma_heap").mkdir(parents=True)
    (root / "dev" / "dma_heap" / "system").write_text("")
    (root / "sys" / "class" / "dma_heap" / "system").mkdir(parents=True)
    (root / "sys" / "class" / "dma_heap" / "system" / "dev").write_text("251:0\n")
    debug = root / "sys" / "kernel" / "debug" / "dma_buf"
    debug.mkdir(parents=True)
    rows = ["\nDma-buf Objects:", "size    \tflags   \tmode    \tcount   \texp_name\tino     \tname"]
    inode = 100
    shared_inodes = list(range(inode, inode + shared))
    inode += shared
    for ino in shared_inodes:
        rows += [
            f"{size:08d}\t00000002\t00080007\t{processes + 1:08d}\tsystem\t{ino:08d}\t<none>",
            "\tAttached Devices:",
        ]
        rows.append("Total 0 devices attached\n")
    for p in range(processes):
        pid = 1000 + p
        d = proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "fdinfo").mkdir()
        (d / "comm").write_text(f"load-{p}\n")
        (d / "cmdline").write_bytes(f"python3\0benchmarks/loadgen.py\0--child\0{p}\0".encode())
        (d / "status").write_text(
            f"Name:\tload-{p}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\n"
            f"Pid:\t{pid}\nPPid:\t999\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
        )
        (d / "stat").write_text(
            f"{pid} (load-{p}) S 999 999 999 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 1 0 "
            f"{10000 + p} 25432064 4346 0 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
        maps = []
        own = list(range(inode, inode + per_proc))
        inode += per_proc
        for fd, ino in enumerate([*shared_inodes, *own], start=3):
            os.symlink("/dmabuf:", d / "fd" / str(fd))
            count = processes + 1 if ino in shared_inodes else 1 + ((ino - own[0]) % map_every == 0)
            (d / "fdinfo" / str(fd)).write_text(
                f"pos:\t0\nflags:\t02000002\nmnt_id:\t12\nino:\t{ino}\nsize:\t{size}\ncount:\t{count}\n"
                "exp_name:\tsystem\n"
            )
        for i, ino in enumerate(own):
            start = 0x7F0000000000 + (p * per_proc + i) * 0x10000
            if i % map_every == 0:
                maps.append(f"{start:x}-{start + size:x} rw-s 00000000 00:0b {ino}                          /dmabuf:")
            count = 1 + (i % map_every == 0)
            rows += [f"{size:08d}\t00000002\t00080007\t{count:08d}\tsystem\t{ino:08d}\t<none>", "\tAttached Devices:"]
            rows.append("Total 0 devices attached\n")
        (d / "maps").write_text("\n".join(maps) + "\n")
    n = shared + processes * per_proc
    rows.append(f"\nTotal {n} objects, {n * size} bytes")
    (debug / "bufinfo").write_text("\n".join(rows) + "\n")


def synthetic(args: argparse.Namespace) -> dict[str, object]:
    root = Path(args.synthetic)
    if not (root / "proc").exists():
        make_tree(root, args.processes, args.buffers, args.shared)
    entry, python = entry_point()
    tree = ["--tree", str(root)]
    doc = json.loads(spawn([*entry, *tree, "dump"], capture=True).stdout)
    runs = rounds(contenders_for(entry, python, tree), args.rounds)
    result = report(runs, args.rounds, python)
    result["load"] = {"tree": str(root), "buffers": len(doc["buffers"]), "processes": len(doc["processes"])}
    result["entry"] = entry
    result["python"] = python
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--synthetic", metavar="DIR", help="time the CLI on a capture-shaped tree in DIR (made if new)")
    args = ap.parse_args()
    try:
        result = synthetic(args) if args.synthetic else lab(args)
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
