"""BPF as a source: our iterators loaded for the running kernel, a pinned one read, pin and unpin.

    with BpfSource() as bpf:              # loads nothing yet
        bpf.buffers()  -> [BpfBuffer]     # iter/dmabuf (6.16+): every buffer, held or not
        bpf.holders()  -> Holders         # iter/task_file + iter/task_vma (5.8+, 5.12+): every
                                          # process's dma-buf fds and mappings, no /proc walk
    read_pinned(path) -> AndroidRead      # any user who may read the pin
    pin(path) / unpin(path)               # root: our iterator in Android's format on bpffs

Each of buffers() and holders() loads its programs on first use and keeps them until close(),
so a live view pays the verifier once. What can't be had raises BpfUnavailable, whose `.reason`
is one line for `sources`: "kernel has no dma-buf BPF iterator (6.16+)", "needs CAP_BPF and
CAP_PERFMON (root)", "bpffs not mounted ...", or the verifier's line.
"""

from __future__ import annotations

import errno
import os
import re

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.kernel.bpf import programs, syscall
from dmabuf_inspect.kernel.bpf.btf import VMLINUX, Btf, BtfError
from dmabuf_inspect.kernel.bpf.programs import Layout
from dmabuf_inspect.kernel.bpf.records import (
    AndroidRead,
    BpfBuffer,
    BpfListing,
    BpfParseError,
    TaskInfo,
    parse_android,
    parse_buffer_listing,
    parse_buffer_records,
    parse_buffer_table,
    parse_fd_records,
    parse_task_records,
    parse_vma_records,
)
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT, BpfError, VerifierError
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.model import BufInfoTable, MapEntry
from dmabuf_inspect.records import NamedTuple

# Where Android's bpfloader pins its dmabufIter.c, and where libdmabufinfo and dmabuf_dump read
# it: one path for every reader.
DEFAULT_PIN = "/sys/fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf"
BPFFS = "/sys/fs/bpf"
NO_DMABUF_ITER = "kernel has no dma-buf BPF iterator (6.16+)"
NO_TASK_FILE = "kernel has no task_file BPF iterator (5.8+)"
NO_TASK_VMA = "kernel has no task_vma BPF iterator (5.12+)"
NO_TASK_ITER = "kernel has no task BPF iterator (5.8+), or its BTF lacks what a TASK record reads"
NOT_INITIAL_TIMENS = "in a time namespace of its own: its /proc shifts start times"
NO_BTF = f"kernel has no BTF ({VMLINUX}, CONFIG_DEBUG_INFO_BTF)"
LAYOUT_SCHEMA = "dmabuf-inspect-bpf-layout/4"
BTF_LIMIT = 1 << 28  # read whole: vmlinux BTF is 5-6 MB
ANDROID_RECORD_MAX = 2 * 21 + 32 + 64  # two numbers, a name, an exporter, with their newlines

NOT_INITIAL_PIDNS = "in a pid namespace of its own: the task iterators give the kernel's pids, not this /proc's"
PROC_PID_INIT_INO = 0xEFFFFFFC  # include/linux/proc_ns.h: the initial pid namespace's inode
PROC_TIME_INIT_INO = 0xEFFFFFFA  # the initial time namespace's

# capability bits (include/uapi/linux/capability.h)
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


class BpfUnavailable(DmabufInspectError):
    """BPF can't give what was asked; `.reason` says why in one line, without "unavailable: "."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def live_file(path: str) -> tuple[Tree, str]:
    """The reader's Tree of `path`'s directory (live), and its name there: kernel files outside the
    scan's roots (BTF, /proc/self, a pin) are read through kernel/reader.py too."""
    head, name = os.path.split(os.path.abspath(path))
    return Tree(head, live=True), name


def read_live(path: str, limit: int = 1 << 24) -> bytes:
    """A live kernel file's bytes, through the reader."""
    tree, name = live_file(path)
    return tree.read(name, limit)


class Holders(NamedTuple):
    """Every process's dma-buf fds and mappings, as the task iterators saw them."""

    fds: dict[int, dict[int, tuple[int, ...]]]  # pid -> inode -> fds (ascending)
    maps: dict[int, list[MapEntry]]  # pid -> mappings, in address order
    tasks: dict[int, TaskInfo] | None = None  # pid -> who it is (iter/task); None: read /proc


