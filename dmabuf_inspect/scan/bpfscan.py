"""What a scan takes from BPF (issue 14): every buffer, and every holder, without debugfs or a /proc walk.

    listing = read_buffers(roots)              # sources["bpf"]: our iterator, a pinned one, or a capture's copy
    holders, state = read_holders(roots, ...)  # sources["bpf_holders"]: the task iterators (root)

BPF is a source of the running kernel: it applies when the scan's /proc is the live one, whatever
the other roots say (`--debugfs-root /an/empty/dir` stands for a machine without debugfs). Which
iterator gives the buffers, in order:
  1. `--bpf-iter PATH` (Roots.bpf_iter): that pinned iterator, in Android's format;
  2. our own (root, 6.16+), loaded once per process and kept loaded (a live view pays the
     verifier once): the whole listing, file counts and attached devices included;
  3. where ours can't be loaded (not root, an older kernel): the pin at Android's path, if this
     user may read it.
A capture keeps the iterator's output as a file of its tree (CAPTURED_ITER, Android's format),
read back as "ok (captured)". `--no-bpf` (Roots.bpf False) turns every path off.

The programs stay loaded for the life of the process that loaded them; a forked child, or the
same process after it changed its effective uid, loads its own (it may not have the right to).
"""

from __future__ import annotations

import os

from dmabuf_inspect.cachedir import cache_dir
from dmabuf_inspect.kernel.bpf import (
    DEFAULT_PIN,
    NO_DMABUF_ITER,
    AndroidRead,
    BpfBuffer,
    BpfParseError,
    BpfSource,
    BpfUnavailable,
    Holders,
    parse_android,
    read_pinned,
)
from dmabuf_inspect.kernel.reader import GONE, Roots, gap_kind, gap_text, is_live_proc
from dmabuf_inspect.model import BROKEN, BufInfoTable, ScanError
from dmabuf_inspect.records import NamedTuple

# Where a capture keeps the dma-buf iterator's output, under its sys root: Android's pin path.
CAPTURED_ITER = "fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf"
assert "/sys/" + CAPTURED_ITER == DEFAULT_PIN

OK = "ok"
OK_CAPTURED = "ok (captured)"
TURNED_OFF = "unavailable: turned off (--no-bpf)"
NOT_LIVE_PROC = "unavailable: /proc is not the running kernel's (BPF reads only the live machine)"
NOT_CAPTURED = f"unavailable: the capture holds no BPF iterator output (sys/{CAPTURED_ITER})"
CAPTURED_HOLDERS = "unavailable: a captured tree (its processes are read from its files)"


class BpfBuffers(NamedTuple):
    """The buffers BPF listed for a scan, and what sources["bpf"] says."""

    state: str  # "ok", "ok (captured)", or "unavailable: why"
    table: BufInfoTable | None = None  # our iterator's listing, in bufinfo's columns (fences empty)
    fenced: int = 0  # of them, with fences: bufinfo would print them
    crowded: int = 0  # of them, with more attached devices than are named: bufinfo names them all
    pinned: tuple[BpfBuffer, ...] = ()  # a pinned iterator's listing (Android's format: no counts)
    errors: tuple[ScanError, ...] = ()  # lines of a pinned iterator that fit no record

    @property
    def listed(self) -> bool:
        """Every buffer the kernel has is here (held or not)."""
        return self.state.startswith(OK)


def live(roots: Roots) -> bool:
    """BPF applies: the scan reads the running kernel's /proc (not merely pretends to)."""
    return roots.live and is_live_proc(roots.proc_root)


# --- our programs, loaded once per process --------------------------------------------------------

_shared: list[tuple[tuple[int, int], BpfSource]] = []


def shared_source() -> BpfSource:
    """This process's BpfSource (the programs it loaded stay loaded), with the layout cached in
    the user's cache directory. Not one inherited over fork(), nor loaded under another euid."""
    key = (os.getpid(), os.geteuid())
    if _shared and _shared[0][0] == key:
        return _shared[0][1]
    close_shared()
    source = BpfSource(cache_dir=cache_dir())
    _shared.append((key, source))
    return source


def close_shared() -> None:
    """Unload this process's programs (the next scan loads them again)."""
    while _shared:
        _shared.pop()[1].close()


# --- buffers ---------------------------------------------------------------------------------------


