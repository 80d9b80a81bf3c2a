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


# Modules that would make `import dmabuf_inspect` heavy (importlib.metadata alone costs more than the
# whole package) or that the classify API does not need.
HEAVY = (
    "argparse",
    "ctypes",
    "email",
    "importlib.metadata",
    "importlib.resources",
    "json",
    "psutil",
    "pyudev",
    "rich",
    "subprocess",
    "tempfile",
    "textual",
    "zipfile",
)


def test_import_dmabuf_inspect_stays_light() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from dmabuf_inspect import classify_fd, is_udmabuf, __version__\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = set(out.stdout.split())
    assert not {m for m in added if m.split(".")[0] in HEAVY or m in HEAVY}
    assert not {m for m in added if m.startswith(("dmabuf_inspect.scan", "dmabuf_inspect.cli", "dmabuf_inspect.tui"))}


def test_import_dmabuf_inspect_alone_imports_nothing_else() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import dmabuf_inspect\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["dmabuf_inspect"]


def test_the_package_names_are_the_functions_whatever_was_imported_first() -> None:
    code = (
        "import importlib, inspect\n"
        "module = importlib.import_module('dmabuf_inspect.classify')\n"
        "import dmabuf_inspect\n"
        "from dmabuf_inspect import classify, classify_fd, is_udmabuf, ExporterInfo, NotADmabufError\n"
        "assert inspect.isfunction(dmabuf_inspect.classify) and classify is module.classify\n"
        "assert classify_fd is module.classify_fd and is_udmabuf is module.is_udmabuf\n"
        "assert sorted(n for n in dmabuf_inspect.__all__ if not hasattr(dmabuf_inspect, n)) == []\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "ok\n", out.stderr
