"""How a one-shot command ends: under entry() its snapshot is held until os._exit() (never freed
object by object); called as main() (tests, other callers) nothing is held."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import FIXTURES

from dmabuf_inspect.cli import main as cli_main

K612 = str(FIXTURES / "k6.12")
REPORT_AT_EXIT = """
import os, sys
from dmabuf_inspect.cli import main as M
real_exit = os._exit
def report(code):
    sys.stderr.write(repr(sorted(type(v).__name__ for v in M._kept)))
    sys.stderr.flush()
    real_exit(code)
os._exit = report
sys.argv = ["dmabuf-inspect", *sys.argv[1:]]
M.entry()
"""


@pytest.mark.parametrize("command", [["dump", "-q"], ["list"]])
def test_entry_holds_the_snapshot_until_the_process_ends(command: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", REPORT_AT_EXIT, "--tree", K612, *command], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "['Snapshot']"


def test_main_holds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--tree", K612, "dump", "-q"]) == 0
    assert cli_main.main(["--tree", K612, "list"]) == 0
    assert cli_main._kept == []
