"""The commands a person runs, timed as whole processes, against the C floor and lsof (issue 12).

What is timed is what a user runs: `pip install .` puts a regular (not editable) install into a
virtual environment, bytecode compiled at install time, and the user runs its console script.
So first, on the host, once per checkout state:
    python3 benchmarks/bench_cli.py --make-venv DIR [--python PY]
which copies this checkout's package files (tracked and untracked, not ignored) to a temporary
directory, makes a fresh venv DIR with PY (default: this interpreter) and pip-installs the copy into
it (pip compiles every module's bytecode; the C walk is built when gcc and the headers are there).
DIR/bench_cli-source.json says which commit, how many uncommitted files and which interpreter;
DIR/bench_cli-base-python.tar holds that interpreter with its standard library (no tests).

Then in the kernel lab, as root (the guest sees the host's files read-only, /tmp read-write):
    python3 benchmarks/bench_cli.py --venv DIR [--processes 100] [--buffers 100] [--rounds 7]
It copies DIR into the guest's own tmpfs (/var/tmp: a local disk, as a user's install is; the
lab's root is the host's, over 9p, where every file a process opens costs milliseconds: the
console script is repointed at the copy's interpreter, and the copy's interpreter at a copy of its
base interpreter and standard library unpacked there from the tar, which a user has on a local disk
too; nothing else changes), starts the load
(benchmarks/loadgen.py), runs every contender once to warm up (this also writes the BPF layout
cache of the boot, as a user's first run does), then --rounds rounds; each round runs every
contender once, as a whole process, in an order that turns by one every round:
  dump, list                    the venv's `dmabuf-inspect dump > /dev/null`, `list > /dev/null`
                                (BPF holders and listing where they work: the default as root)
  dump_nobpf, list_nobpf        the same with --no-bpf (the /proc walk and debugfs bufinfo)
  version                       the venv's `dmabuf-inspect --version` (start-up alone)
  python                        the venv's `python -c pass` (a bare interpreter)
  import, classify_fd           the venv's `python -c 'import dmabuf_inspect'`, `... import classify_fd'`
  dump_9p                       the venv's `dump`, run in place from DIR (over 9p in the lab)
  dump_editable, list_editable  the checkout on PYTHONPATH, as the tests run it, with the console
  python_editable               script and interpreter pip's editable install wrote for this
                                interpreter (pyenv's, with its site-packages' .pth files);
                                bytecode in a cache of this run's (PYTHONPYCACHEPREFIX on /var/tmp)
  floor_min, floor_naive        ../shared/bench/floor_scan.c (gcc -O2) in its two modes
  lsof                          lsof -n -P > /dev/null (when installed)
Without --venv, only the editable contenders run (and the ratios use python_editable); with
--only-venv, only the venv's (and the floor and lsof).
Every time is wall-clock, from spawn to wait4().

Prints one JSON object: per contender best, median and all times; the peak RSS of every `dump`;
per-round ratios (median): (X - its python) / floor_min for each dump and list, lsof / X,
(import - python) / python, (classify_fd - python) / python; `python -X importtime` totals of
`import dmabuf_inspect`, of `from dmabuf_inspect import classify_fd` and of each command's imports,
on the venv's interpreter.

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
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
sys.path.insert(0, str(HERE))

from turns import in_turns  # noqa: E402

Contender = Callable[[], "Run"]
SOURCE_NOTE = "bench_cli-source.json"
# The venv's base interpreter and its standard library, for the guest's tmpfs (see base_python_tar).
BASE_TAR = "bench_cli-base-python.tar"
LOCAL_BASE = Path(f"/var/tmp/bench_cli-python-{os.getpid()}")  # where local_copy() unpacks it
# Parts of the standard library no contender imports: left out of BASE_TAR.
STDLIB_UNUSED = ("site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3")
# What --make-venv copies: the package and what pip needs to build it (not fixtures/, whose
# hostile-links tree holds links into /proc and /dev that a copy must never follow).
PACKAGE_FILES = ("dmabuf_inspect", "pyproject.toml", "setup.py", "README.md")


class Run:
    """One whole process: its wall-clock seconds and its peak RSS."""

    __slots__ = ("max_rss_bytes", "seconds", "stdout")

    def __init__(self, seconds: float, max_rss_bytes: int, stdout: bytes = b"") -> None:
        self.seconds, self.max_rss_bytes, self.stdout = seconds, max_rss_bytes, stdout


class Install:
    """One way the command is installed: its console script, its interpreter and their environment."""

    __slots__ = ("entry", "env", "label", "python")

    def __init__(self, label: str, entry: list[str], python: str, env: dict[str, str]) -> None:
        self.label, self.entry, self.python, self.env = label, entry, python, env


# The editable contenders' bytecode: compiled once (by the warm-up run of each contender), in a
# cache of this run's own, since the checkout may be read-only (the lab) and its __pycache__
# stale; without one, every run compiles every module it imports from source again. /var/tmp is
# the guest's own tmpfs in the lab.
PYCACHE = f"/var/tmp/bench_cli-pycache-{os.getpid()}"


def editable_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=f"{CHECKOUT}:{path}" if path else str(CHECKOUT), PYTHONPYCACHEPREFIX=PYCACHE)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def venv_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH (the lab sets one to the checkout, which
    would shadow the installed package), no bytecode cache elsewhere."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "PYTHONHOME"):
        env.pop(name, None)
    return env


def spawn(argv: list[str], env: dict[str, str], *, capture: bool = False) -> Run:
    """argv as a whole process, stdout to /dev/null (or a pipe read to the end), stderr to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    read_end = write_end = -1
    if capture:
        read_end, write_end = os.pipe()
    out = write_end if capture else devnull
    actions = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    exe = argv[0] if "/" in argv[0] else (shutil.which(argv[0]) or argv[0])
    t0 = time.perf_counter()
    pid = os.posix_spawn(exe, argv, env, file_actions=actions)
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


