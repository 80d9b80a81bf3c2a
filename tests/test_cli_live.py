"""The CLI on this machine's own /proc, whatever it holds, and its error policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from dmabuf_inspect.cli import _command_modules, main
from dmabuf_inspect.jsonout import load_schema

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", *args],
        capture_output=True, text=True, env=env, timeout=120, user=user, cwd="/",
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


def test_unreadable_root_is_one_line_and_exit_0_with_sources_marked(tmp_path: Path) -> None:
    proc = run_cli("--proc-root", str(tmp_path / "missing"), "--sys-root", str(tmp_path), "dump")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["sources"]["fdinfo"].startswith("unavailable: ")
    assert "Traceback" not in proc.stderr


def run_main_as(uid: int, argv: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """main(argv) in a forked child that dropped to `uid` (no exec: the interpreter may live
    where that user can't read it)."""
    _command_modules()  # import everything first: the dropped user may not read the interpreter's files
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("w") as out, err_path.open("w") as err:
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                sys.stdout = open(out.fileno(), "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(err.fileno(), "w", closefd=False)  # noqa: SIM115
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                code = main(argv)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out_path.read_text(), err_path.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unprivileged_run_counts_denied_processes_once(tmp_path: Path) -> None:
    code, out, err = run_main_as(65534, ["dump"], tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    notes = [line for line in err.splitlines() if "could not be read" in line]
    assert len(notes) == 1
    assert "run as root" in notes[0]
    doc = json.loads(out)
    assert doc["denied_pids"]
    assert {e["pid"] for e in doc["errors"] if e["error"] == "Permission denied"} == set(doc["denied_pids"])


def test_main_returns_exit_code_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "dmabuf-inspect/1"
