"""The one reader of kernel files (kernel/reader.py) and the one error policy (gap_kind).

Every read of /proc, /sys, debugfs and the /dev listing goes through a `Tree`; in a captured
tree, nothing is read that resolves outside it, and such a read is refused as "outside", never
as permission denied.
"""

from __future__ import annotations

import ast
import errno
import io
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from paths import REPO

from dmabuf_inspect.kernel import reader
from dmabuf_inspect.kernel.reader import (
    BROKEN,
    DENIED,
    GONE,
    OUTSIDE,
    OutsideRootError,
    Roots,
    Tree,
    gap_kind,
    gap_text,
)

PACKAGE = REPO / "dmabuf_inspect"
# The front ends open the user's own files (exports, diffs, the roots they check) and ask scan/
# and kernel/ for everything else; the rule is for the layers that read the machine.
FRONT_ENDS = ("dmabuf_inspect.cli", "dmabuf_inspect.tui")

# Calls that open, list, stat or resolve a path.
PATH_CALLS = frozenset(
    {
        "open",
        "io.open",
        "os.open",
        "os.listdir",
        "os.scandir",
        "os.walk",
        "os.readlink",
        "os.stat",
        "os.lstat",
        "os.path.exists",
        "os.path.lexists",
        "os.path.isdir",
        "os.path.isfile",
        "os.path.islink",
        "os.path.realpath",
    }
)

# (module, function) -> why it may touch a path by itself. Everything else goes through the reader.
ALLOWED: dict[tuple[str, str], str] = {
    ("dmabuf_inspect.kernel.fdwalk", "fds_by_inode_py"): "fd-relative: a directory fd from Tree.open_dir",
    ("dmabuf_inspect.kernel.fdwalk", "dmabuf_dev"): "fd-relative: a directory fd from Tree.open_dir",
    ("dmabuf_inspect.ioctl.heaps", "DmaHeap.open"): "a device node opened for ioctls",
    ("dmabuf_inspect.ioctl.udmabuf", "UdmabufDevice.open"): "a device node opened for ioctls",
    ("dmabuf_inspect.ioctl.vfio", "_open"): "VFIO device nodes (/dev/vfio/vfio, /dev/vfio/GROUP) opened for ioctls",
    ("dmabuf_inspect.errors", "device_permission_cause"): "stat of a device node, to explain EACCES",
    ("dmabuf_inspect.scan.capture", "_Writer.file"): "writes the capture's own output",
    ("dmabuf_inspect.scan.capture", "_prepare"): "checks the capture's output directory is empty",
    ("dmabuf_inspect.schemas", "load"): "the package's own JSON Schemas",
    ("dmabuf_inspect.bench.cache", "load"): "the bench cache's own files",
    ("dmabuf_inspect.bench.cache", "CacheReader.read"): "the bench cache's own files",
    ("dmabuf_inspect.history.store", "create"): "the history store's own files",
    ("dmabuf_inspect.history.store", "open_read"): "the history store's own files",
    ("dmabuf_inspect.history.chart", "write_svg"): "writes the user's SVG",
    ("dmabuf_inspect.kernel.bpf.source", "_read_cached"): "the BPF layout cache's own files",
    ("dmabuf_inspect.kernel.bpf.source", "_write_cache"): "the BPF layout cache's own files",
    ("dmabuf_inspect.kernel.bpf.source", "_existing_ancestor"): "bpffs: where `bpf pin` will make its pin",
    ("dmabuf_inspect.kernel.bpf.source", "pin"): "bpffs: `bpf pin` makes a pin (root)",
    ("dmabuf_inspect.kernel.bpf.source", "unpin"): "bpffs: `bpf unpin` removes a pin and its emptied directory",
}
# Kernel files still read outside the reader, by modules other sessions are writing: each is to
# move onto kernel/reader.py (a Tree), and then leave this list. "*": the module and those under it.
PENDING: dict[tuple[str, str], str] = {}


def _pending(module: str, function: str) -> bool:
    if (module, function) in PENDING:
        return True
    return any(f == "*" and (module == m or module.startswith(m + ".")) for m, f in PENDING)


