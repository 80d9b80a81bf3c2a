"""The command registry: every command module is listed once, with its docstring's first line, and
`dmabuf-inspect` imports only the command it runs (issue 12: "import only the command being run")."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from importlib import metadata

import pytest
import tomllib
from paths import FIXTURES, REPO

import dmabuf_inspect
from dmabuf_inspect.cli import commands
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.cli.registry import BY_NAME, COMMANDS

K612 = str(FIXTURES / "k6.12")


def test_every_command_module_is_registered_once_under_its_name() -> None:
    modules = {info.name for info in pkgutil.iter_modules(commands.__path__)}
    assert {c.module for c in COMMANDS} == modules
    assert len(BY_NAME) == len(COMMANDS)
    for command in COMMANDS:
        module = importlib.import_module(command.module_path)
        assert command.name == module.NAME
        assert callable(module.run) and callable(module.add_arguments)
        assert (module.__doc__ or "").strip().splitlines()[0] == command.summary


def _modules_after(argv: list[str]) -> set[str]:
    """The dmabuf_inspect modules that `main(argv)` imported, in a fresh interpreter."""
    code = (
        "import io, sys\n"
        "real = sys.stdout\n"
        "sys.stdout = io.StringIO()\n"
        "from dmabuf_inspect.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "real.write(' '.join(sorted(m for m in sys.modules if m.startswith('dmabuf_inspect'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["--tree", K612, "list"], ["dump", "--tree", K612]])
def test_only_the_command_being_run_is_imported(argv: list[str]) -> None:
    loaded = _modules_after(argv)
    ran = {f"dmabuf_inspect.cli.commands.{a}" for a in argv if a in BY_NAME}
    assert {m for m in loaded if m.startswith("dmabuf_inspect.cli.commands.")} == ran
    assert not {
        m for m in loaded if m.startswith(("dmabuf_inspect.bench", "dmabuf_inspect.ioctl", "dmabuf_inspect.tui"))
    }
    if not ran:  # --version and --help read no kernel file
        assert not {m for m in loaded if m.startswith(("dmabuf_inspect.scan", "dmabuf_inspect.kernel."))} - {
            "dmabuf_inspect.kernel.reader"  # imported by classify, so by the package
        }


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"dmabuf-inspect {dmabuf_inspect.__version__}\n"


def test_version_agrees_with_pyproject_and_the_installed_metadata() -> None:
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert dmabuf_inspect.__version__ == project["version"] == metadata.version("dmabuf-inspect")
