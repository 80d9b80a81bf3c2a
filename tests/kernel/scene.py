"""A known dma-buf scene, built by helper processes, for the end-to-end test and the lab captures.

    with Scene.start() as scene:
        scene.attach_fresh_fence()     # just before reading: vgem fences signal after 10 s
        ...                             # read /proc, debugfs, run `dmabuf-inspect dump`
        scene.expected                  # what must be seen, buffer by buffer

The scene (sizes in KiB; P1 "scene-owner", P2 "scene-fork" = os.fork() of P1, P3 "scene-recv"):

    shared    udmabuf 64    fds in P1 and P2 (same number, inherited) and P3 (sent over a unix socket)
    named     system  1024  fd in P1, DMA_BUF_SET_NAME "scene-named"
    mapped    system  256   mapped in P1 with its fd closed (a libc mmap, which keeps no fd)
    pymapped  system  128   fd in P1 and mapped with Python's mmap, which dup()s the fd: 2 fds, 1 map
    fenced    drm     16    vgem dumb 64x64x32 PRIME export, fd in P1, unsignalled vgem write fence
    signaled  drm     4     vgem dumb 32x32x32 PRIME export, fd in P1, signalled vgem write fence
    imported  udmabuf 32    imported into vgem (attachment "vgem"), then its fd closed: kernel-only

Only P1, P2 and P3 hold dma-bufs; the process that starts the scene holds none.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import os
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import vgem

from dmabuf_inspect.ioctl import buffer as dmabuf_fd
from dmabuf_inspect.ioctl import heaps as heaps_alloc
from dmabuf_inspect.ioctl import udmabuf

KiB = 1024
OWNER_COMM, FORK_COMM, RECV_COMM = "scene-owner", "scene-fork", "scene-recv"
NAMED = "scene-named"
PR_SET_NAME = 15

# drm_prime.c (6.12 and 7.3): an exported GEM object keeps the dma-buf in obj->dma_buf (one
# reference) and in the exporting file's PRIME handle cache (drm_prime_add_buf_handle, one more).
PRIME_EXPORT_KERNEL_REFS = 2
# An import takes one for the importing GEM object (drm_gem_prime_import_dev), one for
# obj->dma_buf and one for the handle cache.
PRIME_IMPORT_KERNEL_REFS = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True, slots=True)
class ExpectedHolder:
    pid: int
    fds: tuple[int, ...]
    maps: int
    mapped_bytes: int


@dataclass(frozen=True, slots=True)
class ExpectedBuffer:
    role: str
    inode: int
    size_bytes: int
    exporter: str
    cls: str
    name: str | None
    holders: tuple[ExpectedHolder, ...]  # by pid
    user_refs: int  # fds + mappings, over all processes
    kernel_refs: int = 0
    attachments: tuple[str, ...] = ()
    fence_signaled: bool | None = None  # one vgem write fence when not None

    @property
    def count(self) -> int:
        """File references: every fd, every mapping, and the kernel's own."""
        return self.user_refs + self.kernel_refs