def _call_name(func: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(func.id)
    return ".".join(reversed(parts))


def path_calls(source: str) -> list[tuple[str, str, int]]:
    """(enclosing function, call, line) of every PATH_CALLS call in a module's source."""
    found: list[tuple[str, str, int]] = []
    scope: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
            scope.append(node.name)
            self.generic_visit(node)
            scope.pop()

        visit_AsyncFunctionDef = visit_FunctionDef
        visit_ClassDef = visit_FunctionDef

        def visit_Call(self, node: ast.Call) -> None:
            name = _call_name(node.func)
            if name in PATH_CALLS:
                found.append((".".join(scope) or "<module>", name, node.lineno))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_modules() -> list[tuple[str, Path]]:
    modules = [(_module(path), path) for path in sorted(PACKAGE.rglob("*.py"))]
    return [(m, p) for m, p in modules if not m.startswith(FRONT_ENDS) and m != "dmabuf_inspect.kernel.reader"]


def test_no_module_but_the_reader_opens_a_path_by_itself() -> None:
    stray = []
    for module, path in _core_modules():
        for function, call, line in path_calls(path.read_text()):
            key = (module, function)
            if key in ALLOWED or _pending(module, function):
                continue
            stray.append(f"{path.relative_to(REPO)}:{line}: {call}() in {function}")
    assert stray == [], "read kernel files through kernel/reader.py (a Tree):\n" + "\n".join(stray)


def test_the_scan_finds_what_it_must() -> None:
    calls = path_calls(
        "import os\ndef f(p):\n    with open(p) as x:\n        return os.listdir(x), os.path.exists(p)\n"
    )
    assert [(f, c) for f, c, _ in calls] == [("f", "open"), ("f", "os.listdir"), ("f", "os.path.exists")]


def test_the_allowlists_name_only_code_that_exists() -> None:
    """An exception that no longer matches anything is stale: drop it."""
    seen = set()
    for module, path in _core_modules():
        calls = {(module, function) for function, _, _ in path_calls(path.read_text())}
        seen |= calls
        if calls:
            seen |= {(".".join(module.split(".")[:n]), "*") for n in range(2, module.count(".") + 2)}
    assert set(ALLOWED) - seen == set()
    assert set(PENDING) - seen == set()


# -- the tree ----------------------------------------------------------------------------------


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """A captured /proc with links that stay inside, lead outside, and dangle."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("pos:\t0\nflags:\t02\nmnt_id:\t9\nsize:\t4096\ncount:\t1\nexp_name:\tsystem\n")
    proc = tmp_path / "tree" / "proc"
    (proc / "7" / "fdinfo").mkdir(parents=True)
    (proc / "7" / "status").write_text("Name:\tx\n")
    os.symlink("status", proc / "7" / "inside")
    os.symlink(str(outside / "secret"), proc / "7" / "fdinfo" / "3")
    os.symlink("../../../../outside/secret", proc / "7" / "fdinfo" / "4")
    os.symlink("nowhere", proc / "7" / "fdinfo" / "5")
    os.symlink(str(outside), proc / "8")
    os.symlink("/dmabuf:x", outside / "link")
    return proc


def test_a_capture_reads_inside_and_refuses_outside(capture: Path) -> None:
    proc = Tree(str(capture), live=False)
    assert proc.read("7/status") == b"Name:\tx\n"
    assert proc.read("7/inside") == b"Name:\tx\n"  # a link that stays inside is followed
    for rel, link, target in (
        ("7/fdinfo/3", "7/fdinfo/3", str(capture.parent.parent / "outside" / "secret")),
        ("7/fdinfo/4", "7/fdinfo/4", "../../../../outside/secret"),
        ("8/secret", "8", str(capture.parent.parent / "outside")),
    ):
        with pytest.raises(OutsideRootError) as info:
            proc.read(rel)
        assert (info.value.link, info.value.target) == (str(capture / link), target)
        assert str(info.value) == f"{capture / link} leads outside the capture (to {target})"
    with pytest.raises(FileNotFoundError):
        proc.read("7/fdinfo/5")  # dangling, inside: gone, not outside
    with pytest.raises(OutsideRootError):
        proc.listdir("8")
    with pytest.raises(OutsideRootError):
        proc.readlink("8/link")  # the link's folder leads out: not even its text is read
    assert proc.lexists("7/fdinfo/3") and not proc.lexists("8/link") and not proc.lexists("7/none")
    assert proc.isdir("7") and not proc.isdir("8")


def test_outside_is_not_a_permission_error() -> None:
    exc = OutsideRootError("tree/proc/1/maps", "/etc/passwd")
    assert not isinstance(exc, PermissionError)
    assert isinstance(exc, OSError) and exc.errno is None
    assert gap_kind(exc) == OUTSIDE
    assert gap_text(exc) == "tree/proc/1/maps leads outside the capture (to /etc/passwd)"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), GONE),
        (ProcessLookupError(errno.ESRCH, "x"), GONE),
        (PermissionError(errno.EACCES, "x"), DENIED),
        (PermissionError(errno.EPERM, "x"), DENIED),
        (OSError(errno.EIO, "x"), BROKEN),
        (OSError(errno.EINVAL, "x"), BROKEN),
        (OSError("no errno"), BROKEN),
    ],
)
def test_gap_kind(exc: OSError, kind: str) -> None:
    assert gap_kind(exc) == kind


def test_gap_kinds_are_the_scan_error_kinds() -> None:
    from dmabuf_inspect import model

    assert (DENIED, OUTSIDE, BROKEN) == (model.DENIED, model.OUTSIDE, model.BROKEN)
    assert {DENIED, OUTSIDE, BROKEN} < set(model.SCAN_ERROR_KINDS) and GONE not in model.SCAN_ERROR_KINDS


def test_gap_kind_takes_the_errnos_that_mean_gone_for_a_source() -> None:
    eio = OSError(errno.EIO, "Input/output error")
    assert gap_kind(eio, gone=frozenset({errno.ENOENT, errno.EIO})) == GONE
    assert gap_text(eio) == "Input/output error"


def test_roots_compute_live_once_and_keep_their_api(tmp_path: Path) -> None:
    live = Roots()
    assert live.live and live.proc.live and live.dev.live and live == Roots()
    tree = Roots.from_tree(str(tmp_path))
    assert not tree.live and not tree.sys.live
    assert (tree.proc_root, tree.sys_root, tree.debugfs_root, tree.dev_root) == (
        str(tmp_path / "proc"),
        str(tmp_path / "sys"),
        str(tmp_path / "sys" / "kernel" / "debug"),
        str(tmp_path / "dev"),
    )
    assert tree.debugfs.path("dma_buf/bufinfo") == str(tmp_path / "sys/kernel/debug/dma_buf/bufinfo")
    assert tree == Roots.from_tree(str(tmp_path)) and hash(tree) == hash(Roots.from_tree(str(tmp_path)))
    assert Roots(proc_root=str(tmp_path), live=True).live  # tests may pretend
    os.symlink("/proc", tmp_path / "proc-link")
    assert Roots(proc_root=str(tmp_path / "proc-link")).live  # the real /proc, under another name


def test_a_live_tree_writes_control_files_and_never_creates_one(tmp_path: Path) -> None:
    (tmp_path / "tracing_on").write_text("1")
    tree = Tree(str(tmp_path), live=True)
    tree.write("tracing_on", b"0")
    assert (tmp_path / "tracing_on").read_text() == "0"
    with pytest.raises(FileNotFoundError):
        tree.write("no_such_option", b"1")
    assert not (tmp_path / "no_such_option").exists()
    tree.mkdir("instance")
    assert tree.isdir("instance") and tree.writable("instance")
    tree.rmdir("instance")
    assert not tree.lexists("instance")
    os.mkfifo(tmp_path / "trace_pipe")
    fd = tree.open_read("trace_pipe", blocking=False)  # no writer: blocks unless O_NONBLOCK
    try:
        assert os.read(fd, 10) == b""
    finally:
        os.close(fd)


def test_a_capture_is_never_written(capture: Path) -> None:
    proc = Tree(str(capture), live=False)
    calls: list[Callable[[], None]] = [
        lambda: proc.write("7/status", b"x"),
        lambda: proc.mkdir("9"),
        lambda: proc.rmdir("7/fdinfo"),
    ]
    for call in calls:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EROFS
    assert (capture / "7" / "status").read_bytes() == b"Name:\tx\n" and (capture / "7" / "fdinfo").is_dir()
    assert not proc.writable("7")
    fd = proc.open_read("7/inside")
    os.close(fd)
    with pytest.raises(OutsideRootError):
        proc.open_read("7/fdinfo/3")


class _Stopped(BaseException):
    pass


def test_a_signal_that_raises_mid_read_leaks_no_fd(tmp_path: Path) -> None:
    """`record` turns SIGTERM into an exception wherever it lands; a read it interrupts must not
    leave its file open (an open tracefs file keeps the trace instance busy: rmdir says EBUSY).
    Python runs the handler right after the open() call returns, before any `try` is entered."""
    (tmp_path / "stats").write_bytes(b"entries: 0\noverrun: 0\n" * 50)
    tree = Tree(str(tmp_path), live=True)
    armed = False

    def raise_when_armed(signum: int, frame: object) -> None:
        if armed:
            raise _Stopped

    fds_before = set(os.listdir("/proc/self/fd"))
    old = signal.signal(signal.SIGALRM, raise_when_armed)
    stops = 0
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
        for _ in range(50_000):
            try:
                armed = True
                tree.read("stats")
                armed = False
            except _Stopped:
                armed = False
                stops += 1
                if stops == 500:
                    break
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert stops > 0
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()


def test_a_big_file_is_read_whole_in_a_few_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bufinfo at 10 000 buffers is 1.3 MB, read by a thread that takes the GIL back after each
    read(2): the chunks double (64 KiB up to 4 MiB), not 21 reads of 64 KiB."""
    body = bytes(range(256)) * (3_000_000 // 256)
    (tmp_path / "big").write_bytes(body)
    sizes: list[int] = []

    class Counted(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            sizes.append(size or -1)
            return super().read(size)

    monkeypatch.setattr(reader, "io", SimpleNamespace(FileIO=Counted))
    tree = Tree(str(tmp_path), live=True)
    assert tree.read("big") == body
    assert sizes == [1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 22]
    sizes.clear()
    assert tree.read("big", 100_000) == body[: (1 << 16) + (1 << 17)]  # at most about the limit
