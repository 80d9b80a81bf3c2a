"""The headless core never imports textual: only dmabuf_inspect.tui may."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "dmabuf_inspect",
    "dmabuf_inspect.model",
    "dmabuf_inspect.scan.snapshot",
    "dmabuf_inspect.scan.jsonout",
    "dmabuf_inspect.cli.main",
    "dmabuf_inspect.kernel.fdinfo",
    "dmabuf_inspect.kernel.maps",
    "dmabuf_inspect.kernel.bufinfo",
]


def test_core_modules_do_not_import_textual() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "from dmabuf_inspect.cli.main import _command_modules\n_command_modules()\n"
        + "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
