"""`dmabuf-inspect capture`: a capture reads back as what it captured, and copies nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.errors import UsageError
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.capture import capture, dmabuf_maps_lines
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect

FIXTURES = FIXTURES
TREES = ["k4.19-legacy", "k5.10-sysfs", "k6.12", "k7.3", "no-dmabufs"]


def _doc(tree: Path) -> dict[str, Any]:
    """The snapshot of a tree, with its own path taken out so two trees compare."""
    doc = snapshot_to_dict(collect(Roots.from_tree(str(tree))))
    doc.pop("taken_at")
    text = json.dumps(doc).replace(str(tree), "TREE")
    result: dict[str, Any] = json.loads(text)
    return result


@pytest.mark.parametrize("tree", TREES)
def test_capture_of_a_tree_reads_back_the_same(tree: str, tmp_path: Path) -> None:
    out = tmp_path / "capture"
    report = capture(str(out), Roots.from_tree(str(FIXTURES / tree)))
    assert report.denied_pids == []
    assert _doc(out) == _doc(FIXTURES / tree)
    assert (out / "uname").read_text() == (out / "proc" / "sys" / "kernel" / "osrelease").read_text()


def test_capture_keeps_only_dmabuf_fds_and_mappings(tmp_path: Path) -> None:
    src = FIXTURES / "k6.12"
    out = tmp_path / "capture"
    report = capture(str(out), Roots.from_tree(str(src)))
    for pid_dir in (out / "proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        fd_dir = pid_dir / "fd"
        for link in fd_dir.iterdir() if fd_dir.exists() else ():
            target = os.readlink(link)
            assert target.startswith("/dmabuf:"), target
            assert target == os.readlink(src / "proc" / pid_dir.name / "fd" / link.name)
            assert (pid_dir / "fdinfo" / link.name).read_bytes() == (
                src / "proc" / pid_dir.name / "fdinfo" / link.name
            ).read_bytes()
        maps = (pid_dir / "maps").read_bytes()
        assert maps == b"".join(dmabuf_maps_lines((src / "proc" / pid_dir.name / "maps").read_bytes()))
    assert report.fds == sum(1 for _ in (out / "proc").glob("*/fd/*"))
    holders = {p.name for p in (src / "proc").iterdir() if p.name.isdigit() and _holds_dmabuf(p)}
    assert {p.name for p in (out / "proc").iterdir() if p.name.isdigit()} == holders


def _holds_dmabuf(pid_dir: Path) -> bool:
    fd_dir = pid_dir / "fd"
    links = [os.readlink(p) for p in fd_dir.iterdir()] if fd_dir.is_dir() else []
    maps = (pid_dir / "maps").read_bytes() if (pid_dir / "maps").exists() else b""
    return any(t.startswith("/dmabuf:") or t == "anon_inode:dmabuf" for t in links) or bool(dmabuf_maps_lines(maps))


def test_maps_filter() -> None:
    maps = (
        b"55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1835021                    /usr/bin/cat\n"
        b"7f1c2a000000-7f1c2a100000 rw-s 00000000 00:0f 40002                      /dmabuf:scene\n"
        b"7f1c2a100000-7f1c2a200000 rw-s 00000000 00:0f 40003                      /dmabuf:\n"
        b"7f1c2a200000-7f1c2a201000 rw-s 00000000 00:0f 3071                       anon_inode:dmabuf\n"
        b"7f1c2a300000-7f1c2a301000 rw-p 00000000 00:00 0                          /tmp/x /dmabuf:fake\n"
        b"7ffd5e1f0000-7ffd5e211000 rw-p 00000000 00:00 0                          [stack]\n"
    )
    assert [line.split()[4] for line in dmabuf_maps_lines(maps)] == [b"40002", b"40003", b"3071"]


def test_capture_of_hostile_links_reads_nothing_outside(tmp_path: Path) -> None:
    out = tmp_path / "capture"
    report = capture(str(out), Roots.from_tree(str(FIXTURES / "hostile-links")))
    # Links out of the source are refused and said to be that, never "permission denied".
    assert sorted(report.outside_pids) == [666, 667, 668] and report.denied_pids == []
    assert "links lead outside the source capture: pids 666 667 668" in (out / "capture.txt").read_text()
    assert report.kernel == "unknown"
    assert report.sources["bufinfo"].startswith("unavailable:")
    assert [p.name for p in (out / "proc").iterdir() if p.name.isdigit()] == ["700"]
    secrets = [Path(p).read_bytes() for p in ("/etc/hostname", "/etc/passwd") if Path(p).exists()]
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > 0:
            data = path.read_bytes()
            assert not any(s.strip() and s.strip() in data for s in secrets if len(s.strip()) > 4), path
    doc = _doc(out)
    assert [b["inode"] for b in doc["buffers"]] == [50001]


def test_capture_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        capture(str(tmp_path), Roots.from_tree(str(FIXTURES / "k6.12")))
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_capture_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["--tree", str(FIXTURES / "k7.3"), "capture", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"captured kernel 7.3.4+deb13-amd64 into {out}: 3 processes holding dma-bufs")
    assert "  bufinfo: ok" in said
    assert main(["--tree", str(FIXTURES / "k7.3"), "capture", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_capture_of_this_machine(tmp_path: Path) -> None:
    """Live: whatever this machine holds, the capture reads back to the same buffers and holders."""
    out = tmp_path / "live"
    report = capture(str(out))
    assert (out / "uname").read_text() == os.uname().release + "\n"
    assert report.sources["proc"] == "ok"
    assert (out / "capture.txt").read_text().startswith(f"dmabuf-inspect capture of kernel {os.uname().release}")
