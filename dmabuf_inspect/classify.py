"""Which exporter made a dma-buf fd: the run-time check a compositor makes on a client's buffer.

    info = classify_fd(fd)          # this process's fd; no root needed
    info.exporter                   # fdinfo exp_name: "udmabuf", "system", "drm", "i915", ...
    info.exporter_class             # "udmabuf", "heap", "gpu-prime", a driver, or "unknown"
    classify(pid, fd)               # another process's fd, through /proc/PID/fdinfo/FD

An fd is checked to be a dma-buf before its fdinfo is trusted: fstat() must give the st_dev of
the dma-buf filesystem, learned the first time fstatfs() found DMA_BUF_MAGIC. The answer is then
memoised with the fdinfo text it came from, so asking again about a buffer costs one
open/read/close of /proc/self/fdinfo/FD and a comparison with the text seen last time (an fstat
per call alone cost more than the 30% budget over the bare read in the lab).
"""

from __future__ import annotations

import errno
import os
import stat

from dmabuf_inspect import exporters as classes
from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError
from dmabuf_inspect.kernel.reader import DENIED, GONE, OUTSIDE, Roots, Tree, gap_kind, read_live_once
from dmabuf_inspect.records import NamedTuple
from dmabuf_inspect.textsafe import escape

DMA_BUF_MAGIC = 0x444D4142  # include/uapi/linux/magic.h
_INO = b"\nino:\t"
_SIZE = b"\nsize:\t"
_EXP_NAME = b"\nexp_name:\t"
_NAME = b"\nname:\t"
_CACHE_MAX = 4096
_LIVE_PROC = Tree("/proc", live=True)
_LIVE_DEV = Tree("/dev", live=True)

_dmabuf_dev: int | None = None  # st_dev of the dma-buf filesystem, once fstatfs() proved its magic
_memo: dict[int, tuple[bytes, ExporterInfo]] = {}  # fd -> (its fdinfo text, with ino:, and answer)
_paths: dict[int, str] = {}  # fd -> /proc/self/fdinfo/FD


class ExporterInfo(NamedTuple):
    """What a dma-buf fd says about its exporter."""

    exporter: str  # fdinfo exp_name
    exporter_class: str  # classes.exporter_class(): udmabuf | heap | gpu-prime | driver | unknown
    inode: int | None  # the buffer's inode, as /proc/PID/maps and debugfs bufinfo print it
    size_bytes: int
    name: str | None  # DMA_BUF_SET_NAME text, decoded with surrogateescape; escape() it for terminals

    @property
    def details(self) -> classes.ExporterClass:
        """The class-table entry: backing, caching, expected CPU mmap cost, kernel quirks."""
        return _lookup(self.exporter)


def _libc_fstatfs_type(fd: int) -> int:
    import ctypes  # only on the first check and on errors: keeps `import dmabuf_inspect` light

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit ABIs
    if libc.fstatfs(fd, buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"fstatfs(fd {fd}): {os.strerror(code)}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF  # f_type leads the struct


def _describe(fd: int, st: os.stat_result) -> str:
    mode = st.st_mode
    try:
        target = _LIVE_PROC.readlink(f"self/fd/{fd}")
    except OSError:
        target = ""
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode) and target.startswith("/memfd:"):
        return f"a memfd ({escape(target)})"
    if stat.S_ISREG(mode):
        return f"a regular file ({escape(target)})" if target else "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"a device ({escape(target)})" if target else "a device"
    return escape(target) if target else "not a dma-buf"


def _not_open(fd: int, exc: OSError | None = None) -> OSError:
    code = exc.errno if exc is not None and exc.errno else errno.EBADF
    return OSError(code, f"fd {fd} is not an open file descriptor")


def _check_dmabuf_slow(fd: int, st: os.stat_result) -> None:
    global _dmabuf_dev
    try:
        magic = _libc_fstatfs_type(fd)
    except OSError as exc:
        raise _not_open(fd, exc) from None
    if magic == DMA_BUF_MAGIC:
        _dmabuf_dev = st.st_dev
        return
    raise NotADmabufError(f"fd {fd} is not a dma-buf: it is {_describe(fd, st)}")


def _lookup(exp_name: str, dev: Tree = _LIVE_DEV) -> classes.ExporterClass:
    """The table entry; a name the table lacks is a heap when DEV/dma_heap/NAME exists."""
    entry = classes.lookup(exp_name)
    if entry is not classes.UNKNOWN_EXPORTER or "/" in exp_name or exp_name in ("", ".", ".."):
        return entry
    if dev.lexists(f"dma_heap/{exp_name}"):
        return classes.GENERIC_HEAP
    return entry


def _line_value(data: bytes, key: bytes) -> bytes | None:
    at = data.find(key)
    if at < 0:
        return None
    at += len(key)
    end = data.find(b"\n", at)
    return data[at:] if end < 0 else data[at:end]


def parse_exporter_info(data: bytes, inode: int | None = None) -> ExporterInfo:
    """The fdinfo text of a dma-buf fd, parsed; `inode` overrides its `ino:` line (absent before 5.14)."""
    exp_name = _line_value(data, _EXP_NAME)
    size = _line_value(data, _SIZE)
    if exp_name is None or size is None:
        raise DmabufInspectError("the fdinfo has no exp_name or size line (a kernel without dma_buf_show_fdinfo)")
    name: str | None = None
    at = data.find(_NAME)
    if at >= 0:
        # dma_buf_show_fdinfo() prints the name last and does not escape it.
        name = data[at + len(_NAME) :].removesuffix(b"\n").decode("utf-8", "surrogateescape")
    if inode is None:
        ino = _line_value(data, _INO)
        inode = int(ino) if ino is not None else None
    exp = exp_name.decode("utf-8", "surrogateescape")
    try:
        size_bytes = int(size)
    except ValueError:
        raise DmabufInspectError(f"the fdinfo size is not a number: {escape(size.decode('latin-1'))}") from None
    return ExporterInfo(exp, _lookup(exp).exporter_class, inode, size_bytes, name)


