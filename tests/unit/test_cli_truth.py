"""Every command says the same truth about holders that could not be seen (issue 12, items 4 and
5): fds not tied to a buffer (fixtures/k4.19-legacy), links out of a capture (hostile-links) and
mappings not read (`--no-maps` on k6.12) are never shown as the kernel's, in `list`, `buffers`,
their CSV, the exporter totals, `dump` and `capture`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest
from paths import FIXTURES

from dmabuf_inspect import schemas
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Buffer, Holder, Process, Snapshot, Totals
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.scan.views import ExporterTotal, exporter_totals

LEGACY = str(FIXTURES / "k4.19-legacy")
HOSTILE = str(FIXTURES / "hostile-links")
K612 = str(FIXTURES / "k6.12")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    assert main(list(argv)) == 0
    got = capsys.readouterr()
    return got.out, got.err


def _table(out: str) -> list[list[str]]:
    """The rows of the first table printed, split at runs of two spaces or more."""
    import re

    lines = out.split("\n\n", 1)[0].splitlines()
    return [re.split(r" {2,}", line.strip()) for line in lines]


# ---- buffers: HOLDERS --------------------------------------------------------------------------------


def test_legacy_buffers_are_never_shown_as_held_by_the_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", LEGACY, "buffers")
    rows = _table(out)[1:]
    assert len(rows) == 3
    assert "(kernel)" not in out
    assert all(row[-1] == "? (fds not tied)" for row in rows)


def test_legacy_buffers_csv_says_unknown_holders(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", LEGACY, "buffers", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["holders"] for r in rows] == ["? (fds not tied)"] * 3


def test_kernel_only_buffers_still_say_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", K612, "buffers", "--csv")
    holders = {r["inode"]: r["holders"] for r in csv.DictReader(io.StringIO(out))}
    assert holders["30005"] == "(kernel)"  # bufinfo read, every process read, maps read
    assert holders["30004"] == "1350:m2"


def _buf(inode: int, size: int, *pids: int, known: bool = True, exporter: str = "system") -> Buffer:
    holders = tuple(Holder(pid, (3,), 0, 0) for pid in pids)
    return Buffer(inode, size, "bufinfo", exporter, "heap", None, 1, holders, (), (), None, known)


def _snap(buffers: list[Buffer], **kw: object) -> Snapshot:
    total = sum(b.size_bytes for b in buffers)
    held = sum(b.size_bytes for b in buffers if b.holders)
    ko = total - held if all(b.kernel_only is not None for b in buffers) else None
    sources = {"fdinfo": "ok", "maps": "ok", "bufinfo": "ok"} | dict(kw.pop("sources", {}))  # type: ignore[call-overload]
    return Snapshot("k", 0.0, sources, tuple(buffers), (), Totals(len(buffers), total, held, ko), (), **kw)  # type: ignore[arg-type]


def test_unknown_holders_text_says_why() -> None:
    from dmabuf_inspect.scan.views import unknown_holders_text

    legacy = collect(Roots.from_tree(LEGACY))
    assert unknown_holders_text(legacy) == "? (fds not tied)"
    no_maps = collect(Roots.from_tree(K612), include_maps=False)
    assert unknown_holders_text(no_maps) == "? (maps not read)"
    assert unknown_holders_text(_snap([_buf(1, 10, known=False)], denied_pids=(7,))) == "? (processes unreadable)"
    assert unknown_holders_text(_snap([_buf(1, 10, known=False)])) == "?"


# ---- exporter totals ---------------------------------------------------------------------------------


def test_exporter_totals_count_only_known_kernel_only_buffers() -> None:
    snap = _snap(
        [_buf(1, 100), _buf(2, 10, 5), _buf(3, 1000, exporter="drm", known=False), _buf(4, 1, 6, exporter="drm")]
    )
    rows = {t.exporter: t for t in exporter_totals(snap)}
    assert rows["system"] == ExporterTotal("system", "heap", 2, 110, 10, 100)
    # one buffer of drm may be held by a process unseen: its kernel-only bytes are unknown
    assert rows["drm"] == ExporterTotal("drm", "heap", 2, 1001, 1, None)


def test_exporter_totals_on_the_legacy_tree_and_without_maps() -> None:
    assert all(t.kernel_only_bytes is None for t in exporter_totals(collect(Roots.from_tree(LEGACY))))
    rows = {t.exporter: t for t in exporter_totals(collect(Roots.from_tree(K612), include_maps=False))}
    # 30004 (system, held only by mappings) is not the kernel's: system's kernel-only is unknown
    assert rows["system"].kernel_only_bytes is None
    assert rows["udmabuf"].kernel_only_bytes == 0 and rows["drm"].kernel_only_bytes == 0
    with_maps = {t.exporter: t for t in exporter_totals(collect(Roots.from_tree(K612)))}
    assert with_maps["system"].kernel_only_bytes == 16 << 20


def test_buffers_exporter_table_marks_unknown_and_lower_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", LEGACY, "buffers")
    exporters = _table(out.split("\n\n", 1)[1])
    assert exporters[0] == ["EXPORTER", "CLASS", "BUFS", "BYTES", "USERSPACE", "KERNEL-ONLY"]
    assert exporters[1] == ["drm", "gpu-prime", "2", "12.0 MiB", "≥0 B", "?"]
    out, _ = _run(capsys, "--tree", K612, "buffers")
    exporters = _table(out.split("\n\n", 1)[1])
    assert exporters[1] == ["system", "heap", "3", "20.1 MiB", "4.1 MiB", "16.0 MiB"]


# ---- list ----------------------------------------------------------------------------------------------


def test_list_marks_processes_with_unjoined_fds_as_lower_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", LEGACY, "list", "--sort", "pid")
    rows = _table(out)
    assert rows[0][:6] == ["PID", "USER", "COMM", "BUFS", "RSS", "PSS"]
    assert [r[:6] for r in rows[1:]] == [
        ["900", "0", "Xorg", "0+1?", "?", "?"],
        ["1500", "1000", "firefox-esr", "0+2?", "?", "?"],
    ]
    assert "0 B" not in out.split("\n\n")[0]
    footer = out.split("\n\n")[1]
    assert footer.startswith("3 buffers, 12.6 MiB in all; held in userspace ?, kernel-only unknown")


def test_lower_bound_cells() -> None:
    from dmabuf_inspect.scan.views import buffers_cell, lower_bound_bytes_text

    p = Process(1, 0, "c", "", 0, "u", 2, 4096, 2048, unjoined_fds=(4, 5))
    assert buffers_cell(p) == "2+2?"
    assert lower_bound_bytes_text(p.rss_bytes, p) == "≥4.0 KiB"
    assert lower_bound_bytes_text(0, p) == "?"
    whole = Process(1, 0, "c", "", 0, "u", 2, 4096, 2048)
    assert (buffers_cell(whole), lower_bound_bytes_text(4096, whole)) == ("2", "4.0 KiB")


def test_list_csv_adds_unjoined_fds_only_when_there_are_some(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", LEGACY, "list", "--csv", "--sort", "pid")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["pid"], r["rss_bytes"], r["unjoined_fds"]) for r in rows] == [("900", "0", "1"), ("1500", "0", "2")]
    out, _ = _run(capsys, "--tree", K612, "list", "--csv")
    assert out.splitlines()[0] == '"pid","user","comm","bufs","rss_bytes","pss_bytes","exporters","cmdline"'


def test_list_footer_is_unchanged_where_everything_is_known(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run(capsys, "--tree", K612, "list")
    assert out.rstrip().endswith("5 buffers, 23.1 MiB in all; held in userspace 7.1 MiB, kernel-only 16.0 MiB")


# ---- JSON ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k6.12", "k4.19-legacy", "hostile-links"])
def test_dump_has_holders_known_and_unjoined_fds(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    snap = collect(Roots.from_tree(str(FIXTURES / name)))
    out, _ = _run(capsys, "--tree", str(FIXTURES / name), "dump", "-q")
    doc = json.loads(out)
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    assert {b["inode"]: b["holders_known"] for b in doc["buffers"]} == {b.inode: b.holders_known for b in snap.buffers}
    assert {p["pid"]: p["unjoined_fds"] for p in doc["processes"]} == {
        p.pid: list(p.unjoined_fds) for p in snap.processes
    }


def test_dump_of_the_legacy_tree_says_who_holds_what_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "--tree", LEGACY, "dump", "-q")[0])
    assert all(b["holders"] == [] and b["holders_known"] is False for b in doc["buffers"])
    assert {p["pid"]: p["unjoined_fds"] for p in doc["processes"]} == {900: [20], 1500: [45, 52]}
    assert doc["totals"]["kernel_only_bytes"] is None


def test_dump_without_maps_says_holders_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "--tree", K612, "dump", "-q", "--no-maps")[0])
    got = {b["inode"]: (b["holders_known"], b["kernel_refs"]) for b in doc["buffers"]}
    assert got[30004] == (False, None) and got[30005] == (False, None)
    assert doc["totals"]["kernel_only_bytes"] is None
    with_maps = json.loads(_run(capsys, "--tree", K612, "dump", "-q")[0])
    assert all(b["holders_known"] for b in with_maps["buffers"])


def test_schema_refuses_a_wrong_holders_known() -> None:
    doc = json.loads(json.dumps(snapshot_to_dict(collect(Roots.from_tree(K612)))))
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    doc["buffers"][0]["holders_known"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    doc = json.loads(json.dumps(snapshot_to_dict(collect(Roots.from_tree(K612)))))
    doc["processes"][0]["unjoined_fds"] = [-1]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))


# ---- capture ---------------------------------------------------------------------------------------------


def test_capture_says_which_processes_lead_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _run(capsys, "--tree", HOSTILE, "capture", str(tmp_path / "c"))
    assert (
        "dmabuf-inspect: 3 processes have links that lead outside the source capture and are not in the capture "
        "(pids 666, 667, 668)"
    ) in err
    assert "permission denied" not in err.lower() and "run as root" not in err


# ---- the same truth everywhere -------------------------------------------------------------------------


def test_every_command_agrees_on_the_legacy_tree(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "--tree", LEGACY, "dump", "-q")[0])
    listed = list(csv.DictReader(io.StringIO(_run(capsys, "--tree", LEGACY, "list", "--csv")[0])))
    buffers = list(csv.DictReader(io.StringIO(_run(capsys, "--tree", LEGACY, "buffers", "--csv")[0])))
    unjoined = {p["pid"]: len(p["unjoined_fds"]) for p in doc["processes"]}
    assert {int(r["pid"]): int(r["unjoined_fds"]) for r in listed} == unjoined
    assert not any(b["holders"] == "(kernel)" for b in buffers)
    assert not any(b["holders_known"] for b in doc["buffers"])
    out, _ = _run(capsys, "--tree", LEGACY, "buffers")
    assert "(kernel)" not in out


def test_list_shows_unjoined_processes_even_with_no_buffer_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kernel before 5.3 without debugfs: no buffer can be listed, yet two processes hold
    dma-buf fds. That is not "no dma-bufs found"."""
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(LEGACY, tree, symlinks=True)
    (tree / "sys/kernel/debug/dma_buf/bufinfo").unlink()
    out, _ = _run(capsys, "--tree", str(tree), "list", "--sort", "pid")
    assert "No dma-bufs found" not in out
    assert [r[3] for r in _table(out)[1:]] == ["0+1?", "0+2?"]
