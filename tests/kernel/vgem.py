"""Test-side DRM helpers for the kernel lab: vgem dumb buffers, PRIME export/import, vgem fences.

Mirrors include/uapi/drm/drm.h, drm_mode.h and vgem_drm.h (same struct and field names). Only the
lab tests use it; the package itself never talks to DRM. Import it as `import vgem` (pytest puts
tests/kernel on sys.path because the directory has no __init__.py — keep it that way).

    with vgem.open_vgem() as card:          # modprobe vgem, then the /dev/dri/card* named "vgem"
        dumb = card.create_dumb(64, 64, 32)  # DRM_IOCTL_MODE_CREATE_DUMB
        fd = card.handle_to_fd(dumb.handle)  # DRM_IOCTL_PRIME_HANDLE_TO_FD: a dma-buf, exp_name "drm"
        fence = card.fence_attach(dumb.handle, write=True)  # DRM_IOCTL_VGEM_FENCE_ATTACH
        card.fence_signal(fence)             # DRM_IOCTL_VGEM_FENCE_SIGNAL
        handle = card.fd_to_handle(other_fd) # DRM_IOCTL_PRIME_FD_TO_HANDLE: vgem attaches to it
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import subprocess
from dataclasses import dataclass
from types import TracebackType

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (ord("d") << _IOC_TYPESHIFT)  # DRM_IOCTL_BASE
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def DRM_IOW(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def DRM_IOWR(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


class drm_version(ctypes.Structure):
    _fields_ = [
        ("version_major", ctypes.c_int),
        ("version_minor", ctypes.c_int),
        ("version_patchlevel", ctypes.c_int),
        ("name_len", ctypes.c_size_t),
        ("name", ctypes.c_void_p),
        ("date_len", ctypes.c_size_t),
        ("date", ctypes.c_void_p),
        ("desc_len", ctypes.c_size_t),
        ("desc", ctypes.c_void_p),
    ]


class drm_gem_close(ctypes.Structure):
    _fields_ = [("handle", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class drm_prime_handle(ctypes.Structure):
    _fields_ = [("handle", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("fd", ctypes.c_int32)]


class drm_mode_create_dumb(ctypes.Structure):
    _fields_ = [
        ("height", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("bpp", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("pitch", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
    ]


class drm_vgem_fence_attach(ctypes.Structure):
    _fields_ = [
        ("handle", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("out_fence", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class drm_vgem_fence_signal(ctypes.Structure):
    _fields_ = [("fence", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


DRM_COMMAND_BASE = 0x40
DRM_CLOEXEC = os.O_CLOEXEC
DRM_RDWR = os.O_RDWR
VGEM_FENCE_WRITE = 0x1

DRM_IOCTL_VERSION = DRM_IOWR(0x00, drm_version)
DRM_IOCTL_GEM_CLOSE = DRM_IOW(0x09, drm_gem_close)
DRM_IOCTL_PRIME_HANDLE_TO_FD = DRM_IOWR(0x2D, drm_prime_handle)
DRM_IOCTL_PRIME_FD_TO_HANDLE = DRM_IOWR(0x2E, drm_prime_handle)
DRM_IOCTL_MODE_CREATE_DUMB = DRM_IOWR(0xB2, drm_mode_create_dumb)
DRM_VGEM_FENCE_ATTACH = 0x1
DRM_VGEM_FENCE_SIGNAL = 0x2
DRM_IOCTL_VGEM_FENCE_ATTACH = DRM_IOWR(DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH, drm_vgem_fence_attach)
DRM_IOCTL_VGEM_FENCE_SIGNAL = DRM_IOW(DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL, drm_vgem_fence_signal)

# vgem signals its fences itself after this long (VGEM_FENCE_TIMEOUT in drivers/gpu/drm/vgem/vgem_fence.c).
VGEM_FENCE_TIMEOUT_S = 10.0


class DrmError(OSError):
    """An ioctl failed; the message names the step."""


def _ioctl(fd: int, request: int, arg: ctypes.Structure, step: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise DrmError(exc.errno, f"{step}: {os.strerror(exc.errno or 0)}") from exc


def driver_name(fd: int) -> str:
    """DRM_IOCTL_VERSION's driver name of an open DRM device."""
    buf = ctypes.create_string_buffer(64)
    ver = drm_version(name_len=len(buf), name=ctypes.cast(buf, ctypes.c_void_p))
    _ioctl(fd, DRM_IOCTL_VERSION, ver, "DRM_IOCTL_VERSION")
    return buf.raw[: min(ver.name_len, len(buf))].decode()