def reason_of(exc: BaseException) -> str:
    """The one line for `sources` of any error this module raises."""
    if isinstance(exc, BpfUnavailable):
        return exc.reason
    if isinstance(exc, VerifierError):
        return str(exc)
    if isinstance(exc, BpfError) and exc.errno in (errno.EPERM, errno.EACCES):
        return NEEDS_ROOT
    return str(exc)


def capable(status_path: str = "/proc/self/status") -> bool:
    """CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, in this process's effective set: what loading a
    tracing program takes (kernel/bpf/syscall.c, 5.8+)."""
    try:
        m = re.search(rb"^CapEff:\s*([0-9a-fA-F]+)$", read_live(status_path, 1 << 16), re.M)
    except OSError:
        return False
    if m is None:
        return False
    caps = int(m.group(1), 16)
    wanted = (1 << CAP_BPF) | (1 << CAP_PERFMON)
    return caps & wanted == wanted or bool(caps & (1 << CAP_SYS_ADMIN))


def _in_initial_namespace(kind: str, inode: int, *, absent: bool = False) -> bool:
    """Whether /proc/self/ns/KIND is the initial namespace (its inode, proc_ns.h); `absent`: the
    answer where the kernel has no such namespace."""
    try:
        return Tree("/proc", live=True).readlink(f"self/ns/{kind}") == f"{kind}:[{inode}]"
    except FileNotFoundError:
        return absent
    except OSError:
        return False


def in_initial_pid_namespace() -> bool:
    """Whether this process sees the kernel's own pids (the programs read task->tgid)."""
    return _in_initial_namespace("pid", PROC_PID_INIT_INO)


def in_initial_time_namespace() -> bool:
    """Whether this /proc gives start times as the kernel keeps them (a time namespace, 5.6+,
    shifts them by its boot-time offset; before 5.6 there is none)."""
    return _in_initial_namespace("time", PROC_TIME_INIT_INO, absent=True)


# --- the layout, from BTF, cached by the BTF's checksum ---------------------------------------------

_layouts: dict[str, Layout] = {}
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _layout_key(btf_path: str) -> str | None:
    """The running kernel's BTF is the same all through a boot: its size and the boot's id name
    it, without reading its 5 MB. None for another path (a file may change), or no boot id."""
    if btf_path != VMLINUX:
        return None
    try:
        boot = read_live(BOOT_ID, 64).decode("ascii", "replace").strip()
        tree, name = live_file(btf_path)
        size = tree.stat(name).st_size
    except OSError:
        return None
    return f"{boot}-{size}" if re.fullmatch(r"[0-9a-f-]{36}", boot) else None


def load_layout(btf_path: str = VMLINUX, cache_dir: str | None = None) -> Layout:
    """The Layout of the kernel whose BTF is at `btf_path`. Parsing BTF takes 40-100 ms (5 MB,
    130 000 types; seconds under TCG): the result is kept for the process, and in `cache_dir`
    when one is given, as bpf-layout-BOOTID-SIZE.txt for the running kernel (found again without
    reading BTF), else under the BTF's size and CRC-32."""
    key = _layout_key(btf_path)
    data = None
    if key is None:
        import zlib  # only for a BTF file other than the running kernel's

        data = _read_btf(btf_path)
        key = f"{len(data)}-{zlib.crc32(data):08x}"
    if key in _layouts:
        return _layouts[key]
    path = os.path.join(cache_dir, f"bpf-layout-{key}.txt") if cache_dir else None
    layout = _read_cached(path) if path else None
    if layout is None:
        try:
            layout = Layout.from_btf(Btf(_read_btf(btf_path) if data is None else data, btf_path))
        except BtfError as exc:
            raise BpfUnavailable(str(exc)) from None
        if path is not None:
            _write_cache(path, layout_text(layout))
    _layouts[key] = layout
    return layout


def _read_btf(btf_path: str) -> bytes:
    try:
        return read_live(btf_path, BTF_LIMIT)
    except FileNotFoundError:
        raise BpfUnavailable(NO_BTF if btf_path == VMLINUX else f"no {btf_path}") from None
    except OSError as exc:
        raise BpfUnavailable(f"{btf_path}: {exc.strerror}") from None


# The cache file: the schema's line, then one `field value` line per Layout field (a number,
# None, True or False). Plain text: reading JSON would import the json package, which costs a
# whole-process `dump` more under TCG than the rest of the cache.
_LAYOUT_VALUES = {"None": None, "True": True, "False": False}


def layout_text(layout: Layout) -> str:
    return "".join([f"{LAYOUT_SCHEMA}\n", *(f"{k} {v!r}\n" for k, v in layout._asdict().items())])