def _classify_miss(fd: int, data: bytes) -> ExporterInfo:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise _not_open(fd, exc) from None
    if st.st_dev != _dmabuf_dev:
        _check_dmabuf_slow(fd, st)  # raises NotADmabufError for a pipe, memfd, file, ...
    try:
        # dma_buf_getfile() makes st_ino the inode that fdinfo (since 5.14) and maps print.
        info = parse_exporter_info(data, st.st_ino)
    except DmabufInspectError as exc:
        raise DmabufInspectError(f"fd {fd}: {exc}") from None
    if _INO not in data:  # before 5.14 the text does not tell buffers apart: no memo
        return info
    if len(_memo) >= _CACHE_MAX:
        _memo.clear()
    _memo[fd] = (data, info)
    return info


def classify_fd(fd: int) -> ExporterInfo:
    """Classify a dma-buf fd of this process.

    Raises NotADmabufError (a ValueError) for a pipe, memfd, file or any other non-dma-buf fd,
    and OSError(EBADF) for an fd that is not open.
    """
    path = _paths.get(fd)
    if path is None:
        path = _fdinfo_path(fd)
    try:
        data = read_live_once(path, 4096)
    except FileNotFoundError:
        raise _missing_fdinfo(fd) from None
    # The same text from the same fd was checked before: only dma_buf_show_fdinfo() prints exp_name
    # and count lines, and with ino:, size, exp_name and name the text fixes the whole answer.
    seen = _memo.get(fd)
    if seen is not None and seen[0] == data:
        return seen[1]
    return _classify_miss(fd, data)


def _fdinfo_path(fd: int) -> str:
    path = f"/proc/self/fdinfo/{fd}"
    if type(fd) is int and fd >= 0 and len(_paths) < _CACHE_MAX:
        _paths[fd] = path
    return path


def _missing_fdinfo(fd: int) -> Exception:
    try:
        os.fstat(fd)
    except OSError as exc:
        return _not_open(fd, exc)
    return DmabufInspectError(f"fd {fd} is open but /proc/self/fdinfo/{fd} is missing: is /proc mounted?")


def is_udmabuf(fd: int) -> bool:
    """True for a udmabuf, False for any other dma-buf or a non-dma-buf fd; OSError if not open."""
    try:
        return classify_fd(fd).exporter == "udmabuf"
    except NotADmabufError:
        return False


def _refusal(where: str, exc: OSError, denied: str, gone: str) -> DmabufInspectError:
    """The one line for a read that failed (reader.gap_kind): the same words a scan records."""
    kind = gap_kind(exc)
    if kind == OUTSIDE:
        return DmabufInspectError(f"{where}: {escape(str(exc))}")
    if kind == DENIED:
        return DmabufInspectError(f"{where}: {denied}")
    if kind == GONE:
        return DmabufInspectError(f"{where}: {gone}")
    return DmabufInspectError(f"{where}: {os.strerror(exc.errno or 0) or exc}")


def classify(pid: int, fd: int, proc_root: str = "/proc", dev_root: str = "/dev") -> ExporterInfo:
    """Classify fd `fd` of process `pid` from `proc_root`/PID/fd and fdinfo (needs ptrace access).

    A captured tree (`proc_root` not the real /proc) is read through the same reader as a scan:
    a link that leads outside it is refused (DmabufInspectError), never followed.
    """
    where = f"pid {pid} fd {fd}"
    roots = Roots(proc_root=proc_root, dev_root=dev_root)
    proc = roots.proc
    link = f"{pid}/fd/{fd}"
    try:
        target = proc.readlink(link)
    except OSError as exc:
        gone = "no such fd" if proc.lexists(str(pid)) else "no such process"
        raise _refusal(where, exc, "permission denied (another user's fds need root)", gone) from None
    # the link reads /dmabuf:NAME since 5.3, anon_inode:dmabuf before
    if not (target.startswith("/dmabuf:") or target == "anon_inode:dmabuf"):
        raise NotADmabufError(f"{where} is not a dma-buf: it is {escape(target)}")
    if roots.live and _dmabuf_dev is not None:  # a file really named /dmabuf:x is not on that filesystem
        try:
            if proc.stat(link).st_dev != _dmabuf_dev:
                raise NotADmabufError(f"{where} is not a dma-buf: it is a file named {escape(target)}")
        except OSError:
            pass
    from dmabuf_inspect.kernel.fdinfo import FdinfoParseError, parse_fdinfo

    try:
        data = proc.read_once(f"{pid}/fdinfo/{fd}", 8192)
    except OSError as exc:
        raise _refusal(where, exc, "permission denied reading its fdinfo", "the fd was closed") from None
    try:
        fdinfo = parse_fdinfo(data)
    except FdinfoParseError as exc:
        raise DmabufInspectError(f"{where}: {exc}") from None
    inode = fdinfo.inode
    if inode is None and roots.live:  # fdinfo has ino: only since 5.14; the live link's target has it
        try:
            inode = proc.stat(link).st_ino
        except OSError:
            inode = None
    cls = _lookup(fdinfo.exp_name, roots.dev)
    return ExporterInfo(fdinfo.exp_name, cls.exporter_class, inode, fdinfo.size_bytes, fdinfo.name)
