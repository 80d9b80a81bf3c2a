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
from typing import Any

import pytest

from dmabuf_inspect.cli.commands import alloc, heaps
from dmabuf_inspect.errors import InvalidArgumentError, UsageError
from dmabuf_inspect.ioctl.buffer import DmaBuf
from dmabuf_inspect.ioctl.heaps import DmaHeap
from dmabuf_inspect.ioctl.udmabuf import UdmabufDevice
from dmabuf_inspect.kernel.reader import Roots

GIB = 1 << 30


# ---- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("4K", 4096),
        ("4k", 4096),
        ("4KiB", 4096),
        ("4kb", 4096),
        (" 1M ", 1 << 20),
        ("1G", GIB),
        ("2T", 2 << 40),
        ("1.5M", 3 << 19),
        ("0.5K", 512),
        ("1", 1),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert alloc.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is not a number"),
        ("K", "is not a number"),
        ("1X", "is not a number with an optional K, M, G or T"),
        ("-1", "is not a number"),
        ("1e3", "is not a number"),
        ("0", "must be more than 0"),
        ("0K", "must be more than 0"),
        ("1.5", "is not a whole number of bytes"),
        ("0.1K", "is not a whole number of bytes"),
        ("\x1b[2J", "\\x1b[2J"),
    ],
)
def test_parse_size_refuses(text: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        alloc.parse_size(text)
    assert why in str(info.value)
    assert "\x1b" not in str(info.value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmabuf-inspect alloc")
    alloc.add_arguments(p)
    return p


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--udmabuf", "--size", "0"], "argument --size: size 0 must be more than 0"),
        (["--udmabuf", "--size", "1Q"], "argument --size: size 1Q is not a number"),
        (["--udmabuf", "--size", "4K", "--count", "0"], "argument --count: count 0 must be a whole number"),
        (["--udmabuf", "--size", "4K", "--hold", "-1"], "argument --hold: hold -1 must be 0 or more seconds"),
        (["--udmabuf", "--size", "4K", "--hold", "nan"], "argument --hold: hold nan must be 0 or more"),
        (["--udmabuf", "--heap", "system", "--size", "4K"], "not allowed with argument"),
        (["--size", "4K"], "one of the arguments --udmabuf --heap is required"),
        (["--udmabuf"], "the following arguments are required: --size"),
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
    args = parser().parse_args(["--heap", "system", "--size", "1M", "--count", "3", "--map", "--hold", "2.5"])
    assert (args.heap, args.udmabuf, args.size, args.count, args.map, args.hold) == (
        "system",
        False,
        1 << 20,
        3,
        True,
        2.5,
    )


# ---- refusing absurd requests ----------------------------------------------------------------

MEM = alloc.Memory(total_bytes=GIB, available_bytes=GIB // 2)


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
    assert sane(GIB, memory=alloc.Memory(None, None), udmabuf_limit_mb=None, fd_limit=None) is None


def test_refuses_more_than_physical_memory() -> None:
    assert sane(2 * GIB) == "--size 2.0 GiB is more than this machine's memory (1.0 GiB)"


def test_refuses_over_udmabuf_size_limit() -> None:
    assert sane(65 << 20, udmabuf=True) == (
        "--size 65.0 MiB is over udmabuf's size_limit_mb (64 MiB; "
        "raise /sys/module/udmabuf/parameters/size_limit_mb as root)"
    )
    assert sane(65 << 20, udmabuf=False) is None  # heaps have no such limit


def test_refuses_count_times_size_over_available() -> None:
    assert sane(100 << 20, 6) == (
        "--count 6 x --size 100.0 MiB = 600.0 MiB is more than the memory available (512.0 MiB)"
    )


def test_refuses_more_fds_than_the_limit() -> None:
    assert alloc.fds_needed(10, udmabuf=True, mapped=True) == 30
    assert sane(4096, 400, udmabuf=True, mapped=True) == (
        "--count 400 needs about 1216 open files, over this process's limit (ulimit -n 1024)"
    )
    assert sane(4096, 400) is None


def test_read_memory(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:        2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n")
    assert alloc.read_memory(str(tmp_path)) == alloc.Memory(2048 * 1024, 1024 * 1024)
    (tmp_path / "meminfo").write_text("MemTotal: 2048 kB\nMemFree: 100 kB\n")
    assert alloc.read_memory(str(tmp_path)) == alloc.Memory(2048 * 1024, 100 * 1024)
    assert alloc.read_memory(str(tmp_path / "none")) == alloc.Memory(None, None)


# ---- run() with allocation replaced by memfds ------------------------------------------------


def make_tree(root: Path, *, mem_kb: int = 1 << 20, avail_kb: int = 1 << 19, limit_mb: int = 64) -> Roots:
    (root / "proc").mkdir()
    (root / "proc" / "meminfo").write_text(f"MemTotal: {mem_kb} kB\nMemAvailable: {avail_kb} kB\n")
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
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
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
    ("kw", "why"),
    [
        ({"heap": "system", "size": 2 * GIB}, "--size 2.0 GiB is more than this machine's memory (1.0 GiB)"),
        ({"udmabuf": True, "size": 128 << 20}, "--size 128.0 MiB is over udmabuf's size_limit_mb (64 MiB;"),
        ({"heap": "system", "size": 100 << 20, "count": 6}, "= 600.0 MiB is more than the memory available"),
    ],
    ids=["memory", "size-limit", "count"],
)
def test_run_refuses_absurd_without_force(tmp_path: Path, fakes: Fakes, kw: dict[str, Any], why: str) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(UsageError) as info:
        alloc.run(namespace(roots, **kw))
    message = str(info.value)
    assert message.startswith("refusing to allocate: ")
    assert why in message
    assert message.endswith("; add --force to try anyway")
    assert "\n" not in message
    assert info.value.exit_code == 2
    assert fakes.made == []


def test_run_force_allocates_anyway(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path, mem_kb=1024, avail_kb=512)
    assert alloc.run(namespace(roots, heap="system", size=1 << 20, force=True)) == 0
    assert len(fakes.made) == 1


def test_run_refuses_long_name_before_allocating(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(UsageError, match=r"^--name: dma-buf name x{40} is 40 bytes; the kernel takes at most 31"):
        alloc.run(namespace(roots, heap="system", name="x" * 40))
    assert fakes.made == []


def test_run_refuses_a_captured_tree(tmp_path: Path, fakes: Fakes) -> None:
    roots = make_tree(tmp_path)
    with pytest.raises(UsageError, match="cannot use a captured --tree"):
        alloc.run(namespace(roots, heap="system", tree=str(tmp_path)))
    assert fakes.made == []


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
    }