def parse_layout_text(text: str) -> Layout | None:
    """The Layout that layout_text() wrote; None for anything else (another schema, a field
    missing, unknown or repeated, a value that is no number, None, True or False)."""
    head, _, body = text.partition("\n")
    if head != LAYOUT_SCHEMA:
        return None
    fields: dict[str, int | bool | None] = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name in fields or name not in Layout._fields:
            return None
        if value in _LAYOUT_VALUES:
            fields[name] = _LAYOUT_VALUES[value]
        elif value.isdigit() or (value[:1] == "-" and value[1:].isdigit()):
            fields[name] = int(value)
        else:
            return None
    if fields.keys() != set(Layout._fields):
        return None
    return Layout(**fields)  # type: ignore[arg-type]


def _read_cached(path: str) -> Layout | None:
    try:
        with open(path, "rb") as f:
            return parse_layout_text(f.read(1 << 16).decode("ascii"))
    except (OSError, ValueError):
        return None


def _write_cache(path: str, text: str) -> None:
    """Atomically, and silently not at all where the directory can't be written."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"  # one writer per process; os.replace() makes it whole
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
    except OSError:
        return


def _unlink_quietly(path: str) -> None:
    """os.unlink() where the path may be gone (no contextlib on the scan path)."""
    try:
        os.unlink(path)
    except OSError:
        return


# --- a loaded iterator --------------------------------------------------------------------------


class Iterator:
    """One program, loaded and attached as an iterator link; each read() is a fresh walk."""

    def __init__(self, name: str, insns: bytes, attach_btf_id: int) -> None:
        self.name = name
        self.prog_fd = syscall.prog_load(insns, attach_btf_id, name=name)
        try:
            self.link_fd = syscall.link_create(self.prog_fd, name)
        except BaseException:
            os.close(self.prog_fd)
            raise

    def read(self) -> bytes:
        fd = syscall.iter_create(self.link_fd, self.name)
        try:
            return read_iterator(fd)[0]
        finally:
            os.close(fd)

    def pin(self, path: str) -> None:
        syscall.obj_pin(self.link_fd, path)

    def close(self) -> None:
        for fd in (self.link_fd, self.prog_fd):
            try:
                os.close(fd)
            except OSError:
                continue
        self.link_fd = self.prog_fd = -1


def _seq_batch_bytes() -> int:
    """What one read() of a BPF iterator returns at most: its seq_file buffer, PAGE_SIZE << 3
    (kernel/bpf/bpf_iter.c)."""
    return os.sysconf("SC_PAGE_SIZE") << 3


def _release(uname_release: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", uname_release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def read_iterator(fd: int) -> tuple[bytes, int]:
    """All an iterator fd gives, and the length of its first read(). Each read() asks for what one
    can give (its seq_file buffer): os.read() allocates what it asks for, and 1 MiB a call was an
    mmap() and a shrinking mremap() per 32 KiB of a 1.4 MB walk."""
    size = _seq_batch_bytes()
    first = os.read(fd, size)
    parts = [first]
    while parts[-1]:
        parts.append(os.read(fd, size))
    return b"".join(parts), len(first)


def check_dmabuf_complete(first_read: int, largest_record: int, release: str | None = None) -> None:
    """The dma-buf iterator of 6.16-6.18 ends after its first read() (dmabuf_iter_seq_start()
    returns NULL for any later position; fixed in 6.19): output that filled that read may be
    cut, and is refused rather than taken for every buffer."""
    if (6, 16) <= _release(release) < (6, 19) and first_read > _seq_batch_bytes() - largest_record:
        raise BpfUnavailable(
            f"the dma-buf iterator of kernels 6.16-6.18 stops after {_seq_batch_bytes() >> 10} KiB "
            "(fixed in 6.19): more buffers than it can list"
        )


class BpfSource:
    """Our iterators for the running kernel, loaded when first asked for."""

    def __init__(self, btf_path: str = VMLINUX, cache_dir: str | None = None) -> None:
        self.btf_path = btf_path
        self.cache_dir = cache_dir
        self._iters: dict[str, Iterator] = {}
        self._failed: dict[str, str] = {}  # the reason, raised anew each time (see _iterator)

    def layout(self) -> Layout:
        if not capable():
            raise BpfUnavailable(NEEDS_ROOT)  # before 100 ms of BTF that could not be used
        return load_layout(self.btf_path, self.cache_dir)

    def _iterator(self, name: str) -> Iterator:
        if name in self._iters:
            return self._iters[name]
        if name in self._failed:
            # A new exception each time: re-raising a stored one grows its __traceback__ by every
            # scan's frames, and keeps each scan's data alive with them.
            raise BpfUnavailable(self._failed[name])
        try:
            self._iters[name] = self._load(name)
        except BpfUnavailable as exc:
            self._failed[name] = exc.reason
            raise
        except BpfError as exc:
            self._failed[name] = reason_of(exc)
            raise BpfUnavailable(self._failed[name]) from None
        return self._iters[name]

    def _load(self, name: str) -> Iterator:
        layout = self.layout()
        if name == "dmabuf":
            if layout.dmabuf_iter_id is None:
                raise BpfUnavailable(NO_DMABUF_ITER)
            return Iterator(name, programs.dmabuf_records(layout), layout.dmabuf_iter_id)
        if name == "task_file":
            if layout.task_file_iter_id is None:
                raise BpfUnavailable(NO_TASK_FILE)
            return Iterator(name, programs.task_file_records(layout), layout.task_file_iter_id)
        if name == "task":
            if layout.task_iter_id is None or not layout.identifies_tasks:
                raise BpfUnavailable(NO_TASK_ITER)
            return Iterator(name, programs.task_records(layout), layout.task_iter_id)
        if layout.task_vma_iter_id is None:
            raise BpfUnavailable(NO_TASK_VMA)
        return Iterator(name, programs.task_vma_records(layout), layout.task_vma_iter_id)

    def buffers(self) -> list[BpfBuffer]:
        """Every dma-buf, from the kernel's list of them (iter/dmabuf). Raises only BpfUnavailable."""
        data = self._read_dmabuf()
        try:
            return parse_buffer_records(data)
        except BpfParseError as exc:
            raise BpfUnavailable(reason_of(exc)) from None

    def buffer_table(self) -> BufInfoTable:
        """buffers() in debugfs bufinfo's columns, fences empty: what stands in for bufinfo."""
        data = self._read_dmabuf()
        try:
            return parse_buffer_table(data)
        except BpfParseError as exc:
            raise BpfUnavailable(reason_of(exc)) from None

    def buffer_listing(self) -> BpfListing:
        """buffer_table(), and how many buffers bufinfo would say more of: with fences (each
        counted as fenced where this kernel's BTF does not show the reservation list), or with
        more attached devices than are named. Raises only BpfUnavailable."""
        data = self._read_dmabuf()
        try:
            listing = parse_buffer_listing(data)
        except BpfParseError as exc:
            raise BpfUnavailable(reason_of(exc)) from None
        if not self.layout().counts_fences:
            listing = listing._replace(fenced=listing.table.total_objects or 0)
        return listing

    def _read_dmabuf(self) -> bytes:
        it = self._iterator("dmabuf")
        try:
            fd = syscall.iter_create(it.link_fd, it.name)
            try:
                data, first = read_iterator(fd)
            finally:
                os.close(fd)
        except BpfError as exc:
            raise BpfUnavailable(reason_of(exc)) from None
        except OSError as exc:
            raise BpfUnavailable(f"reading the dmabuf iterator: {exc.strerror}") from None
        check_dmabuf_complete(first, programs.BUFFER.size + 2 * programs.DEVICES.size)
        return data

    def holders(self, *, include_maps: bool = True) -> Holders:
        """Every process's dma-buf fds (iter/task_file) and mappings (iter/task_vma). Raises only
        BpfUnavailable."""
        if not in_initial_pid_namespace():
            raise BpfUnavailable(NOT_INITIAL_PIDNS)
        files = self._iterator("task_file")
        vmas = self._iterator("task_vma") if include_maps else None
        try:
            fds = parse_fd_records(files.read())
            maps = parse_vma_records(vmas.read()) if vmas is not None else {}
        except (BpfError, BpfParseError) as exc:
            raise BpfUnavailable(reason_of(exc)) from None
        except OSError as exc:
            raise BpfUnavailable(f"reading the task iterators: {exc.strerror}") from None
        try:
            tasks = self.tasks()
        except BpfUnavailable:
            tasks = None  # the scan reads each process's /proc/PID/status and stat instead
        return Holders(fds, maps, tasks)

    def tasks(self) -> dict[int, TaskInfo]:
        """Who every process is (iter/task): pid -> ppid, real uid, start time, comm, as
        /proc/PID/status and stat give them. Raises only BpfUnavailable."""
        if not in_initial_time_namespace():
            raise BpfUnavailable(NOT_INITIAL_TIMENS)
        it = self._iterator("task")
        try:
            return parse_task_records(it.read())
        except (BpfError, BpfParseError) as exc:
            raise BpfUnavailable(reason_of(exc)) from None
        except OSError as exc:
            raise BpfUnavailable(f"reading the task iterator: {exc.strerror}") from None

    def close(self) -> None:
        for it in self._iters.values():
            it.close()
        self._iters.clear()

    def __enter__(self) -> BpfSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- pinned iterators -----------------------------------------------------------------------------