def editable_install() -> Install:
    """The console script pip wrote next to this interpreter (not a pyenv shim), or
    `python -m dmabuf_inspect` when there is none; the interpreter of that script (its #! line)."""
    script = Path(sysconfig.get_path("scripts")) / "dmabuf-inspect"
    env = editable_env()
    if script.exists():
        first = script.read_text().splitlines()[0]
        python = first[2:].strip() if first.startswith("#!") and " " not in first[2:].strip() else sys.executable
        return Install("editable", [str(script)], python, env)
    return Install("editable", [sys.executable, "-m", "dmabuf_inspect"], sys.executable, env)


# ---- the installed package: a fresh venv ----


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, check=True).stdout


def make_venv(target: Path, python: str) -> dict[str, object]:
    """A fresh venv at `target` with this checkout's package pip-installed into it, as a user's
    `pip install .` does (from a copy: pip must not write build/ into a shared checkout)."""
    if target.exists():
        raise SystemExit(f"bench_cli: {target} exists; remove it or name another directory")
    names = [
        n
        for n in _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PACKAGE_FILES).split("\0")
        if n
    ]
    with tempfile.TemporaryDirectory(prefix="bench_cli-src-") as src:
        for name in names:
            path = CHECKOUT / name
            if not path.exists() or path.is_symlink():
                continue  # deleted in the work tree; the package has no links
            dest = Path(src) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest, follow_symlinks=False)
        subprocess.run([python, "-m", "venv", str(target)], check=True)
        subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", src], check=True)
    package = _installed_package(target, venv_env())
    note = {
        "checkout": str(CHECKOUT),
        "commit": _git("rev-parse", "HEAD").strip(),
        "uncommitted_files": len(_git("status", "--porcelain").splitlines()),
        "python": python,
        "package": package,
        "c_walk": any((Path(package) / "kernel").glob("_fdwalk*.so")),
        "bytecode_files": sum(1 for _ in Path(package).rglob("*.pyc")),
        "made_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    note["base_python_files"] = base_python_tar(target / "bin" / "python", target / BASE_TAR)
    (target / SOURCE_NOTE).write_text(json.dumps(note, indent=2) + "\n")
    return note


def base_python_tar(python: Path, out: Path) -> int:
    """The base interpreter of the venv's `python` (its executable, libpython and standard library,
    without STDLIB_UNUSED, tests and optimised bytecode) as one tar file; returns its file count.
    In the lab the venv's copy uses it from the guest's tmpfs, as a user's interpreter is on a local
    disk: over 9p every file a process opens costs milliseconds, and `dump` imports 35 modules
    of the standard library that `python -c pass` does not."""
    info = json.loads(
        subprocess.run(
            [
                str(python),
                "-c",
                "import json, os, sys, sysconfig; print(json.dumps([sys.base_prefix, "
                "os.path.realpath(sys._base_executable), sysconfig.get_python_version()]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    prefix, executable, version = Path(info[0]), Path(info[1]), info[2]
    stdlib = prefix / "lib" / f"python{version}"
    unused = {stdlib / name for name in STDLIB_UNUSED} | set(stdlib.glob("config-*"))
    files = 0

    def keep(t: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal files
        path = prefix / t.name
        if path in unused or re.fullmatch(r"tests?", path.name) or ".opt-" in path.name:
            return None
        files += t.isfile()
        return t

    with tarfile.open(out, "w") as tar:
        tar.add(executable, arcname=f"bin/{executable.name}")
        for lib in (prefix / "lib").glob("libpython*"):
            tar.add(lib, arcname=str(lib.relative_to(prefix)))
        tar.add(stdlib, arcname=str(stdlib.relative_to(prefix)), filter=keep)
    return files + 1


def _installed_package(venv: Path, env: dict[str, str]) -> str:
    """Where the venv's interpreter imports dmabuf_inspect from: inside the venv, or an error."""
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import dmabuf_inspect, os; print(os.path.dirname(dmabuf_inspect.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    if not out.startswith(str(venv) + os.sep):
        raise SystemExit(f"bench_cli: {venv}/bin/python imports dmabuf_inspect from {out}, not from the venv")
    return out


def venv_install(venv: Path, label: str = "venv") -> Install:
    env = venv_env()
    _installed_package(venv, env)
    return Install(label, [str(venv / "bin" / "dmabuf-inspect")], str(venv / "bin" / "python"), env)


def local_copy(venv: Path) -> Path:
    """The venv copied to /var/tmp (the guest's tmpfs in the lab), its console script's #! line
    pointed at the copy's interpreter; its base interpreter too where the venv has BASE_TAR
    (else bin/python stays a link to the base interpreter where it is)."""
    dest = Path(f"/var/tmp/bench_cli-venv-{os.getpid()}")
    shutil.copytree(venv, dest, symlinks=True, ignore=shutil.ignore_patterns(BASE_TAR))
    if (venv / BASE_TAR).exists():
        local_base_python(venv / BASE_TAR, dest, LOCAL_BASE)
    script = dest / "bin" / "dmabuf-inspect"
    lines = script.read_text().split("\n", 1)
    if not lines[0].startswith("#!"):
        raise SystemExit(f"bench_cli: {script} has no #! line")
    script.write_text(f"#!{dest}/bin/python\n{lines[1]}")
    return dest


def local_base_python(tar_path: Path, venv: Path, base: Path) -> None:
    """BASE_TAR unpacked at `base`, and the venv's interpreter links and pyvenv.cfg pointed at it."""
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "tar_filter"):  # 3.11.4+; older ones extract as this filter does anyway
            tar.extractall(base, filter="tar")
        else:
            tar.extractall(base)
        executable = next(m.name for m in tar.getmembers() if m.name.startswith("bin/"))
    for link in (venv / "bin").iterdir():
        if link.is_symlink() and link.name.startswith("python"):
            link.unlink()
            link.symlink_to(base / executable)
    cfg = venv / "pyvenv.cfg"
    lines = [line for line in cfg.read_text().splitlines() if not line.startswith(("home", "executable"))]
    cfg.write_text("\n".join([f"home = {base / 'bin'}", *lines, f"executable = {base / executable}"]) + "\n")


# ---- rounds ----


def floor_binary() -> Path | None:
    for src in (CHECKOUT.parent / "shared" / "bench" / "floor_scan.c", CHECKOUT / "shared" / "bench" / "floor_scan.c"):
        if src.exists():
            out = Path("/tmp/floor_scan_cli")
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
            return out
    return None


def importtime_us(python: str, code: str, env: dict[str, str]) -> int:
    """Microseconds `python -X importtime -c CODE` reports for the imports CODE made: the
    cumulative times of the top-level imports after `site` (the interpreter's own start-up)."""
    err = subprocess.run(
        [python, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True, env=env
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


def _best(runs: list[Run]) -> float:
    return min(r.seconds for r in runs)


def contenders_for(
    user: Install | None, editable: Install, tree: list[str], venv_9p: Install | None, *, only_venv: bool = False
) -> dict[str, Contender]:
    """The Python contenders; `tree` is [] live, or ["--tree", DIR]. `only_venv`: none of the
    editable install's, nor the venv run in place (when there is a venv)."""
    c: dict[str, Contender] = {}
    if user is not None:
        e, py, env = user.entry, user.python, user.env
        c["dump"] = lambda: spawn([*e, *tree, "dump"], env)
        c["list"] = lambda: spawn([*e, *tree, "list"], env)
        if not tree:
            c["dump_nobpf"] = lambda: spawn([*e, "--no-bpf", "dump"], env)
            c["list_nobpf"] = lambda: spawn([*e, "--no-bpf", "list"], env)
        c["version"] = lambda: spawn([*e, "--version"], env)
        c["python"] = lambda: spawn([py, "-c", "pass"], env)
        c["import"] = lambda: spawn([py, "-c", "import dmabuf_inspect"], env)
        c["classify_fd"] = lambda: spawn([py, "-c", "from dmabuf_inspect import classify_fd"], env)
    if venv_9p is not None and not only_venv:
        c["dump_9p"] = lambda: spawn([*venv_9p.entry, *tree, "dump"], venv_9p.env)
    if user is not None and only_venv:
        return c
    ee, epy, eenv = editable.entry, editable.python, editable.env
    c["dump_editable"] = lambda: spawn([*ee, *tree, "dump"], eenv)
    c["list_editable"] = lambda: spawn([*ee, *tree, "list"], eenv)
    c["python_editable"] = lambda: spawn([epy, "-c", "pass"], eenv)
    if user is None:  # the start-up measures on the only install there is
        c["version"] = lambda: spawn([*ee, "--version"], eenv)
        c["import"] = lambda: spawn([epy, "-c", "import dmabuf_inspect"], eenv)
        c["classify_fd"] = lambda: spawn([epy, "-c", "from dmabuf_inspect import classify_fd"], eenv)
    return c


# The commands measured against the floor, and the bare interpreter each is measured less of.
COMMANDS = (
    ("dump", "python"),
    ("list", "python"),
    ("dump_nobpf", "python"),
    ("list_nobpf", "python"),
    ("dump_9p", "python"),
    ("dump_editable", "python_editable"),
    ("list_editable", "python_editable"),
)


def report(runs: dict[str, list[Run]], n_rounds: int, start: Install) -> dict[str, object]:
    """`start`: the install whose interpreter the start-up measures (import, classify_fd) use."""
    bare = "python" if "python" in runs else "python_editable"
    result: dict[str, object] = {
        "rounds": n_rounds,
        "seconds": {name: summary(r) for name, r in runs.items()},
        "peak_rss_bytes": {name: max(r.max_rss_bytes for r in runs[name]) for name in runs if name.startswith("dump")},
    }
    ratios: dict[str, float] = {
        "(import - python) / python": per_round(runs["import"], runs[bare], runs[bare]),
        "(classify_fd - python) / python": per_round(runs["classify_fd"], runs[bare], runs[bare]),
        "(version - python) / python": per_round(runs["version"], runs[bare], runs[bare]),
    }
    for cmd, py in COMMANDS:
        if cmd not in runs or py not in runs:
            continue
        if "floor_min" in runs:
            ratios[f"({cmd} - {py}) / floor_min"] = per_round(runs[cmd], runs["floor_min"], runs[py])
            ratios[f"({cmd} - {py}) / floor_min, of bests"] = (_best(runs[cmd]) - _best(runs[py])) / _best(
                runs["floor_min"]
            )
            ratios[f"({cmd} - {py}) / floor_naive"] = per_round(runs[cmd], runs["floor_naive"], runs[py])
        if "lsof" in runs:
            ratios[f"lsof / {cmd}"] = per_round(runs["lsof"], runs[cmd])
    result["ratios_median_per_round"] = ratios
    env, python = start.env, start.python
    importtime_us(python, "from dmabuf_inspect import classify_fd", env)  # warm
    codes = {
        "import dmabuf_inspect": "import dmabuf_inspect",
        "from dmabuf_inspect import classify_fd": "from dmabuf_inspect import classify_fd",
        "dump's imports": "import dmabuf_inspect.cli.main, dmabuf_inspect.cli.commands.dump",
        "list's imports": "import dmabuf_inspect.cli.main, dmabuf_inspect.cli.commands.list",
    }
    times: dict[str, object] = {}
    for label, code in codes.items():
        us = [importtime_us(python, code, env) for _ in range(n_rounds)]
        times[label] = {"best": min(us), "median": statistics.median(us)}
    times["python -c pass, wall (best, median)"] = [
        round(_best(runs[bare]) * 1e6),
        round(statistics.median(r.seconds for r in runs[bare]) * 1e6),
    ]
    times["interpreter"] = python
    result["importtime_us"] = times
    return result


def _load_facts(doc: dict[str, object]) -> dict[str, object]:
    buffers = doc["buffers"]
    assert isinstance(buffers, list)
    return {
        "buffers": len(buffers),
        "fds": sum(len(h["fds"]) for b in buffers for h in b["holders"]),
        "mappings": sum(h["maps"] for b in buffers for h in b["holders"]),
        "sources": doc["sources"],
    }


def lab(args: argparse.Namespace) -> dict[str, object]:
    from loadgen import load

    editable = editable_install()
    user = venv_9p = None
    source: object = None
    local: Path | None = None
    base_python = None
    if args.venv:
        venv = Path(args.venv).resolve()
        source = json.loads((venv / SOURCE_NOTE).read_text()) if (venv / SOURCE_NOTE).exists() else None
        venv_9p = venv_install(venv, "venv in place")
        local = local_copy(venv) if not args.venv_in_place else venv
        user = venv_install(local, "venv")
        base_python = os.path.realpath(user.python)  # under /var/tmp: the standard library is there too
    try:
        contenders = contenders_for(
            user, editable, [], None if args.venv_in_place else venv_9p, only_venv=args.only_venv
        )
        binary = floor_binary()
        if binary is not None:
            contenders["floor_min"] = lambda: spawn([str(binary), "1", "min"], os.environ.copy())
            contenders["floor_naive"] = lambda: spawn([str(binary), "1", "naive"], os.environ.copy())
        lsof = shutil.which("lsof")
        if lsof is not None:
            contenders["lsof"] = lambda: spawn([lsof, "-n", "-P"], os.environ.copy())
        primary = user or editable
        with load(args.processes, args.buffers, shared=args.shared):
            doc = json.loads(
                spawn([*primary.entry, "dump"], primary.env, capture=True).stdout
            )  # warms the dentry caches
            nobpf = json.loads(spawn([*primary.entry, "--no-bpf", "dump"], primary.env, capture=True).stdout)
            floor_saw = (
                spawn([str(binary), "1", "min"], os.environ.copy(), capture=True).stdout.decode() if binary else ""
            )
            runs = in_turns(contenders, args.rounds, warm_up=True)
            result = report(runs, args.rounds, primary)
    finally:
        if local is not None and not args.venv_in_place:
            shutil.rmtree(local, ignore_errors=True)
            shutil.rmtree(LOCAL_BASE, ignore_errors=True)
    result["load"] = {
        "processes": args.processes,
        "buffers_per_process": args.buffers,
        "shared": args.shared,
        "dump": _load_facts(doc),
        "dump --no-bpf": _load_facts(nobpf),
        "floor_saw": floor_saw.strip(),
    }
    result["installs"] = {
        "venv": None
        if user is None
        else {
            "entry": user.entry,
            "python": user.python,
            "source": source,
            "base_python": base_python,
        },
        "editable": {"entry": editable.entry, "python": editable.python},
    }
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
    editable = editable_install()
    user = venv_install(Path(args.venv).resolve()) if args.venv else None
    tree = ["--tree", str(root)]
    primary = user or editable
    doc = json.loads(spawn([*primary.entry, *tree, "dump"], primary.env, capture=True).stdout)
    runs = in_turns(contenders_for(user, editable, tree, None, only_venv=args.only_venv), args.rounds, warm_up=True)
    result = report(runs, args.rounds, primary)
    result["load"] = {"tree": str(root), "buffers": len(doc["buffers"]), "processes": len(doc["processes"])}
    result["installs"] = {
        "venv": None if user is None else {"entry": user.entry, "python": user.python},
        "editable": {"entry": editable.entry, "python": editable.python},
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--buffers", type=int, default=100)
    ap.add_argument("--shared", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--make-venv", metavar="DIR", help="on the host: a fresh venv DIR with this checkout pip-installed")
    ap.add_argument("--python", default=sys.executable, help="the interpreter --make-venv makes the venv with")
    ap.add_argument("--venv", metavar="DIR", help="time the install in DIR (made by --make-venv) as the user's")
    ap.add_argument(
        "--venv-in-place", action="store_true", help="run the venv where it is, not from a copy in /var/tmp"
    )
    ap.add_argument(
        "--only-venv", action="store_true", help="with --venv: time only the venv (no editable nor in-place contenders)"
    )
    ap.add_argument("--synthetic", metavar="DIR", help="time the CLI on a capture-shaped tree in DIR (made if new)")
    args = ap.parse_args()
    for name in ("make_venv", "venv", "synthetic"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    # `python -c` puts the working directory first on sys.path: run from the checkout, the venv's
    # `python -c 'import dmabuf_inspect'` would import the checkout's package, not the installed one.
    os.chdir("/")
    if args.make_venv:
        print(json.dumps(make_venv(Path(args.make_venv).resolve(), args.python), indent=2))
        return 0
    try:
        result = synthetic(args) if args.synthetic else lab(args)
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
