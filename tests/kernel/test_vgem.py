"""The lab's vgem helpers: ioctl numbers pinned (anywhere), behaviour checked (in the lab)."""

from __future__ import annotations

import os

import pytest
import vgem


def test_ioctl_numbers_match_the_kernel_headers() -> None:
    assert vgem.DRM_IOCTL_VERSION == 0xC0406400
    assert vgem.DRM_IOCTL_GEM_CLOSE == 0x40086409
    assert vgem.DRM_IOCTL_PRIME_HANDLE_TO_FD == 0xC00C642D
    assert vgem.DRM_IOCTL_PRIME_FD_TO_HANDLE == 0xC00C642E
    assert vgem.DRM_IOCTL_MODE_CREATE_DUMB == 0xC02064B2
    assert vgem.DRM_IOCTL_VGEM_FENCE_ATTACH == 0xC0106441
    assert vgem.DRM_IOCTL_VGEM_FENCE_SIGNAL == 0x40086442


def _fdinfo(fd: int) -> dict[str, str]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.mark.kernel
def test_dumb_buffer_exports_as_a_drm_dmabuf_and_reimports_to_the_same_handle() -> None:
    with vgem.open_vgem() as card:
        dumb = card.create_dumb(64, 32, 32)
        assert (dumb.pitch, dumb.size_bytes) == (256, 8192)
        fd = card.handle_to_fd(dumb.handle)
        try:
            assert os.readlink(f"/proc/self/fd/{fd}").startswith("/dmabuf:")
            info = _fdinfo(fd)
            assert info["exp_name"].strip() == "drm"
            assert int(info["size"]) == 8192
            assert card.fd_to_handle(fd) == dumb.handle
        finally:
            os.close(fd)
        card.gem_close(dumb.handle)
        with pytest.raises(vgem.DrmError, match="DRM_IOCTL_PRIME_HANDLE_TO_FD"):
            card.handle_to_fd(dumb.handle)
        card.close()
        card.close()


@pytest.mark.kernel
def test_fence_attach_and_signal() -> None:
    with vgem.open_vgem() as card:
        dumb = card.create_dumb(16, 16, 32)
        fence = card.fence_attach(dumb.handle, write=True)
        card.fence_signal(fence)
        with pytest.raises(vgem.DrmError, match="DRM_IOCTL_VGEM_FENCE_SIGNAL"):
            card.fence_signal(fence)  # already signalled and released: ENOENT
        card.gem_close(dumb.handle)
