"""`alloc` and `heaps` without a kernel: size parsing, refusing absurd requests, holding and
releasing on signals (allocation replaced by memfds), and the heaps listing of a tree.

The real allocations run in the kernel lab (tests/kernel/test_*_selftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from paths import FIXTURES

from dmabuf_inspect.cli.commands import alloc, heaps
from dmabuf_inspect.errors import DmabufInspectError, UsageError
from dmabuf_inspect.ioctl.buffer import DmaBuf
from dmabuf_inspect.ioctl.heaps import DmaHeap
from dmabuf_inspect.ioctl.udmabuf import UdmabufDevice
from dmabuf_inspect.kernel.reader import Roots

GIB = 1 << 30


# ---- arguments -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmabuf-inspect alloc")
    alloc.add_arguments(p)
    return p


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--udmabuf", "--size", "0"], "argument --size: size '0' must be more than 0"),
        (["--udmabuf", "--size", "1Q"], "argument --size: size '1Q' is not a number"),
        (["--udmabuf", "--size", "1.5"], "argument --size: size '1.5' is not a whole number of bytes"),
        (["--udmabuf", "--size", "4K", "--count", "0"], "argument --count: count 0 must be a whole number"),
        (["--udmabuf", "--size", "4K", "--hold", "-1"], "argument --hold: hold -1 must be 0 or more seconds"),
        (["--udmabuf", "--size", "4K", "--hold", "nan"], "argument --hold: hold nan must be 0 or more"),
        (["--udmabuf", "--heap", "system", "--size", "4K"], "not allowed with argument"),
        (["--size", "4K"], "one of the arguments --udmabuf --heap --vfio is required"),
        # --udmabuf without --size: a UsageError from run() (--vfio takes no --size), tests/unit/test_vfio_ioctl.py
    ],
)
def test_bad_arguments_are_one_line_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_parse() -> None:
    args = parser().parse_args(["--heap", "system", "--size", "1.5M", "--count", "3", "--map", "--hold", "2.5"])
    assert (args.heap, args.udmabuf, args.size, args.count, args.map, args.hold) == (
        "system",
        False,
        3 << 19,
        3,
        True,
        2.5,
    )


def test_help_states_the_size_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "K, M, G or T suffix (powers of 1024; KiB and KB mean the same, case does not matter)" in text


# ---- refusing absurd requests ----------------------------------------------------------------

MEM = alloc.Memory(total_bytes=GIB, available_bytes=GIB // 2)  # margin 64 MiB: 448 MiB allowed


def sane(size: int, count: int = 1, **kw: Any) -> str | None:
    opts: dict[str, Any] = {
        "memory": MEM,
        "udmabuf_limit_mb": 64,
        "udmabuf": False,
        "mapped": False,
        "fd_limit": 1024,
    }
    opts.update(kw)
    return alloc.check_sane(size, count, **opts)


def test_sane_requests_pass() -> None:
    assert sane(1 << 20) is None
    assert sane(64 << 20, udmabuf=True) is None
    assert sane(1 << 20, 500) is None
    assert sane(GIB, memory=None, udmabuf_limit_mb=None, fd_limit=None) is None


def test_refuses_more_than_physical_memory() -> None:
    assert sane(2 * GIB) == "--size 2.0 GiB is more than this machine's memory (1.0 GiB)"


def test_refuses_over_udmabuf_size_limit() -> None:
    assert sane(65 << 20, udmabuf=True) == (
        "--size 65.0 MiB is over udmabuf's size_limit_mb (64 MiB; "
        "raise /sys/module/udmabuf/parameters/size_limit_mb as root)"
    )
    assert sane(65 << 20, udmabuf=False) is None  # heaps have no such limit


def test_count_times_size_over_available_is_not_a_usage_error() -> None:
    assert sane(100 << 20, 6) is None  # check_memory's: exit 1


def test_margin_is_an_eighth_of_available_and_at_least_64_mib() -> None:
    assert alloc.Memory(GIB, GIB // 2).margin_bytes == 64 << 20
    assert alloc.Memory(8 * GIB, 4 * GIB).margin_bytes == 512 << 20
    assert alloc.Memory(GIB, 32 << 20).allowed_bytes == 0


def test_check_memory_refuses_past_available_less_the_margin() -> None:
    alloc.check_memory(448 << 20, "x", MEM)
    alloc.check_memory(1 << 40, "x", None)  # unknown: not refused
    with pytest.raises(alloc.NotEnoughMemoryError) as info:
        alloc.check_memory((448 << 20) + 1, "--count 1 x --size 448.0 MiB", MEM)
    assert str(info.value) == (
        "--count 1 x --size 448.0 MiB = 448.0 MiB is more than the memory available (512.0 MiB) less a margin of "
        "64.0 MiB kept for the rest of the machine"
    )
    assert info.value.exit_code == 1


class FakeVirtualMemory(NamedTuple):
    total: int
    available: int


def test_read_memory_asks_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: FakeVirtualMemory(2 * GIB, GIB))
    assert alloc.read_memory() == alloc.Memory(2 * GIB, GIB)

    def fails() -> FakeVirtualMemory:
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(psutil, "virtual_memory", fails)
    assert alloc.read_memory() is None


def test_refuses_more_fds_than_the_limit() -> None:
    assert alloc.fds_needed(10, udmabuf=True, mapped=True) == 30
    assert sane(4096, 400, udmabuf=True, mapped=True) == (
        "--count 400 needs about 1216 open files, over this process's limit (ulimit -n 1024)"
    )
    assert sane(4096, 400) is None


# ---- run() with allocation replaced by memfds ------------------------------------------------


def make_tree(root: Path, *, limit_mb: int = 64) -> Roots:
    (root / "proc").mkdir()
    params = root / "sys" / "module" / "udmabuf" / "parameters"
    params.mkdir(parents=True)
    (params / "size_limit_mb").write_text(f"{limit_mb}\n")
    (params / "list_limit").write_text("1024\n")
    (root / "dev" / "dma_heap").mkdir(parents=True)
    (root / "dev" / "udmabuf").write_text("")
    return Roots.from_tree(str(root))


class Fakes:
    """Stands in for /dev/udmabuf and the heaps: each buffer is a memfd of the asked size."""

    def __init__(self) -> None:
        self.made: list[DmaBuf] = []
        self.fds: list[tuple[int, int | None]] = []
        self.names: list[tuple[int, str | bytes]] = []
        self.on_alloc: Any = None

    def buffer(self, size: int, exporter: str, with_memfd: bool) -> DmaBuf:
        fd = os.memfd_create("fake-dmabuf", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        memfd = os.dup(fd) if with_memfd else None
        buf = DmaBuf(fd, exporter=exporter, memfd=memfd)
        self.made.append(buf)
        self.fds.append((fd, memfd))
        if self.on_alloc:
            self.on_alloc()
        return buf


class FakeDevice:
    path = "/dev/udmabuf"

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeHeap:
    def __init__(self, fakes: Fakes, name: str) -> None:
        self.fakes, self.name, self.path = fakes, name, f"/dev/dma_heap/{name}"

    def alloc(self, size: int) -> DmaBuf:
        return self.fakes.buffer(size, self.name, False)

    def __enter__(self) -> FakeHeap:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> list[alloc.Memory]:
    """What psutil says: 1 GiB, 512 MiB of it available; replace [0] to change it."""
    box = [MEM]
    monkeypatch.setattr(alloc, "read_memory", lambda: box[0])
    return box


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, memory: list[alloc.Memory]) -> Iterator[Fakes]:
    f = Fakes()
    monkeypatch.setattr(UdmabufDevice, "open", classmethod(lambda cls, *a: FakeDevice()))
    monkeypatch.setattr(DmaHeap, "open", classmethod(lambda cls, name, *a: FakeHeap(f, name)))
    monkeypatch.setattr(alloc, "create_with_memfd", lambda size, device: f.buffer(size, "udmabuf", True))
    monkeypatch.setattr(DmaBuf, "set_name", lambda self, name: f.names.append((self.fd, name)))
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield f
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask_before  # run() restored it
    for buf in f.made:
        assert buf.closed, "run() must release every buffer"


def namespace(roots: Roots, **kw: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "udmabuf": False,
        "heap": None,
        "size": 4096,
        "count": 1,
        "name": None,
        "map": False,
        "hold": 0.0,
        "force": False,
        "roots": roots,
    }
    values.update(kw)
    return argparse.Namespace(**values)


def test_run_udmabuf_prints_what_it_made(tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, udmabuf=True, size=1 << 20, count=2, name="load", map=True)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"pid {os.getpid()}: 2 buffers from udmabuf (/dev/udmabuf), 2.0 MiB in all"
    assert len(out) == 3
    for line, buf, (fd, memfd) in zip(out[1:], fakes.made, fakes.fds, strict=True):
        assert line == (
            f"  fd {fd}  memfd {memfd}  inode {buf.inode}  1048576 bytes  exporter udmabuf  name load  mapped"
        )
    assert [n for _, n in fakes.names] == ["load", "load"]


def test_run_heap_escapes_names(tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", name="\x1b]0;x\x07")) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "exporter system  name \\x1b]0;x\\x07" in out
    assert "from heap system (/dev/dma_heap/system), 4.0 KiB in all" in out


def test_run_rounds_up_to_pages(tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", size=1000)) == 0
    assert "(rounded up from 1000 bytes to whole pages)" in capsys.readouterr().out
    assert fakes.made[0].size_bytes == os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize(
    ("kw", "why", "exit_code"),
    [
        ({"heap": "system", "size": 2 * GIB}, "--size 2.0 GiB is more than this machine's memory (1.0 GiB)", 2),
        ({"udmabuf": True, "size": 128 << 20}, "--size 128.0 MiB is over udmabuf's size_limit_mb (64 MiB;", 2),
        (
            {"heap": "system", "size": 100 << 20, "count": 5},
            "--count 5 x --size 100.0 MiB = 500.0 MiB is more than the memory available (512.0 MiB) less a margin "
            "of 64.0 MiB kept for the rest of the machine",
            1,
        ),
    ],
    ids=["memory", "size-limit", "available"],
)
def test_run_refuses_absurd_without_force(
    tmp_path: Path, fakes: Fakes, kw: dict[str, Any], why: str, exit_code: int
) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(DmabufInspectError) as info:
        alloc.run(namespace(roots, **kw))
    message = str(info.value)
    assert message.startswith("refusing to allocate: ")
    assert why in message
    assert message.endswith("; add --force to try anyway")
    assert "\n" not in message
    assert info.value.exit_code == exit_code
    assert fakes.made == []


def test_run_allocates_up_to_available_less_the_margin(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", size=112 << 20, count=4)) == 0  # 448 MiB
    assert len(fakes.made) == 4


def test_run_force_allocates_anyway(tmp_path: Path, fakes: Fakes, memory: list[alloc.Memory]) -> None:
    memory[0] = alloc.Memory(1 << 20, 512 << 10)
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", size=1 << 20, force=True)) == 0
    assert len(fakes.made) == 1


def test_run_refuses_long_name_before_allocating(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(UsageError, match=r"^--name: dma-buf name x{40} is 40 bytes; the kernel takes at most 31"):
        alloc.run(namespace(roots, heap="system", name="x" * 40))
    assert fakes.made == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("tree", "X"), ("proc_root", "X"), ("sys_root", "X"), ("debugfs_root", "X"), ("dev_root", "X")],
)
def test_run_refuses_every_root_option(tmp_path: Path, fakes: Fakes, option: str, value: str) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(UsageError) as info:
        alloc.run(namespace(roots, heap="system", **{option: str(tmp_path / value)}))
    flag = "--" + option.replace("_", "-")
    assert str(info.value) == (
        "alloc makes buffers on this machine, so it takes no --tree, --proc-root, --sys-root, --debugfs-root or "
        f"--dev-root (given: {flag})"
    )
    assert fakes.made == []


def test_run_takes_the_live_roots_named_explicitly(tmp_path: Path, fakes: Fakes) -> None:
    live = {"proc_root": "/proc", "sys_root": "/sys", "debugfs_root": "/sys/kernel/debug", "dev_root": "/dev"}
    assert alloc.run(namespace(make_tree(tmp_path), heap="system", tree=None, **live)) == 0


def test_run_default_hold_off_a_terminal_is_zero(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", hold=None)) == 0


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("hold", [None, 60.0])
def test_run_signal_releases_and_exits_zero(
    tmp_path: Path,
    fakes: Fakes,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    signo: int,
    hold: float | None,
) -> None:
    roots = make_tree(tmp_path)
    main = threading.get_ident()
    # the signal arrives while the buffers are being made; run() blocks it until the hold
    fakes.on_alloc = lambda: signal.pthread_kill(main, signo)
    if hold is None:
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert alloc.run(namespace(roots, heap="system", hold=hold)) == 0
    out = capsys.readouterr().out
    assert "holding them until Ctrl-C (or SIGTERM)" in out if hold is None else "holding them for 60 s" in out


def test_run_hold_zero_swallows_a_pending_signal(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    main = threading.get_ident()
    fakes.on_alloc = lambda: signal.pthread_kill(main, signal.SIGINT)
    assert alloc.run(namespace(roots, heap="system", hold=0.0)) == 0  # no KeyboardInterrupt afterwards


def test_run_hold_times_out(tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    roots = make_tree(tmp_path)
    assert alloc.run(namespace(roots, heap="system", hold=0.05)) == 0
    assert "holding them for 0.05 s" in capsys.readouterr().out


# ---- heaps -----------------------------------------------------------------------------------


def heaps_tree(root: Path, names: list[str | bytes]) -> Roots:
    roots = make_tree(root)
    for name in names:
        raw = name if isinstance(name, bytes) else name.encode()
        (root / "dev" / "dma_heap").joinpath(os.fsdecode(raw)).write_text("")
    (root / "sys" / "class" / "dma_heap" / "system").mkdir(parents=True)
    (root / "sys" / "class" / "dma_heap" / "system" / "dev").write_text("253:0\n")
    return roots


def test_heaps_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = heaps_tree(tmp_path, ["system", "linux,cma"])
    assert heaps.run(argparse.Namespace(roots=roots, json=False)) == 0
    dev = roots.dev_root
    assert capsys.readouterr().out.splitlines() == [
        f"HEAP       {'DEVICE':<{len(dev) + 19}}  MAJ:MIN",
        f"linux,cma  {dev}/dma_heap/linux,cma  -",
        f"system     {dev}/dma_heap/system     253:0",
        "",
        f"udmabuf: {dev}/udmabuf  size_limit_mb 64  list_limit 1024",
        "mem_accounting: not in this capture (a kernel before 7.0, or captured without it)",
    ]


def test_heaps_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = heaps_tree(tmp_path, ["system", b"odd\xff"])
    assert heaps.run(argparse.Namespace(roots=roots, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["heaps"][0] == {
        "name": "odd\ufffd",
        "name_hex": "6f6464ff",
        "dev_path": f"{roots.dev_root}/dma_heap/odd\ufffd",
        "major": None,
        "minor": None,
    }
    assert doc["heaps"][1] == {
        "name": "system",
        "dev_path": f"{roots.dev_root}/dma_heap/system",
        "major": 253,
        "minor": 0,
    }
    assert doc["udmabuf"] == {
        "present": True,
        "dev_path": f"{roots.dev_root}/udmabuf",
        "size_limit_mb": 64,
        "list_limit": 1024,
    }


def test_heaps_escapes_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = heaps_tree(tmp_path, ["evil\x1b[2J"])
    heaps.run(argparse.Namespace(roots=roots, json=False))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2J" in out


def test_heaps_says_when_there_are_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = Roots.from_tree(str(tmp_path))
    assert heaps.run(argparse.Namespace(roots=roots, json=False)) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"no dma-buf heaps: {roots.dev_root}/dma_heap is missing or empty (a kernel without "
        "CONFIG_DMABUF_HEAPS, or no heap driver such as CONFIG_DMABUF_HEAPS_SYSTEM)",
        "",
        f"udmabuf: no {roots.dev_root}/udmabuf (a kernel without CONFIG_UDMABUF, or the module is not "
        "loaded: modprobe udmabuf)",
        "mem_accounting: not in this capture (a kernel before 7.0, or captured without it)",
    ]
    heaps.run(argparse.Namespace(roots=roots, json=True))
    assert json.loads(capsys.readouterr().out) == {
        "heaps": [],
        "udmabuf": {
            "present": False,
            "dev_path": f"{roots.dev_root}/udmabuf",
            "size_limit_mb": None,
            "list_limit": None,
        },
        "mem_accounting": None,
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--tree", "{k612}", "bench", "--size", "4K"],
        ["bench", "--size", "4K", "--tree", "{k612}"],
        ["bench", "--dev-root", "{k612}/dev"],
        ["--sys-root", "{k612}/sys", "bench"],
        ["--tree", "{k612}", "alloc", "--heap", "system", "--size", "4K"],
        ["alloc", "--heap", "system", "--size", "4K", "--tree", "{k612}"],
        ["alloc", "--udmabuf", "--size", "4K", "--dev-root", "{k612}/dev"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_alloc_and_bench_refuse_root_options_before_or_after_the_command(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmabuf_inspect.bench import runner
    from dmabuf_inspect.cli.main import main

    def must_not_run(*a: object, **kw: object) -> None:
        raise AssertionError("allocated or measured")

    monkeypatch.setattr(runner, "run_bench", must_not_run)
    monkeypatch.setattr(DmaHeap, "open", classmethod(must_not_run))
    monkeypatch.setattr(UdmabufDevice, "open", classmethod(must_not_run))
    k612 = str(FIXTURES / "k6.12")
    assert main([a.replace("{k612}", k612) for a in argv]) == 2
    err = capsys.readouterr().err
    command = "alloc makes buffers" if "alloc" in argv else "bench measures buffers it makes"
    flag = next(a for a in argv if a.endswith("-root") or a == "--tree")
    assert err == (
        f"dmabuf-inspect: {command} on this machine, so it takes no --tree, --proc-root, --sys-root, "
        f"--debugfs-root or --dev-root (given: {flag})\n"
    )