def load_vgem() -> None:
    """modprobe vgem (once; later calls are no-ops for the kernel)."""
    if not glob.glob("/sys/module/vgem"):
        subprocess.run(["modprobe", "vgem"], check=True, capture_output=True, text=True)


def find_vgem_card() -> str:
    """The /dev/dri/card* whose driver is vgem."""
    for path in sorted(glob.glob("/dev/dri/card*")):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if driver_name(fd) == "vgem":
                return path
        finally:
            os.close(fd)
    raise FileNotFoundError("no /dev/dri/card* with driver vgem (modprobe vgem failed?)")


@dataclass(frozen=True, slots=True)
class DumbBuffer:
    handle: int
    pitch: int
    size_bytes: int


class Vgem:
    """An open vgem card. A context manager; close() is safe to call twice."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def __enter__(self) -> Vgem:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def create_dumb(self, width: int, height: int, bpp: int) -> DumbBuffer:
        arg = drm_mode_create_dumb(height=height, width=width, bpp=bpp)
        _ioctl(self.fd, DRM_IOCTL_MODE_CREATE_DUMB, arg, "DRM_IOCTL_MODE_CREATE_DUMB")
        return DumbBuffer(handle=arg.handle, pitch=arg.pitch, size_bytes=arg.size)

    def gem_close(self, handle: int) -> None:
        _ioctl(self.fd, DRM_IOCTL_GEM_CLOSE, drm_gem_close(handle=handle), "DRM_IOCTL_GEM_CLOSE")

    def handle_to_fd(self, handle: int, flags: int = DRM_CLOEXEC | DRM_RDWR) -> int:
        """Export a GEM object as a dma-buf fd (PRIME)."""
        arg = drm_prime_handle(handle=handle, flags=flags, fd=-1)
        _ioctl(self.fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, arg, "DRM_IOCTL_PRIME_HANDLE_TO_FD")
        return int(arg.fd)

    def fd_to_handle(self, dmabuf_fd: int) -> int:
        """Import a dma-buf into vgem (PRIME): the buffer gains the attachment "vgem"."""
        arg = drm_prime_handle(fd=dmabuf_fd)
        _ioctl(self.fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, arg, "DRM_IOCTL_PRIME_FD_TO_HANDLE")
        return int(arg.handle)

    def fence_attach(self, handle: int, *, write: bool) -> int:
        """Attach an unsignalled vgem fence (write or read usage); returns the fence id.

        The kernel signals it by itself after VGEM_FENCE_TIMEOUT_S.
        """
        arg = drm_vgem_fence_attach(handle=handle, flags=VGEM_FENCE_WRITE if write else 0)
        _ioctl(self.fd, DRM_IOCTL_VGEM_FENCE_ATTACH, arg, "DRM_IOCTL_VGEM_FENCE_ATTACH")
        return int(arg.out_fence)

    def fence_signal(self, fence: int) -> None:
        arg = drm_vgem_fence_signal(fence=fence)
        _ioctl(self.fd, DRM_IOCTL_VGEM_FENCE_SIGNAL, arg, "DRM_IOCTL_VGEM_FENCE_SIGNAL")


def open_vgem() -> Vgem:
    """modprobe vgem and open its card."""
    load_vgem()
    return Vgem(find_vgem_card())
