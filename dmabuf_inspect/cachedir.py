"""Where dmabuf-inspect keeps what it measured or worked out once: one directory per user.

    $XDG_CACHE_HOME/dmabuf-inspect       (XDG_CACHE_HOME: ~/.cache by default)

The bench results (bench/cache.py) and the BPF programs' layout of the running kernel
(kernel/bpf/source.py, read by a scan) live there. Standard library only: every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """$XDG_CACHE_HOME/dmabuf-inspect; ~/.cache/dmabuf-inspect when it is unset, empty or relative
    (the XDG base directory spec says to ignore a relative path)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "dmabuf-inspect")
