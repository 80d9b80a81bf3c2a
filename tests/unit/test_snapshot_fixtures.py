"""Reading each fixture tree through the root options gives exactly what the tree holds.

The expectations are written by hand in fixture_expectations.py, from each tree's scenario.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fixture_expectations import EXPECTED
from paths import FIXTURES

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.jsonout import load_schema, snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect

FIXTURES = FIXTURES
KEYED = ["k5.10-sysfs", "k6.12", "k7.3", "no-dmabufs", "hostile-links"]


def snap_of(name: str) -> Snapshot:
    return collect(Roots.from_tree(str(FIXTURES / name)))


@pytest.mark.parametrize("name", KEYED)
def test_buffers_holders_and_totals_are_exactly_the_trees(name: str) -> None:
    want = EXPECTED[name]
    snap = snap_of(name)
    got = {
        b.inode: {
            "size_bytes": b.size_bytes,
            "exporter": b.exporter,
            "class": b.exporter_class,
            "name": b.name,
            "count": b.count,
            "holders": {h.pid: (h.fds, h.maps, h.mapped_bytes) for h in b.holders},
            "attachments": b.attachments,
            "fences": len(b.fences),
            "kernel_refs": b.kernel_refs,
        }
        for b in snap.buffers
    }
    assert got == want["buffers"]
    t = snap.totals
    assert {
        "buffers": t.buffers,
        "bytes": t.bytes,
        "userspace_bytes": t.userspace_bytes,
        "kernel_only_bytes": t.kernel_only_bytes,
    } == want["totals"]


@pytest.mark.parametrize("name", KEYED)
def test_processes_rss_and_pss(name: str) -> None:
    want = EXPECTED[name]["processes"]
    got = {
        p.pid: {
            "comm": p.comm,
            "cmdline": p.cmdline,
            "uid": p.uid,
            "ppid": p.ppid,
            "buffers": p.buffers,
            "rss_bytes": p.rss_bytes,
            "pss_bytes": p.pss_bytes,
        }
        for p in snap_of(name).processes
    }
    assert got == want


@pytest.mark.parametrize("name", [n for n in KEYED if n != "hostile-links"] + ["k4.19-legacy"])
def test_sources_kernel_and_devices(name: str) -> None:
    want = EXPECTED[name]
    snap = snap_of(name)
    assert snap.kernel == want["kernel"]
    assert {k for k, v in snap.sources.items() if v == "ok"} == want["sources_ok"]
    assert all(v.startswith("unavailable: ") for k, v in snap.sources.items() if k not in want["sources_ok"])
    assert tuple(sorted(h.name for h in snap.heaps)) == want["heaps"]
    assert snap.udmabuf is not None
    assert (snap.udmabuf.present, snap.udmabuf.size_limit_mb, snap.udmabuf.list_limit) == want["udmabuf"]


def test_legacy_tree_lists_bufinfo_buffers_and_says_fds_cannot_be_joined() -> None:
    want = EXPECTED["k4.19-legacy"]
    snap = snap_of("k4.19-legacy")
    listed = [(b.size_bytes, b.exporter, b.count, b.attachments, len(b.fences)) for b in snap.buffers]
    expected = [
        (e["size_bytes"], e["exporter"], e["count"], e["attachments"], e["fences"]) for e in want["bufinfo_entries"]
    ]
    assert sorted(listed) == sorted(expected)
    assert all(b.kernel_refs is None and not b.holders for b in snap.buffers)
    assert snap.totals.buffers == want["totals"]["buffers"]
    assert snap.totals.bytes == want["totals"]["bytes"]
    assert snap.totals.kernel_only_bytes is None
    legacy = {e.pid: e.error for e in snap.errors if "before 5.3" in e.error}
    assert set(legacy) == set(want["dmabuf_fds"])
    for pid, fds in want["dmabuf_fds"].items():
        assert legacy[pid].startswith(f"{len(fds)} dma-buf fd(s) ({', '.join(map(str, fds))})")


@pytest.mark.parametrize("name", [*KEYED, "k4.19-legacy"])
def test_dump_validates_against_the_schema(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", str(FIXTURES / name), "dump", "-q"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema())
    assert doc == json.loads(json.dumps(snapshot_to_dict(snap_of(name)) | {"taken_at": doc["taken_at"]}))


def test_json_keeps_hostile_names_exact() -> None:
    doc = snapshot_to_dict(snap_of("k7.3"))
    named = [b for b in doc["buffers"] if b.get("name_hex")]
    assert len(named) == 1
    raw = bytes.fromhex(named[0]["name_hex"])
    assert raw.decode("utf-8", "surrogateescape") == EXPECTED["k7.3"]["buffers"][named[0]["inode"]]["name"]


@pytest.mark.parametrize("command", [["list"], ["buffers"], ["list", "--csv"], ["buffers", "--csv"]])
def test_tables_never_print_control_characters(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", str(FIXTURES / "k7.3"), *command]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b[31mred\\x1b[0m\\ttab\\nnl\\xff" in out


def test_list_filters_and_sorts(capsys: pytest.CaptureFixture[str]) -> None:
    tree = str(FIXTURES / "k6.12")
    assert main(["--tree", tree, "list", "--csv", "--sort", "pid"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [812, 1204, 1350]
    assert main(["--tree", tree, "list", "--csv", "--exporter", "udmabuf"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [(r.split(",")[0], r.split(",")[4]) for r in rows] == [("1204", "2097152")]
    assert main(["--tree", tree, "buffers", "--csv", "--pid", "1350"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(int(r.split(",")[0]) for r in rows) == [30003, 30004]
