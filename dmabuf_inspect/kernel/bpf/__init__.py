"""BPF as a source: every buffer without debugfs, every holder without walking /proc (issue 14).

No compiler and no library at run time: the programs are assembled here (asm.py) with offsets and
type ids from the kernel's BTF (btf.py, programs.py) and loaded with bpf(2) (syscall.py: through
the C extension, or ctypes where it is not built); what they print is parsed by pure functions
(records.py). The entry points:

    with BpfSource(cache_dir=...) as bpf:     source.py
        bpf.buffers()   -> list[BpfBuffer]    iter/dmabuf, 6.16+: every buffer, held or not
        bpf.buffer_table() -> BufInfoTable    the same in bufinfo's columns (fences empty): stands in for it
        bpf.buffer_listing() -> BpfListing    the table, and how many buffers bufinfo would say more of
        bpf.holders()   -> Holders            iter/task_file + iter/task_vma: fds and mappings by pid
    read_pinned(path)   -> AndroidRead        a pinned iterator (ours or Android's), any user who may read it
    pin(path) / unpin(path)                   root: `dmabuf-inspect bpf pin`
    BpfUnavailable(reason)                    what can't be had, one line for `sources`
"""

from __future__ import annotations

from dmabuf_inspect.kernel.bpf.records import (
    AndroidRead,
    BpfBuffer,
    BpfListing,
    BpfParseError,
    bufinfo_table,
    parse_android,
)
from dmabuf_inspect.kernel.bpf.source import (
    DEFAULT_PIN,
    NO_DMABUF_ITER,
    BpfSource,
    BpfUnavailable,
    Holders,
    pin,
    read_pinned,
    reason_of,
    unpin,
)
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT, BpfError, VerifierError

__all__ = [
    "DEFAULT_PIN",
    "NEEDS_ROOT",
    "NO_DMABUF_ITER",
    "AndroidRead",
    "BpfBuffer",
    "BpfError",
    "BpfListing",
    "BpfParseError",
    "BpfSource",
    "BpfUnavailable",
    "Holders",
    "VerifierError",
    "bufinfo_table",
    "parse_android",
    "pin",
    "read_pinned",
    "reason_of",
    "unpin",
]
