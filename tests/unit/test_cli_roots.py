"""The root options (--tree, --proc-root, ...): before or after the command, and refused with exit 2
when they cannot mean what was asked (issue 12, items 1, 2 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import FIXTURES, REPO

from dmabuf_inspect.cli.main import find_command, main

K612 = str(FIXTURES / "k6.12")


@pytest.mark.parametrize(
    "argv",
    [
        ["--tree", K612, "dump", "-q"],
        ["dump", "--tree", K612, "-q"],
        ["dump", "-q", f"--tree={K612}"],
        ["dump", "-q", "--proc-root", f"{K612}/proc", "--sys-root", f"{K612}/sys", "--dev-root", f"{K612}/dev"],
        ["--proc-root", f"{K612}/proc", "dump", "--sys-root", f"{K612}/sys", "-q", "--dev-root", f"{K612}/dev"],
    ],
)
def test_root_options_go_before_or_after_the_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kernel"] == "6.12.107+deb13-amd64"
    assert {b["inode"] for b in doc["buffers"]} == {30001, 30002, 30003, 30004, 30005}


def test_list_takes_the_tree_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--tree", K612, "--sort", "pid"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["812", "1204", "1350"]


def test_tui_takes_root_options_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    # Not a terminal here: the TUI refuses to start, but only after the arguments were accepted.
    assert main(["tui", "--proc-root", f"{K612}/proc", "--sys-root", f"{K612}/sys"]) == 1
    assert "needs a terminal" in capsys.readouterr().err


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "Traceback" not in cap.err
    lines = cap.err.splitlines()
    assert len(lines) == 1, cap.err
    return lines[0]


@pytest.mark.parametrize("place", ["before", "after"])
def test_a_tree_that_does_not_exist_is_a_usage_error_naming_it(
    place: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nonexistent")
    argv = ["--tree", missing, "list"] if place == "before" else ["list", "--tree", missing]
    assert _usage_error(argv, capsys) == f"dmabuf-inspect: --tree {missing}: no such directory"


def test_a_tree_that_is_a_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    readme = str(REPO / "README.md")
    assert _usage_error(["--tree", readme, "list"], capsys) == f"dmabuf-inspect: --tree {readme}: not a directory"


def test_a_directory_that_is_no_capture_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["--tree", str(FIXTURES), "list"], capsys)
    assert line.startswith(f"dmabuf-inspect: --tree {FIXTURES}: not a capture (no proc/ in it)")


def test_an_empty_tree_is_a_usage_error_not_the_live_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _usage_error(["--tree", "", "dump"], capsys) == "dmabuf-inspect: --tree needs a directory, not an empty string"
    )


@pytest.mark.parametrize("flag", ["--proc-root", "--sys-root", "--debugfs-root", "--dev-root"])
def test_each_single_root_must_be_a_directory(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing")
    assert _usage_error(["dump", flag, missing], capsys) == f"dmabuf-inspect: {flag} {missing}: no such directory"


def test_tree_and_a_single_root_conflict(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["--tree", K612, "--proc-root", "/proc", "list"], capsys)
    assert line == "dmabuf-inspect: --tree sets every root; it cannot be combined with --proc-root"
    line = _usage_error(["list", "--dev-root", "/dev", "--tree", K612], capsys)
    assert line == "dmabuf-inspect: --tree sets every root; it cannot be combined with --dev-root"


def test_a_root_given_twice_with_two_values_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    k73 = str(FIXTURES / "k7.3")
    line = _usage_error(["--tree", K612, "list", "--tree", k73], capsys)
    assert line == f"dmabuf-inspect: --tree given twice ({K612} and {k73}); give it once"


def test_the_same_root_before_and_after_is_one_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "dump", "-q", "--tree", K612]) == 0
    assert json.loads(capsys.readouterr().out)["kernel"] == "6.12.107+deb13-amd64"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["list"], "list"),
        (["--tree", "list", "dump"], "dump"),  # "list" is --tree's value
        (["--tree=x", "list"], "list"),
        (["--tr", "x", "buffers"], "buffers"),  # argparse's prefix of --tree
        (["--version"], None),
        (["-h"], None),
        (["--", "dump"], "dump"),
        ([], None),
    ],
)
def test_find_command_skips_root_options_and_their_values(argv: list[str], command: str | None) -> None:
    assert find_command(argv) == command
