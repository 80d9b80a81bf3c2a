"""bpf(2): the commands an iterator needs, and what their errors mean.

    prog_load(insns, attach_btf_id)  BPF_PROG_LOAD, BPF_PROG_TYPE_TRACING / BPF_TRACE_ITER
    link_create(prog_fd)             BPF_LINK_CREATE: the iterator link (pinnable)
    iter_create(link_fd)             BPF_ITER_CREATE: one walk, read like a file
    obj_pin(fd, path)                BPF_OBJ_PIN: a link at a path on bpffs
    array_map_frozen(value)          BPF_MAP_CREATE + UPDATE_ELEM + FREEZE: a read-only string for
                                     bpf_seq_printf (ARG_PTR_TO_CONST_STR since 5.13)

`union bpf_attr` is built as bytes at the offsets of include/uapi/linux/bpf.h (tests pin them).
The call itself is kernel/_fdwalk.c's bpf() where the C extension is built, else ctypes' syscall().
Every error is a BpfError carrying the errno and one line: the step, and what it most likely
means. A refused program is a VerifierError with the verifier's own line and its whole log.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.kernel.lazyre import lazy

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

# enum bpf_cmd
MAP_CREATE, MAP_UPDATE_ELEM, PROG_LOAD, OBJ_PIN, OBJ_GET = 0, 2, 5, 6, 7
MAP_FREEZE, LINK_CREATE, ITER_CREATE = 22, 28, 33
PROG_TYPE_TRACING = 26  # enum bpf_prog_type
TRACE_ITER = 28  # enum bpf_attach_type
MAP_TYPE_ARRAY = 2
F_RDONLY_PROG = 1 << 7
# enum bpf_func_id
FUNC_PROBE_READ_KERNEL, FUNC_PROBE_READ_KERNEL_STR, FUNC_SEQ_PRINTF, FUNC_SEQ_WRITE = 113, 115, 126, 127
BPF_FS_MAGIC = 0xCAFE4A11

# __NR_bpf by machine (arch/*/include/uapi/asm/unistd*.h, or the generic table at 280)
SYS_BPF = {
    "x86_64": 321,
    "i386": 357,
    "i686": 357,
    "aarch64": 280,
    "arm64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "armv7l": 386,
    "armv8l": 386,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
}
ATTR_BYTES = 144  # sizeof(union bpf_attr) in 6.12-7.3; a kernel checks that what it does not know is 0
LOG_BYTES = 1 << 20
# What a refusal returns: EACCES for a forbidden access, EINVAL for most else, E2BIG and ENOSPC
# for size; EACCES is also a missing privilege, told apart by an empty log.
_VERIFIER_ERRNOS = frozenset((errno.EINVAL, errno.EACCES, errno.E2BIG, errno.ENOSPC))

# (offset in bpf_attr, buffer): a pointer field, and what it points to while the call runs. The
# kernel writes only into a buffer it is told to (the verifier's log: a bytearray).
Pointers = tuple[tuple[int, bytes | bytearray], ...]
_c_bpf: Callable[[int, bytearray, Pointers], int] | None
try:
    from dmabuf_inspect.kernel import _fdwalk

    _c_bpf = _fdwalk.bpf
except ImportError:  # built only where a C compiler was at install time
    _c_bpf = None
_call = _c_bpf  # tests set it to _ctypes_bpf


class BpfError(DmabufInspectError, OSError):
    """A bpf(2) step failed: `.errno`, and one line saying which step and the likely cause."""

    def __init__(self, message: str, code: int | None = None) -> None:
        OSError.__init__(self, code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VerifierError(BpfError):
    """The verifier refused a program: `.reason` is its line that says why, `.log` all of it."""

    def __init__(self, program: str, reason: str, log: str, code: int | None) -> None:
        super().__init__(f"the verifier refused {program}: {reason}", code)
        self.reason = reason
        self.log = log


NEEDS_ROOT = "needs CAP_BPF and CAP_PERFMON (root)"
_CAUSES = {
    errno.EPERM: NEEDS_ROOT,
    errno.EACCES: NEEDS_ROOT,
    errno.ENOSYS: "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)",
    errno.ENOMEM: "out of memory, or RLIMIT_MEMLOCK too low (before 5.11)",
}


def _cause(step: str, code: int) -> str:
    return f"{step}: {_CAUSES.get(code) or os.strerror(code)}"


def sys_bpf_number(machine: str | None = None) -> int | None:
    return SYS_BPF.get(machine or os.uname().machine)


def bpf(cmd: int, attr: bytearray, step: str, pointers: Pointers = ()) -> int:
    """bpf(cmd, attr), with each of `pointers` written into attr first: the result, or BpfError for `step`."""
    try:
        return (_ctypes_bpf if _call is None else _call)(cmd, attr, pointers)
    except OSError as exc:
        code = exc.errno or errno.EINVAL
        if code == errno.ENOSYS and sys_bpf_number() is None:
            raise BpfError(f"{step}: bpf(2) is not known on {os.uname().machine}", code) from None
        raise BpfError(_cause(step, code), code) from None


def _ctypes_bpf(cmd: int, attr: bytearray, pointers: Pointers) -> int:
    """_fdwalk.bpf() through ctypes: the same call, where the C extension is not built."""
    import ctypes

    number = sys_bpf_number()
    if number is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    held = []
    for offset, buf in pointers:
        c_buf = (
            (ctypes.c_char * len(buf)).from_buffer(buf)
            if isinstance(buf, bytearray)
            else ctypes.create_string_buffer(bytes(buf), len(buf))
        )
        held.append(c_buf)
        struct.pack_into("<Q", attr, offset, ctypes.addressof(c_buf))
    if not _libc:
        _libc.append(ctypes.CDLL(None, use_errno=True))
        _libc[0].syscall.restype = ctypes.c_long
    libc = _libc[0]
    c_attr = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), c_attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(ret)  # `held` kept the buffers alive until here


_libc: list[Any] = []  # ctypes.CDLL(None), opened on the first call


def _attr(*fields: tuple[int, str, int]) -> bytearray:
    """A zeroed bpf_attr with (offset, struct format, value) fields set."""
    attr = bytearray(ATTR_BYTES)
    for offset, fmt, value in fields:
        struct.pack_into("<" + fmt, attr, offset, value)
    return attr


_TRACE_LINE = lazy(
    r"(\d+: |; |from \d+ to \d+|processed \d+ insns|verification time|stack depth|func#\d+|"
    r"mark_precise|last_idx|regs=|parent |\d+: R\d|R\d+[_=]|Validating |Func#|caller:|callee:|"
    r"=+$|\s*$|live regs|old state|cur state|The sequence of \d+ jumps is too complex)"
)


def verifier_reason(log: str) -> str:
    """The verifier's line that says why: the last line of the log that is neither an
    instruction, a register state, nor the statistics it prints at the end."""
    for line in reversed(log.splitlines()):
        if not _TRACE_LINE.match(line):
            return line.strip()
    return "no reason in its log"


def prog_load(
    insns: bytes, attach_btf_id: int, *, name: str, license: str = "Dual MIT/GPL", with_log: bool = False
) -> int:
    """Load a BPF_TRACE_ITER program; its fd. A refusal is a VerifierError: the program is
    loaded again with the log on (a log costs verifier time: only when it is needed)."""
    log = bytearray(LOG_BYTES if with_log else 0)
    fields = [
        (0, "I", PROG_TYPE_TRACING),
        (4, "I", len(insns) // 8),
        (68, "I", TRACE_ITER),
        (108, "I", attach_btf_id),
    ]
    pointers: Pointers = ((8, insns), (16, license.encode() + b"\0"))
    if with_log:
        fields += [(24, "I", 1), (28, "I", LOG_BYTES)]
        pointers += ((32, log),)
    attr = _attr(*fields)
    attr[48 : 48 + 15] = name.encode()[:15].ljust(15, b"\0")
    try:
        return bpf(PROG_LOAD, attr, f"loading the {name} program", pointers)
    except BpfError as exc:
        if with_log:
            text = bytes(log).split(b"\0", 1)[0].decode("utf-8", "replace")
            if text.strip():
                raise VerifierError(f"the {name} program", verifier_reason(text), text, exc.errno) from None
            raise
        if exc.errno not in _VERIFIER_ERRNOS:
            raise
        try:
            return prog_load(insns, attach_btf_id, name=name, license=license, with_log=True)
        except VerifierError:
            raise
        except BpfError:
            raise exc from None


def link_create(prog_fd: int, name: str) -> int:
    attr = _attr((0, "I", prog_fd), (4, "I", 0), (8, "I", TRACE_ITER))
    return bpf(LINK_CREATE, attr, f"attaching the {name} iterator")


def iter_create(link_fd: int, name: str) -> int:
    return bpf(ITER_CREATE, _attr((0, "I", link_fd)), f"starting the {name} iterator")


def obj_pin(fd: int, path: str) -> None:
    bpf(OBJ_PIN, _attr((8, "I", fd)), f"pinning at {path}", ((0, os.fsencode(path) + b"\0"),))


def array_map_frozen(value: bytes, name: str) -> int:
    """A one-element array map holding `value`, read-only to programs and frozen: where
    bpf_seq_printf takes its format from."""
    attr = _attr((0, "I", MAP_TYPE_ARRAY), (4, "I", 4), (8, "I", len(value)), (12, "I", 1), (16, "I", F_RDONLY_PROG))
    attr[28 : 28 + 15] = name.encode()[:15].ljust(15, b"\0")
    fd = bpf(MAP_CREATE, attr, "creating the format string's map")
    try:
        pointers: Pointers = ((8, struct.pack("<I", 0)), (16, bytes(value)))
        bpf(MAP_UPDATE_ELEM, _attr((0, "I", fd)), "writing the map", pointers)
        bpf(MAP_FREEZE, _attr((0, "I", fd)), "freezing the map")
    except BaseException:
        os.close(fd)
        raise
    return fd
