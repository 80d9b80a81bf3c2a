"""history/docdiff.py and `dmabuf-inspect diff`: new, gone and re-held buffers, per-process
deltas that never merge a pid reused across a restart, --fail-on-growth, captures, the schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from history_fakes import snapshot
from paths import FIXTURES

from dmabuf_inspect import schemas
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.history.docdiff import DocumentError, diff_sides, side_from_document, side_from_snapshot
from dmabuf_inspect.scan.jsonout import snapshot_to_dict

KiB = 1024
SIZES = {1: 4 * KiB, 2: 64 * KiB, 3: 1024 * KiB, 4: 8 * KiB, 5: 16 * KiB}


def doc_of(**kw: Any) -> dict[str, Any]:
    d = snapshot_to_dict(snapshot(**kw))
    for p, want in zip(d["processes"], snapshot(**kw).processes, strict=True):
        p.setdefault("start_ticks", want.start_ticks)  # until every dump carries it
    return d


def check(doc: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator(schemas.load(schemas.DIFF)).validate(doc)
    return doc


def test_new_gone_changed_and_kernel_only() -> None:
    before = doc_of(held={(10, 1, "comp"): [1, 2], (11, 5, "client"): [3]}, sizes=SIZES)
    after = doc_of(
        held={(10, 1, "comp"): [1], (11, 5, "client"): [3, 2], (12, 9, "new"): [4]}, sizes=SIZES, kernel_only=[5]
    )
    d = check(diff_sides(side_from_document(before), side_from_document(after)))
    assert [b["inode"] for b in d["new"]] == [5, 4]
    assert d["gone"] == []
    (changed,) = d["changed"]
    assert changed["inode"] == 2 and [h["pid"] for h in changed["holders_before"]] == [10]
    assert [h["pid"] for h in changed["holders"]] == [11]
    assert [(b["inode"], b["was"]) for b in d["new_kernel_only"]] == [(5, "new")]
    assert d["delta_bytes"] == 24 * KiB and d["growth_bytes"] == 24 * KiB and d["delta_buffers"] == 2
    assert d["delta_kernel_only_bytes"] == 16 * KiB
    deltas = {p["pid"]: p["delta_bytes"] for p in d["processes"]}
    assert deltas == {11: 64 * KiB, 12: 8 * KiB, 10: -64 * KiB}


def test_a_buffer_let_go_by_its_last_process_is_new_kernel_only() -> None:
    before = doc_of(held={(10, 1, "a"): [1, 2]}, sizes=SIZES)
    after = doc_of(held={(10, 1, "a"): [1]}, sizes=SIZES, kernel_only=[2])
    d = check(diff_sides(side_from_document(before), side_from_document(after)))
    assert [(b["inode"], b["was"]) for b in d["new_kernel_only"]] == [(2, "held")]
    assert d["growth_bytes"] == 0


def test_a_restart_under_the_same_pid_is_not_merged() -> None:
    before = doc_of(held={(42, 1000, "server"): [1, 2]}, sizes=SIZES)
    after = doc_of(held={(42, 2000, "server"): [1, 2]}, sizes=SIZES)
    d = check(diff_sides(side_from_document(before), side_from_document(after)))
    rows = sorted((p["start_ticks"], p["in_before"], p["in_after"], p["delta_bytes"]) for p in d["processes"])
    assert rows == [(1000, True, False, -68 * KiB), (2000, False, True, 68 * KiB)]
    assert [b["inode"] for b in d["changed"]] == [2, 1]  # held by another process now
    assert d["delta_bytes"] == 0


def test_documents_without_start_ticks_fall_back_to_comm() -> None:
    before = doc_of(held={(42, 1000, "server"): [1]}, sizes=SIZES)
    after = doc_of(held={(42, 2000, "other"): [1]}, sizes=SIZES)
    for d in (before, after):
        for p in d["processes"]:
            del p["start_ticks"]
    d = check(diff_sides(side_from_document(before), side_from_document(after)))
    assert len(d["processes"]) == 2
    same = doc_of(held={(42, 1000, "server"): [1]}, sizes=SIZES)
    del same["processes"][0]["start_ticks"]
    assert diff_sides(side_from_document(before), side_from_document(same))["processes"] == []


def test_not_a_dump() -> None:
    with pytest.raises(DocumentError, match="not a `dmabuf-inspect dump`"):
        side_from_document({"schema": "dmabuf-inspect-report/1"})
    with pytest.raises(DocumentError, match="missing or wrong"):
        side_from_document({"schema": "dmabuf-inspect/1", "buffers": [{}], "processes": [], "totals": {}})


def write(tmp_path: Any, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_fail_on_growth_exit_codes(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", doc_of(held={(10, 1, "a"): [1]}, sizes=SIZES))
    b = write(tmp_path, "b.json", doc_of(held={(10, 1, "a"): [1, 2]}, sizes=SIZES))
    assert main(["diff", a, a, "--fail-on-growth", "0"]) == 0
    assert main(["diff", a, b, "--fail-on-growth", "0"]) == 3
    assert "grew by 64.0 KiB" in capsys.readouterr().err
    assert main(["diff", a, b, "--fail-on-growth", "64K"]) == 0
    assert main(["diff", a, b, "--fail-on-growth", "63K"]) == 3
    assert main(["diff", b, a, "--fail-on-growth", "0"]) == 0  # shrinking is no growth
    assert main(["diff", a, b]) == 0


def test_diff_cli_errors(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", doc_of(held={(10, 1, "a"): [1]}, sizes=SIZES))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["diff", a, str(bad)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["diff", a, str(tmp_path / "missing.json")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["diff", a, a, "--fail-on-growth", "lots"])
    assert exc.value.code == 2


def test_diff_of_two_captures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(FIXTURES / "k6.12"), str(FIXTURES / "k7.3"), "--json"]) == 0
    d = check(json.loads(capsys.readouterr().out))
    assert {b["inode"] for b in d["gone"]} == {30001, 30002, 30003, 30004, 30005}
    assert d["before"]["kernel"].startswith("6.12") and d["after"]["kernel"].startswith("7.3")


def test_a_capture_against_its_own_dump_is_empty(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", str(FIXTURES / "k6.12"), "dump"]) == 0
    dump = write(tmp_path, "d.json", json.loads(capsys.readouterr().out))
    assert main(["diff", str(FIXTURES / "k6.12"), dump, "--json", "--fail-on-growth", "0"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["new"], d["gone"], d["changed"], d["processes"]) == ([], [], [], [])


def test_side_from_snapshot_carries_start_ticks() -> None:
    side = side_from_snapshot(snapshot(held={(10, 77, "a"): [1]}, sizes=SIZES))
    assert side.buffers[1].holders[0].start_ticks == 77