def read_pinned(path: str = DEFAULT_PIN) -> AndroidRead:
    """A pinned dma-buf iterator in Android's format (ours or Android's), or a file holding its
    output. Needs only read permission on `path` (and search on its directories)."""
    tree, name = live_file(path)
    try:
        fd = tree.open_read(name)
    except FileNotFoundError:
        raise BpfUnavailable(f"no pinned iterator at {path} (root pins one: dmabuf-inspect bpf pin)") from None
    except PermissionError:
        raise BpfUnavailable(
            f"{path}: permission denied (its admin grants read: chmod a+r on it, a+x on its directories)"
        ) from None
    except OSError as exc:
        raise BpfUnavailable(f"{path}: {exc.strerror}") from None
    try:
        data, first = read_iterator(fd)
        pinned = fs_magic(path) == syscall.BPF_FS_MAGIC  # not a capture of one
    except OSError as exc:
        raise BpfUnavailable(f"reading {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if pinned:
        check_dmabuf_complete(first, ANDROID_RECORD_MAX)
    return parse_android(data)


def fs_magic(path: str) -> int:
    """statfs(path).f_type; OSError when it fails."""
    import ctypes  # only for a pin: a scan with our own iterators never needs it

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.statfs(os.fsencode(path), buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _require_bpffs(path: str) -> None:
    where = _existing_ancestor(path)
    try:
        magic = fs_magic(where)
    except OSError as exc:
        raise BpfUnavailable(f"{where}: {exc.strerror}") from None
    if magic != syscall.BPF_FS_MAGIC:
        raise BpfUnavailable(f"bpffs not mounted at {where} (mount -t bpf bpf {BPFFS})")


def pin(path: str = DEFAULT_PIN, *, mode: int = 0o444, btf_path: str = VMLINUX) -> None:
    """Pin our dma-buf iterator, in Android's format, at `path` on bpffs, readable as `mode`
    says. Its directories are made 0755 where missing."""
    if not capable():
        raise BpfUnavailable(NEEDS_ROOT)
    _require_bpffs(path)
    if os.path.lexists(path):
        raise BpfError(f"{path} exists (dmabuf-inspect bpf unpin {path} first)", errno.EEXIST)
    layout = load_layout(btf_path)
    if layout.dmabuf_iter_id is None:
        raise BpfUnavailable(NO_DMABUF_ITER)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    map_fd = syscall.array_map_frozen(programs.ANDROID_FORMAT, "dmabuf_fmt")
    try:
        it = Iterator("dmabuf_android", programs.dmabuf_android(layout, map_fd), layout.dmabuf_iter_id)
    finally:
        os.close(map_fd)  # the program holds the map
    try:
        it.pin(path)
        os.chmod(path, mode)
    finally:
        it.close()  # the pin holds the link


def unpin(path: str = DEFAULT_PIN) -> None:
    """Remove a pin (only on bpffs), and its directory when that is left empty."""
    try:
        magic = fs_magic(path)
    except FileNotFoundError:
        raise BpfError(f"nothing pinned at {path}", errno.ENOENT) from None
    except OSError as exc:
        raise BpfError(f"{path}: {exc.strerror}", exc.errno) from None
    if magic != syscall.BPF_FS_MAGIC:
        raise BpfError(f"{path} is not on bpffs: not a pin, left alone", errno.EINVAL)
    try:
        os.unlink(path)
    except OSError as exc:
        raise syscall_error_of(f"unpinning {path}", exc) from None
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.listdir(parent) and fs_magic(os.path.dirname(parent)) == syscall.BPF_FS_MAGIC:
            os.rmdir(parent)
    except OSError:
        return


def syscall_error_of(step: str, exc: OSError) -> BpfError:
    code = exc.errno or 0
    cause = NEEDS_ROOT if code in (errno.EPERM, errno.EACCES) else os.strerror(code)
    return BpfError(f"{step}: {cause}", code)
