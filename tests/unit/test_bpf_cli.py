"""`dmabuf-inspect bpf`: its usage errors and one-line refusals, on any machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import FIXTURES

from dmabuf_inspect.cli.main import main


def test_bpf_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bpf"])
    assert exited.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--tree", str(FIXTURES / "k6.12"), "bpf", "status"],
        ["bpf", "--tree", str(FIXTURES / "k6.12"), "status"],
        ["bpf", "status", "--tree", str(FIXTURES / "k6.12")],  # after the action too, as after any command
        ["bpf", "unpin", "/sys/fs/bpf/x", "--tree", str(FIXTURES / "k6.12")],
    ],
)
def test_bpf_refuses_a_captured_tree(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "dmabuf-inspect: bpf works on the running kernel only, not on a captured tree"
    )


@pytest.mark.parametrize("mode", ["999", "rw", "01000"])
def test_pin_mode_must_be_an_octal_file_mode(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bpf", "pin", "--mode", mode, "/sys/fs/bpf/x"])
    assert exited.value.code == 2
    assert f"argument --mode: {mode!r} is no" in capsys.readouterr().err


def test_unpin_leaves_a_file_off_bpffs_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0")
    assert main(["bpf", "unpin", str(victim)]) == 1
    assert capsys.readouterr().err.strip() == f"dmabuf-inspect: {victim} is not on bpffs: not a pin, left alone"
    assert victim.read_text() == "root:x:0:0"
    assert main(["bpf", "unpin", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip() == f"dmabuf-inspect: nothing pinned at {tmp_path / 'missing'}"


def test_pin_off_bpffs_says_where_to_mount_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bpf", "pin", str(tmp_path / "dmabuf" / "iter")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "Traceback" not in err
    if os.geteuid() == 0:
        assert err == f"dmabuf-inspect: bpffs not mounted at {tmp_path} (mount -t bpf bpf /sys/fs/bpf)"
    else:
        assert err == "dmabuf-inspect: needs CAP_BPF and CAP_PERFMON (root)"
    assert not (tmp_path / "dmabuf").exists()


def test_status_prints_one_line_per_part(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bpf", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:16].strip() for line in lines][:4] == [
        "privileges",
        "dma-buf iterator",
        "task iterators",
        "task iterator",
    ]
    assert all(line[16:18] == "  " and line[18:] for line in lines)


# --- the scan's BPF options: --no-bpf and --bpf-iter, before or after the command ----------------------


def _parsed(argv: list[str]) -> tuple[bool, str | None]:
    from dmabuf_inspect.cli.main import _roots, parse

    args = parse(argv)
    roots = _roots(args)
    return roots.bpf, roots.bpf_iter


def test_no_bpf_before_or_after_the_command(tmp_path: Path) -> None:
    assert _parsed(["dump"]) == (True, None)
    assert _parsed(["--no-bpf", "dump"]) == (False, None)
    assert _parsed(["dump", "--no-bpf"]) == (False, None)
    pin = tmp_path / "pin"
    pin.write_bytes(b"")
    assert _parsed(["--bpf-iter", str(pin), "list"]) == (True, str(pin))  # its value is no command
    assert _parsed(["list", f"--bpf-iter={pin}"]) == (True, str(pin))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dump", "--bpf-iter", "/nonexistent/pin"], "--bpf-iter /nonexistent/pin: no such file"),
        (["dump", "--bpf-iter", "/"], "--bpf-iter /: not a pinned iterator"),
        (["dump", "--bpf-iter", ""], "--bpf-iter : not a pinned iterator"),
        (["--bpf-iter", "/etc/hostname", "dump", "--bpf-iter", "/etc/os-release"], "--bpf-iter given twice"),
        (["--tree", str(FIXTURES / "k7.3"), "dump", "--bpf-iter", "/etc/hostname"], "a capture (--tree) keeps"),
    ],
)
def test_bad_bpf_options_are_one_line_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_no_bpf_reads_a_tree_without_its_captured_iterator(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["--tree", str(FIXTURES / "k7.3"), "dump", "--no-bpf"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sources"]["bpf"] == doc["sources"]["bpf_holders"] == "unavailable: turned off (--no-bpf)"


def test_dump_reads_the_pin_it_is_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On this machine's live /proc: a file in Android's format stands for a pin."""
    import json

    import jsonschema

    from dmabuf_inspect import schemas

    pin = tmp_path / "pin"
    pin.write_bytes(b"987654321\n4096\nfrom\na pin\nsystem\n")
    assert main(["dump", "--bpf-iter", str(pin), "--debugfs-root", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))  # size_source "bpf" is in the schema
    assert doc["sources"]["bpf"] == "ok"
    (b,) = [b for b in doc["buffers"] if b["inode"] == 987654321]
    assert (b["size_bytes"], b["exporter"], b["name"], b["size_source"], b["holders"]) == (
        4096,
        "system",
        "from\na pin",
        "bpf",
        [],
    )
