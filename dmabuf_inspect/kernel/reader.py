"""Every read of a kernel file: /proc, /sys, debugfs and the /dev listing, live or captured.

    roots = Roots()                         # the live machine; Roots.from_tree(DIR): a capture
    roots.proc.read(f"{pid}/status")        # bytes; roots.sys, roots.debugfs, roots.dev alike
    roots.proc.listdir("")                  # the pids (and more)
    roots.proc.readlink(f"{pid}/fd/3")      # the link's text, never followed
    gap_kind(exc)                           # what an OSError from any of them means for a scan

A `Tree` is one root and how to read under it. `Roots` holds the four trees of a scan and the
live flag, computed once: live when `proc_root` is the real /proc.

A captured tree mirrors the live layout under one directory per root (`proc/`, `sys/`,
`sys/kernel/debug/`, `dev/`). Its fd links are plain symlinks whose targets are only ever read
as text; no path in it is followed outside its root: such a read raises OutsideRootError, and
an open never blocks (a FIFO in a capture must not hang the scan).

Imported by `dmabuf_inspect.classify`, so by `import dmabuf_inspect`: standard library only.
"""

from __future__ import annotations

import errno
import io
import os

LIVE_PROC = "/proc"

# What an OSError from a read means for a scan (psutil's wrap_exceptions is the model):
GONE = "gone"  # the process, fd or buffer went away meanwhile: skip it, say nothing
DENIED = "denied"  # no permission: count it, say so once
OUTSIDE = "outside"  # a captured tree's link leads outside it: refused, never read
BROKEN = "broken"  # any other error (EIO, EINVAL, ...): say what it was

_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


class OutsideRootError(OSError):
    """A captured tree tried to lead a read outside its root. Not a PermissionError: nothing
    was denied; the read was refused before it was made."""

    def __init__(self, link: str, target: str) -> None:
        # The target is a capture's text: escape() the message before it reaches a terminal.
        super().__init__(f"{link} leads outside the capture (to {target})")
        self.link = link
        self.target = target


def gap_kind(exc: OSError, *, gone: frozenset[int] = _GONE_ERRNOS) -> str:
    """GONE, DENIED, OUTSIDE or BROKEN: what `exc`, raised by a read of a kernel file, means.

    `gone`: the errnos that mean "went away" for this read (sysfs adds EIO: a buffer's files
    read while it is freed).
    """
    if isinstance(exc, OutsideRootError):
        return OUTSIDE
    code = exc.errno
    if code in gone:
        return GONE
    if code in _DENIED_ERRNOS:
        return DENIED
    return BROKEN


def gap_text(exc: OSError) -> str:
    """The one-line reason for `exc`: the refusal for an outside link, else the errno's text."""
    if isinstance(exc, OutsideRootError) or not exc.errno:
        return str(exc)
    return os.strerror(exc.errno)


def _read_all(path: str, flags: int, limit: int) -> bytes:
    """The file's bytes, read through a file object: a signal handler that raises (`record`'s
    SIGTERM) runs right after open() returns, and the object closes the file as it is dropped,
    where a bare fd would stay open (and an open tracefs file keeps its instance busy: EBUSY)."""
    with io.FileIO(path, "rb") if flags == _O_READ else io.FileIO(os.open(path, flags), "rb") as f:
        chunks = []
        total = 0
        size = 65536
        while total < limit:
            chunk = f.read(size)  # None: a non-blocking file with nothing to read now
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            # a big file (bufinfo: 1.3 MB at 10 000 buffers) in a few reads, each of which a
            # thread reading it must take the GIL back for
            size = min(size * 2, _MAX_CHUNK)
        return b"".join(chunks)


_O_READ = os.O_RDONLY | os.O_CLOEXEC
_MAX_CHUNK = 1 << 22
# In a capture the folder is resolved and checked, and the file opened without following it: a
# file that is a link fails (ELOOP) and is then resolved and checked too.
_O_CAPTURED = _O_READ | os.O_NONBLOCK | os.O_NOFOLLOW


def read_live_once(path: str, size: int) -> bytes:
    """One read(2) of at most `size` bytes of a live kernel file (classify_fd's /proc/self/fdinfo).

    Raises OSError as os.open() does.
    """
    fd = os.open(path, _O_READ)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


