"""--pid and --exporter of `list` and `buffers`: a comma list, any case, exporter or class, and a
filter that matches nothing says so and exits 1 (issue 12, item 3)."""

from __future__ import annotations

import pytest
from paths import FIXTURES

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import exporter_names, filter_miss_text, filter_snapshot

K612 = str(FIXTURES / "k6.12")


def _csv_first_column(out: str) -> list[int]:
    return [int(line.split(",")[0]) for line in out.splitlines()[1:]]


@pytest.mark.parametrize("command", ["list", "buffers"])
def test_a_pid_that_holds_nothing_says_so_and_exits_1(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, command, "--pid", "99999"]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.strip() == "dmabuf-inspect: no process 99999 holds dma-bufs"


@pytest.mark.parametrize("command", ["list", "buffers"])
def test_an_exporter_that_made_nothing_names_those_here(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, command, "--exporter", "nosuch"]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.strip() == (
        "dmabuf-inspect: no buffer from exporter 'nosuch'; exporters here: drm, system, udmabuf "
        "(classes: gpu-prime, heap, udmabuf)"
    )


def test_a_pid_and_an_exporter_that_each_match_but_not_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "list", "--pid", "812", "--exporter", "udmabuf"]) == 1
    assert capsys.readouterr().err.strip() == "dmabuf-inspect: process 812 holds no buffer from exporter 'udmabuf'"


def test_the_csv_of_a_filter_that_matches_nothing_exits_1_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "list", "--csv", "--pid", "99999"]) == 1
    assert capsys.readouterr().out == ""


def test_exporter_is_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "buffers", "--csv", "--exporter", "SYSTEM"]) == 0
    assert sorted(_csv_first_column(capsys.readouterr().out)) == [30002, 30004, 30005]


def test_exporter_takes_a_comma_list_of_names_and_classes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "buffers", "--csv", "--exporter", "Udmabuf, GPU-prime"]) == 0
    assert sorted(_csv_first_column(capsys.readouterr().out)) == [30001, 30003]
    assert main(["--tree", K612, "buffers", "--csv", "--exporter", "udmabuf", "--exporter", "heap"]) == 0
    assert sorted(_csv_first_column(capsys.readouterr().out)) == [30001, 30002, 30004, 30005]


def test_filter_recounts_rss_and_pss_over_the_kept_buffers() -> None:
    snap = collect(Roots.from_tree(K612))
    kept = filter_snapshot(snap, None, exporter_names(["udmabuf"]))
    assert [(p.pid, p.buffers, p.rss_bytes, p.pss_bytes) for p in kept.processes] == [(1204, 1, 2 << 20, 2 << 20)]
    both = filter_snapshot(snap, [1204, 812], None)
    assert {p.pid for p in both.processes} == {1204, 812}
    assert filter_snapshot(snap, None, None) is snap


def test_exporter_names_split_strip_and_fold() -> None:
    assert exporter_names(["udmabuf,SYSTEM", " Heap ,", "system"]) == ("udmabuf", "system", "heap")


def test_a_denied_pid_is_said_to_be_unreadable_not_empty() -> None:
    snap = collect(Roots.from_tree(K612))._replace(denied_pids=(1,))
    assert filter_miss_text(snap, [1], None) == "process 1 could not be read (permission denied)"
    assert filter_miss_text(snap, [812], None) is None
