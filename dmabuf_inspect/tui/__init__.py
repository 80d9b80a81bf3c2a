"""The Textual front end (`dmabuf-inspect tui`). The only package that imports textual.

Importing this package does not import textual: `make_app` and `run_tui` import the app when
called, so the CLI stays quick for every other command.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from dmabuf_inspect.kernel.reader import Roots

if TYPE_CHECKING:
    from dmabuf_inspect.tui.app import DmabufInspectApp


def source_label(roots: Roots) -> str:
    """'live', or where a capture is read from."""
    if roots.live and roots == Roots():
        return "live"
    if roots.live:
        return f"live (sys {roots.sys_root}, dev {roots.dev_root})"
    proc = roots.proc_root.rstrip("/")
    return f"capture {os.path.dirname(proc) if os.path.basename(proc) == 'proc' else proc}"


def make_app(roots: Roots, interval_s: float, *, handle_signals: bool = False) -> DmabufInspectApp:
    """The app, scanning `roots` with `snapshot.collect` (processes' cgroups included, for the
    cgroup panel) every `interval_s` seconds. On this
    machine's own /proc it traces buffer creators (where the kernel and our rights allow)."""
    from dmabuf_inspect.kernel.tracefs import TRACEFS
    from dmabuf_inspect.scan.snapshot import collect
    from dmabuf_inspect.tui.app import DmabufInspectApp
    from dmabuf_inspect.tui.state import Source

    source = Source(source_label(roots), live=roots.live)
    return DmabufInspectApp(
        functools.partial(collect, roots, cgroups=True),
        interval_s=interval_s,
        source=source,
        trace_root=TRACEFS if roots.live else None,
        handle_signals=handle_signals,
    )


def run_tui(roots: Roots, interval_s: float) -> int:
    """Run the TUI on this terminal until the user quits; returns the exit code. The trace
    instance is removed however the app ends (a key, SIGINT, SIGTERM, SIGHUP, an exception)."""
    app = make_app(roots, interval_s, handle_signals=True)
    try:
        result = app.run()
    finally:
        app.close_history()
    return 0 if result is None else int(result)