def _set_comm(name: str) -> None:
    _libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def _fds_of(inode: int) -> set[int]:
    """This process's fds open on the dma-buf `inode` (fstat, not /proc's links)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:  # the directory listing's own fd, closed by now
            continue
        if st.st_ino == inode and os.readlink(f"/proc/self/fd/{name}").startswith("/dmabuf:"):
            found.add(int(name))
    return found


def _receiver(sock: socket.socket, conn: Connection) -> None:
    """P3: receive one fd over the unix socket, say its number, hold it until told to stop."""
    _set_comm(RECV_COMM)
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
        conn.send({"pid": os.getpid(), "fd": fds[0]})
        conn.recv()  # stop
        conn.send("stopped")
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    os._exit(0)


def _owner(sock: socket.socket, conn: Connection) -> None:
    """P1: build the scene, report it, attach fences on request, hold everything until told to stop."""
    _set_comm(OWNER_COMM)
    try:
        _owner_scene(sock, conn)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    os._exit(0)


def _owner_scene(sock: socket.socket, conn: Connection) -> None:
    info: dict[str, Any] = {"pid": os.getpid()}

    shared = udmabuf.create_with_memfd(64 * KiB)
    stop_r, stop_w = os.pipe()
    child = os.fork()
    if child == 0:  # P2: holds `shared` by inheritance only
        _set_comm(FORK_COMM)
        os.close(stop_w)
        os.read(stop_r, 1)  # EOF when P1 closes stop_w (or dies)
        os._exit(0)
    os.close(stop_r)
    info["fork_pid"] = child
    socket.send_fds(sock, [b"x"], [shared.fd])
    sock.close()
    info["shared"] = (shared.inode, shared.size_bytes, shared.fd)

    named = heaps_alloc.heap_alloc("system", 1024 * KiB)
    named.set_name(NAMED)
    info["named"] = (named.inode, named.size_bytes, named.fd)

    mapped = heaps_alloc.heap_alloc("system", 256 * KiB)
    addr = _libc.mmap(None, mapped.size_bytes, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, mapped.fd, 0)
    if addr in (None, MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap of the heap buffer")
    info["mapped"] = (mapped.inode, mapped.size_bytes, None)
    mapped.close()

    pymapped = heaps_alloc.heap_alloc("system", 128 * KiB)
    pymap = pymapped.mmap()
    (dup_fd,) = _fds_of(pymapped.inode) - {pymapped.fd}
    info["pymapped"] = (pymapped.inode, pymapped.size_bytes, pymapped.fd, dup_fd)

    card = vgem.open_vgem()
    fenced_bo = card.create_dumb(64, 64, 32)
    fenced = dmabuf_fd.DmaBuf(card.handle_to_fd(fenced_bo.handle), exporter="drm")
    info["fenced"] = (fenced.inode, fenced.size_bytes, fenced.fd)
    signaled_bo = card.create_dumb(32, 32, 32)
    signaled = dmabuf_fd.DmaBuf(card.handle_to_fd(signaled_bo.handle), exporter="drm")
    card.fence_signal(card.fence_attach(signaled_bo.handle, write=True))
    info["signaled"] = (signaled.inode, signaled.size_bytes, signaled.fd)

    imported = udmabuf.create_with_memfd(32 * KiB)
    card.fd_to_handle(imported.fd)
    info["imported"] = (imported.inode, imported.size_bytes, None)
    imported.close()

    conn.send(info)
    fence: int | None = None
    while True:
        request = conn.recv()
        if request == "fence":
            if fence is not None:
                # vgem refuses a write fence while another is unsignalled (EBUSY); an already
                # signalled one (by its 10 s timer) answers ETIMEDOUT.
                with contextlib.suppress(vgem.DrmError):
                    card.fence_signal(fence)
            fence = card.fence_attach(fenced_bo.handle, write=True)
            conn.send(time.monotonic())
        elif request == "stop":
            break
    # Everything goes with the process; P2 exits on EOF.
    del pymap, addr
    os.close(stop_w)
    os.waitpid(child, 0)
    conn.send("stopped")


class SceneError(RuntimeError):
    pass


class Scene:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._owner_conn, owner_end = ctx.Pipe()
        self._recv_conn, recv_end = ctx.Pipe()
        self._owner = ctx.Process(target=_owner, args=(a, owner_end), daemon=True)
        self._recv = ctx.Process(target=_receiver, args=(b, recv_end), daemon=True)
        self._recv.start()
        self._owner.start()
        a.close()
        b.close()
        owner_end.close()
        recv_end.close()
        self.owner = self._reply(self._owner_conn)
        self.recv = self._reply(self._recv_conn)
        self.fence_attached_at: float | None = None
        self.expected = self._expected()

    @classmethod
    def start(cls) -> Scene:
        return cls()

    def _reply(self, conn: Connection, timeout_s: float = 60.0) -> Any:
        if not conn.poll(timeout_s):
            raise SceneError("a scene process did not answer")
        reply = conn.recv()
        if isinstance(reply, dict) and "error" in reply:
            raise SceneError(f"a scene process failed:\n{reply['error']}")
        return reply

    @property
    def pids(self) -> dict[str, int]:
        return {OWNER_COMM: self.owner["pid"], FORK_COMM: self.owner["fork_pid"], RECV_COMM: self.recv["pid"]}

    def attach_fresh_fence(self) -> float:
        """Attach the unsignalled write fence to `fenced` now; returns time.monotonic() of the attach.

        A signalled earlier fence is replaced (dma_resv_add_fence drops signalled fences).
        """
        self._owner_conn.send("fence")
        self.fence_attached_at = float(self._reply(self._owner_conn))
        return self.fence_attached_at

    def _expected(self) -> dict[str, ExpectedBuffer]:
        o, p1, p2, p3 = self.owner, self.owner["pid"], self.owner["fork_pid"], self.recv["pid"]

        def one(role: str, exporter: str, cls: str, holders: list[ExpectedHolder], **kw: Any) -> ExpectedBuffer:
            inode, size = o[role][0], o[role][1]
            refs = sum(len(h.fds) + h.maps for h in holders)
            return ExpectedBuffer(
                role,
                inode,
                size,
                exporter,
                cls,
                kw.pop("name", None),
                tuple(sorted(holders, key=lambda h: h.pid)),
                refs,
                **kw,
            )

        fd = {role: o[role][2] for role in ("shared", "named", "pymapped", "fenced", "signaled")}
        bufs = [
            one(
                "shared",
                "udmabuf",
                "udmabuf",
                [
                    ExpectedHolder(p1, (fd["shared"],), 0, 0),
                    ExpectedHolder(p2, (fd["shared"],), 0, 0),
                    ExpectedHolder(p3, (self.recv["fd"],), 0, 0),
                ],
            ),
            one("named", "system", "heap", [ExpectedHolder(p1, (fd["named"],), 0, 0)], name=NAMED),
            one("mapped", "system", "heap", [ExpectedHolder(p1, (), 1, o["mapped"][1])]),
            one(
                "pymapped",
                "system",
                "heap",
                [
                    ExpectedHolder(p1, tuple(sorted((fd["pymapped"], o["pymapped"][3]))), 1, o["pymapped"][1]),
                ],
            ),
            one(
                "fenced",
                "drm",
                "gpu-prime",
                [ExpectedHolder(p1, (fd["fenced"],), 0, 0)],
                kernel_refs=PRIME_EXPORT_KERNEL_REFS,
                fence_signaled=False,
            ),
            one(
                "signaled",
                "drm",
                "gpu-prime",
                [ExpectedHolder(p1, (fd["signaled"],), 0, 0)],
                kernel_refs=PRIME_EXPORT_KERNEL_REFS,
                fence_signaled=True,
            ),
            one("imported", "udmabuf", "udmabuf", [], kernel_refs=PRIME_IMPORT_KERNEL_REFS, attachments=("vgem",)),
        ]
        return {b.role: b for b in bufs}

    def close(self) -> None:
        for conn, proc in ((self._owner_conn, self._owner), (self._recv_conn, self._recv)):
            if proc.is_alive():
                try:
                    conn.send("stop")
                    conn.poll(30)
                except (OSError, EOFError):
                    pass
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
