"""What `dump` and `list` import before they scan: start-up is most of a command's time (issue 12).

Every module costs its import on every run, and under TCG an import of `dataclasses` (with
`inspect`) or `tempfile` (with `shutil`, `random`, bz2, lzma) costs as much as a tenth of a
scan: the commands that scan must not import them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dmabuf_inspect
from dmabuf_inspect import model

# Modules no scanning command needs: dataclasses/inspect/dis/ast (a frozen dataclass), tempfile and
# what it brings (a cache written once per boot imports it then), platform (os.uname() says the
# machine), udev (sysfs says the heaps), importlib's resources and metadata.
NOT_ON_THE_SCAN_PATH = (
    "ast",
    "bz2",
    "contextlib",
    "dataclasses",
    "dis",
    "dmabuf_inspect.kernel.vfio",
    "importlib.metadata",
    "importlib.resources",
    "inspect",
    "lzma",
    "platform",
    "pyudev",
    "random",
    "shutil",
    "tempfile",
    "typing",
)


@pytest.mark.parametrize("command", ["dump", "list", "buffers", "heaps"])
def test_a_scanning_command_imports_nothing_it_does_not_need(command: str) -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import dmabuf_inspect.cli.main, dmabuf_inspect.cli.commands.{command}\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    # -S: no site, whose .pth files may import some of them first (pyenv's certifi: importlib.resources, tempfile)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.path.dirname(os.path.dirname(dmabuf_inspect.__file__))}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env
    )
    added = set(out.stdout.split())
    assert f"dmabuf_inspect.cli.commands.{command}" in added  # the import ran, from somewhere
    assert sorted(added.intersection(NOT_ON_THE_SCAN_PATH)) == []


def test_model_annotations_are_types_not_strings() -> None:
    # typing.NamedTuple compiles a string annotation (a ForwardRef) per field: 60% of model's import.
    for record in (model.Buffer, model.Process, model.Snapshot, model.BufInfoTable):
        assert not [name for name, kind in record.__annotations__.items() if isinstance(kind, str)], record