class Tree:
    """One root (/proc, /sys, debugfs, /dev, or its copy in a capture) and how to read under it.

    Paths are relative to the root ("" is the root). Live, they are read as they are; captured,
    each must resolve inside the root, or the call raises OutsideRootError.
    """

    __slots__ = ("_dirs", "_real", "_top", "live", "root")

    def __init__(self, root: str, *, live: bool) -> None:
        self.root = root
        self.live = live
        self._top = root if root.endswith("/") else root + "/"
        self._real: str | None = None
        self._dirs: dict[str, str] = {}  # a capture's folders, resolved and checked once

    def __repr__(self) -> str:
        return f"Tree({self.root!r}, live={self.live})"

    def path(self, rel: str) -> str:
        """The full path of `rel`, as the user would write it (not resolved)."""
        return self._top + rel if rel else self.root

    @property
    def real_root(self) -> str:
        """The root with every link resolved (computed once)."""
        real = self._real
        if real is None:
            real = self._real = os.path.realpath(self.root)
        return real

    def _under(self, real: str) -> bool:
        top = self.real_root
        return real == top or real.startswith(top if top.endswith("/") else top + "/")

    def _inside(self, path: str) -> str:
        """`path` resolved; OutsideRootError if that is not under the root."""
        real = os.path.realpath(path)
        if not self._under(real):
            raise self._outside(path)
        return real

    def _dir(self, path: str) -> str:
        """The folder `path` resolved and checked (once: a capture does not change under a scan)."""
        real = self._dirs.get(path)
        if real is None:
            real = self._inside(path)
            if len(self._dirs) < 65536:
                self._dirs[path] = real
        return real

    def _in_dir(self, path: str) -> str:
        """`path` with its folder resolved and checked; its last part is left as it is."""
        head, name = os.path.split(path)
        if name in ("", ".", ".."):
            return self._inside(path)
        return os.path.join(self._dir(head), name)

    def _outside(self, path: str) -> OutsideRootError:
        """The error naming the first link on `path` that leads outside (found on this path only)."""
        head = self.root
        for part in os.path.relpath(path, self.root).split(os.sep):
            head = os.path.join(head, part)
            if os.path.islink(head) and not self._under(os.path.realpath(head)):
                try:
                    return OutsideRootError(head, os.readlink(head))
                except OSError:
                    break
        return OutsideRootError(path, os.path.realpath(path))

    def read(self, rel: str, limit: int = 1 << 24) -> bytes:
        """The file's bytes (at most about `limit`)."""
        if self.live:
            return _read_all(self._top + rel, _O_READ, limit)
        path = self.path(rel)
        try:
            return _read_all(self._in_dir(path), _O_CAPTURED, limit)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        return _read_all(self._inside(path), _O_CAPTURED, limit)  # the file is a link: resolve it too

    def read_once(self, rel: str, size: int) -> bytes:
        """At most `size` bytes, in one read(2) where live: for /proc/PID's small files (status,
        stat, cmdline, cgroup, fdinfo/N), which give all they have to one read that asks for more
        (seq_read_iter() of a single_open() file; proc_pid_cmdline_read() loops itself), so the
        read that only finds the end is not needed: 3 system calls instead of read()'s 5 (with the
        fstat() of a file object), hundreds of them per scan. In a capture, read()."""
        if self.live:
            return read_live_once(self._top + rel, size)
        return self.read(rel, size)

    def check_open(self, rel: str) -> None:
        """Open `rel` for reading and close it, reading nothing (a read of debugfs bufinfo walks
        every buffer); raises OSError as read() would."""
        path = self.path(rel)
        os.close(os.open(path, _O_READ) if self.live else os.open(self._inside(path), _O_CAPTURED))

    def read_text(self, rel: str, limit: int = 1 << 24) -> str:
        return self.read(rel, limit).decode("utf-8", "surrogateescape")

    def listdir(self, rel: str = "") -> list[str]:
        path = self.path(rel)
        return os.listdir(path if self.live else self._dir(path))

    def readlink(self, rel: str) -> str:
        """The text of the link `rel` (decoded with surrogateescape: os.fsencode() gives back the
        exact bytes). The link itself is never followed; in a capture, the folder it is in must be
        inside the root."""
        path = self.path(rel)
        return os.readlink(path if self.live else self._in_dir(path))

    def lexists(self, rel: str) -> bool:
        """Whether `rel` exists (a link counts, followed or not); False where it would lead outside."""
        path = self.path(rel)
        if not self.live:
            try:
                path = self._in_dir(path)
            except OutsideRootError:
                return False
        return os.path.lexists(path)

    def isdir(self, rel: str) -> bool:
        """Whether `rel` is a directory; False where it would lead outside."""
        path = self.path(rel)
        if not self.live:
            try:
                path = self._inside(path)
            except OutsideRootError:
                return False
        return os.path.isdir(path)

    def stat(self, rel: str) -> os.stat_result:
        """stat() of what `rel` leads to (a device node, live)."""
        path = self.path(rel)
        return os.stat(path if self.live else self._inside(path))

    def open_dir(self, rel: str) -> int:
        """An O_DIRECTORY fd of `rel`, for fd-relative reads (kernel/fdwalk); the caller closes it."""
        path = self.path(rel)
        return os.open(path if self.live else self._inside(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # -- writes, for the few kernel interfaces driven by files (tracefs); live trees only ------

    def _live_path(self, rel: str) -> str:
        if not self.live:
            raise OSError(errno.EROFS, "a capture is only read", self.path(rel))
        return self.path(rel)

    def open_read(self, rel: str, *, blocking: bool = True) -> int:
        """An O_RDONLY fd of `rel` that the caller keeps and closes (tracefs trace_pipe)."""
        path = self.path(rel)
        if not self.live:
            return os.open(self._inside(path), _O_CAPTURED)
        return os.open(path, _O_READ if blocking else _O_READ | os.O_NONBLOCK)

    def write(self, rel: str, data: bytes) -> None:
        """Write a control file; never creates one (O_CREAT would hide a missing file)."""
        fd = os.open(self._live_path(rel), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def mkdir(self, rel: str) -> None:
        """mkdir(2) under the root: a tracefs instance is made this way."""
        os.mkdir(self._live_path(rel))

    def rmdir(self, rel: str) -> None:
        """rmdir(2) under the root: a tracefs instance is removed this way."""
        os.rmdir(self._live_path(rel))

    def writable(self, rel: str) -> bool:
        """Whether this process may write to `rel` (access(2) W_OK); False in a capture."""
        return self.live and os.access(self.path(rel), os.W_OK)


def is_live_proc(proc_root: str) -> bool:
    """True when `proc_root` is the real /proc, so fd links may be followed (stat)."""
    return os.path.realpath(proc_root) == LIVE_PROC


class Roots:
    """The four roots a scan reads, each as a Tree, and whether they are the live machine's.

    `live` is computed once, from `proc_root`: True when it is the real /proc. Pass `live=` only
    to pretend (tests).

    `bpf`: whether a scan may read BPF iterators (ours when root, a pinned one, or a capture's
    copy; `--no-bpf` says False); `bpf_iter`: a pinned iterator to read (`--bpf-iter PATH`).
    """

    __slots__ = (
        "bpf",
        "bpf_iter",
        "debugfs",
        "debugfs_root",
        "dev",
        "dev_root",
        "live",
        "proc",
        "proc_root",
        "sys",
        "sys_root",
    )

    def __init__(
        self,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        debugfs_root: str = "/sys/kernel/debug",
        dev_root: str = "/dev",
        *,
        live: bool | None = None,
        bpf: bool = True,
        bpf_iter: str | None = None,
    ) -> None:
        self.bpf = bpf
        self.bpf_iter = bpf_iter
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.debugfs_root = debugfs_root
        self.dev_root = dev_root
        self.live: bool = is_live_proc(proc_root) if live is None else live
        self.proc = Tree(proc_root, live=self.live)
        self.sys = Tree(sys_root, live=self.live)
        self.debugfs = Tree(debugfs_root, live=self.live)
        self.dev = Tree(dev_root, live=self.live)

    @classmethod
    def from_tree(cls, tree: str, *, bpf: bool = True) -> Roots:
        """Roots of a capture made by `dmabuf-inspect capture` (or laid out the same way)."""
        return cls(
            proc_root=os.path.join(tree, "proc"),
            sys_root=os.path.join(tree, "sys"),
            debugfs_root=os.path.join(tree, "sys", "kernel", "debug"),
            dev_root=os.path.join(tree, "dev"),
            bpf=bpf,
        )

    def _key(self) -> tuple[str, str, str, str]:
        return (self.proc_root, self.sys_root, self.debugfs_root, self.dev_root)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Roots):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Roots(proc_root={self.proc_root!r}, sys_root={self.sys_root!r}, "
            f"debugfs_root={self.debugfs_root!r}, dev_root={self.dev_root!r})"
        )