def _from_pin(read: AndroidRead, path: str, state: str) -> BpfBuffers:
    errors: tuple[ScanError, ...] = ()
    if read.skipped_lines:
        n = read.skipped_lines
        errors = (
            ScanError(None, "bpf", f"{path}: {n} line{'s' if n != 1 else ''} fit no buffer record, skipped", BROKEN),
        )
    return BpfBuffers(state, pinned=tuple(read.buffers), errors=errors)


def read_buffers(roots: Roots) -> BpfBuffers:
    """Every dma-buf, as BPF lists it for this scan; never raises."""
    if not roots.bpf:
        return BpfBuffers(TURNED_OFF)
    if not roots.live:
        return _captured(roots)
    if not is_live_proc(roots.proc_root):
        return BpfBuffers(NOT_LIVE_PROC)
    if roots.bpf_iter is not None:
        try:
            return _from_pin(_read_pin(roots.bpf_iter), roots.bpf_iter, OK)
        except BpfUnavailable as exc:
            return BpfBuffers(f"unavailable: {exc.reason}")
    try:
        listing = shared_source().buffer_listing()
    except BpfUnavailable as exc:
        ours = exc.reason
    else:
        return BpfBuffers(OK, listing.table, listing.fenced, listing.crowded)
    if ours == NO_DMABUF_ITER:  # its BTF says so: no pin can exist on this kernel
        return BpfBuffers(f"unavailable: {ours}")
    try:
        return _from_pin(_read_pin(DEFAULT_PIN), DEFAULT_PIN, OK)
    except BpfUnavailable as exc:
        return BpfBuffers(f"unavailable: {ours}; {exc.reason}")


def _captured(roots: Roots) -> BpfBuffers:
    path = roots.sys.path(CAPTURED_ITER)
    try:
        text = roots.sys.read(CAPTURED_ITER)
    except OSError as exc:
        if gap_kind(exc) == GONE:
            return BpfBuffers(NOT_CAPTURED)
        return BpfBuffers(f"unavailable: {path}: {gap_text(exc)}")
    try:
        return _from_pin(parse_android(text), path, OK_CAPTURED)
    except BpfParseError as exc:
        return BpfBuffers(f"unavailable: {path}: {exc}")


# --- holders ---------------------------------------------------------------------------------------


def read_holders(roots: Roots, *, include_maps: bool) -> tuple[Holders | None, str]:
    """Every process's dma-buf fds (and mappings) from the task iterators, and sources["bpf_holders"];
    None where the scan must walk /proc itself. Never raises."""
    if not roots.bpf:
        return None, TURNED_OFF
    if not roots.live:
        return None, CAPTURED_HOLDERS
    if not is_live_proc(roots.proc_root):
        return None, NOT_LIVE_PROC
    try:
        return shared_source().holders(include_maps=include_maps), OK
    except BpfUnavailable as exc:
        return None, f"unavailable: {exc.reason}"


# --- capture ---------------------------------------------------------------------------------------


def android_text(buffers: list[BpfBuffer]) -> bytes:
    """Buffers in Android's 4-line format, as its dmabufIter.c prints them (a name's newlines as
    spaces; an unset name as an empty line)."""
    out = []
    for b in buffers:
        name = (b.name or "").replace("\n", " ").encode("utf-8", "surrogateescape")
        out.append(b"%d\n%d\n%s\n%s\n" % (b.inode, b.size_bytes, name, b.exp_name.encode("utf-8", "surrogateescape")))
    return b"".join(out)


def capture_text(roots: Roots) -> bytes:
    """The dma-buf iterator's output for a capture of `roots` (live), in Android's format: ours
    where it loads, else the pin (`--bpf-iter`, or Android's path). BpfUnavailable says why not."""
    if not roots.bpf:
        raise BpfUnavailable("turned off (--no-bpf)")
    if not live(roots):
        raise BpfUnavailable("/proc is not the running kernel's (BPF reads only the live machine)")
    if roots.bpf_iter is not None:
        return android_text(_read_pin(roots.bpf_iter).buffers)
    try:
        return android_text(shared_source().buffers())
    except BpfUnavailable as exc:
        ours = exc.reason
    try:
        return android_text(_read_pin(DEFAULT_PIN).buffers)
    except BpfUnavailable as exc:
        raise BpfUnavailable(f"{ours}; {exc.reason}") from None


def _read_pin(path: str) -> AndroidRead:
    try:
        return read_pinned(path)
    except BpfParseError as exc:
        raise BpfUnavailable(f"{path}: {exc}") from None
