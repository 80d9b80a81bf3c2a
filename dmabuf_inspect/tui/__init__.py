"""The Textual front end (`dmabuf-inspect tui`). The only package that imports textual.

`run_tui` imports the app lazily, so importing this package (as the CLI does) stays cheap.
"""

from __future__ import annotations

import functools
import os

from ..roots import Roots


def source_label(roots: Roots) -> str:
    """'live', or where a capture is read from."""
    if roots.live and roots == Roots():
        return "live"
    if roots.live:
        return f"live (sys {roots.sys_root}, dev {roots.dev_root})"
    proc = roots.proc_root.rstrip("/")
    return f"capture {os.path.dirname(proc) if os.path.basename(proc) == 'proc' else proc}"


def run_tui(roots: Roots, interval_s: float) -> int:
    """Run the TUI on this terminal until the user quits; returns the exit code."""
    from ..snapshot import collect
    from .app import DmabufInspectApp

    collector = functools.partial(collect, roots)
    app = DmabufInspectApp(collector, interval_s=interval_s, source=source_label(roots))
    result = app.run()
    return 0 if result is None else int(result)
