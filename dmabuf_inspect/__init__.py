"""dmabuf-inspect: every dma-buf on a Linux machine, and what each one costs to touch.

The package import is light (standard library only). The classify API is for programs that
must tell a udmabuf from a GPU buffer at run time:

    from dmabuf_inspect import classify_fd, is_udmabuf
"""

from __future__ import annotations

from dmabuf_inspect.classify import ExporterInfo, classify, classify_fd, is_udmabuf
from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError

__all__ = [
    "DmabufInspectError",
    "ExporterInfo",
    "NotADmabufError",
    "classify",
    "classify_fd",
    "is_udmabuf",
]
