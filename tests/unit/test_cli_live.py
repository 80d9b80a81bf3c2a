"""The CLI on this machine's own /proc, whatever it holds, and its error policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from paths import REPO

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.scan.jsonout import load_schema

ROOT = REPO


def run_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        user=user,
        cwd="/",
    )


def test_dump_of_this_machine_validates_against_the_schema() -> None:
    proc = run_cli("dump")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, load_schema())
    assert doc["kernel"] == os.uname().release
    assert set(doc["sources"]) >= {"fdinfo", "maps", "bufinfo", "sysfs", "heaps", "udmabuf"}


def test_list_without_dmabufs_says_so_and_names_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "proc" / "1" / "fd").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "maps").write_text("")
    (tmp_path / "sys").mkdir()
    (tmp_path / "dev").mkdir()
    proc = run_cli("--tree", str(tmp_path), "list")
    assert proc.returncode == 0
    assert "No dma-bufs found" in proc.stdout
    assert "bufinfo: debugfs is not mounted" in proc.stdout
    assert "heaps: no heaps in" in proc.stdout
    assert "udmabuf: no " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("list", "--sort", "bogus").returncode == 2


def test_a_missing_proc_root_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = run_cli("--proc-root", str(missing), "--sys-root", str(tmp_path), "dump")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"dmabuf-inspect: --proc-root {missing}: no such directory\n"


def test_missing_sources_under_readable_roots_are_marked_and_exit_0(tmp_path: Path) -> None:
    proc = run_cli("--proc-root", str(tmp_path), "--sys-root", str(tmp_path), "--dev-root", str(tmp_path), "dump")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["sources"]["bufinfo"].startswith("unavailable: ")
    assert doc["sources"]["heaps"].startswith("unavailable: ")
    assert "Traceback" not in proc.stderr


def test_main_returns_exit_code_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "dmabuf-inspect/1"
