"""As a normal user, and on a kernel missing pieces: the view degrades, clearly (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from as_user import NOBODY, main_as

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.ioctl.heaps import heap_alloc

pytestmark = pytest.mark.kernel


def test_normal_user_sees_own_buffers_denied_once_and_no_debugfs(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    with heap_alloc("system", 8192) as buf:
        code, out, err = main_as(NOBODY, ["dump"])
    assert code == 0, err
    assert "Traceback" not in err
    doc = json.loads(out)
    mine = [b for b in doc["buffers"] if b["inode"] == buf.inode]
    assert len(mine) == 1 and mine[0]["size_bytes"] == 8192 and mine[0]["exporter"] == "system"
    assert doc["sources"]["bufinfo"].startswith("unavailable: ")
    assert doc["totals"]["kernel_only_bytes"] is None
    assert doc["denied_pids"] and 1 in doc["denied_pids"]
    assert {e["pid"] for e in doc["errors"] if e["error"] == "Permission denied"} == set(doc["denied_pids"])
    assert {e["pid"] for e in doc["errors"] if e["kind"] == "denied"} == set(doc["denied_pids"])
    assert {e["kind"] for e in doc["errors"]} == {"denied"}
    notes = [line for line in err.splitlines() if "could not be read" in line]
    assert len(notes) == 1 and "run as root" in notes[0]
    assert sum("debugfs bufinfo unavailable" in line for line in err.splitlines()) == 1


@pytest.mark.parametrize("command", ["list", "buffers", "heaps", "dump"])
def test_kernel_without_debugfs_udmabuf_or_heaps_degrades_clearly(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with heap_alloc("system", 4096):
        code = main(["--debugfs-root", str(empty), "--dev-root", str(empty), "--sys-root", str(empty), command])
    cap = capsys.readouterr()
    assert code == 0
    text = cap.out + cap.err
    assert "Traceback" not in text
    if command == "dump":
        sources = json.loads(cap.out)["sources"]
        assert sources["bufinfo"].startswith("unavailable: debugfs is not mounted")
        assert sources["heaps"].startswith("unavailable: no heaps")
        assert sources["udmabuf"].startswith("unavailable: no ")
        assert json.loads(cap.out)["buffers"]  # the fd scan still works
    elif command == "heaps":
        assert "no dma-buf heaps" in text and "udmabuf: no " in text
    else:
        assert "debugfs bufinfo unavailable" in cap.err
