"""Reading each fixture tree through the root options gives exactly what the tree holds.

The expectations are written by hand in fixture_expectations.py, from each tree's scenario.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fixture_expectations import EXPECTED, OUTSIDE_LINKS, OUTSIDE_REFUSED, OUTSIDE_REFUSED_ONE_OF
from paths import FIXTURES

from dmabuf_inspect import schemas
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Snapshot
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.notes import partial_notes
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
            "start_ticks": p.start_ticks,
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


def test_legacy_tree_never_shows_unjoined_fds_as_kernel_held() -> None:
    """Before 5.3 nothing ties an fd to a bufinfo object: the buffers' holders are unknown (not
    "the kernel"), and the processes are listed with the fds that could not be tied."""
    want = EXPECTED["k4.19-legacy"]
    snap = snap_of("k4.19-legacy")
    assert [(b.holders, b.holders_known, b.kernel_only, b.kernel_refs) for b in snap.buffers] == [
        ((), False, None, None)
    ] * 3
    assert {p.pid: p.unjoined_fds for p in snap.processes} == want["dmabuf_fds"]
    assert {p.pid: (p.comm, p.buffers, p.rss_bytes) for p in snap.processes} == {
        900: ("Xorg", 0, 0),
        1500: ("firefox-esr", 0, 0),
    }
    assert {(e.pid, e.kind) for e in snap.errors} == {(900, "unjoined"), (1500, "unjoined")}
    assert snap.totals.kernel_only_bytes is None
    assert partial_notes(snap) == [
        "3 dma-buf fds of 2 processes could not be tied to a buffer on this kernel: which buffers they hold, "
        "and which only the kernel holds, is unknown"
    ]


def _ambiguous_5_10(tmp_path: Path) -> str:
    """k5.10-sysfs plus buffer 2052, the twin of 2049 (udmabuf, 64 KiB, unnamed, count 1) that
    no process holds: fd 14 of pid 733 (fdinfo without ino:) may hold either."""
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "k5.10-sysfs", tree, symlinks=True)
    bufinfo = tree / "sys/kernel/debug/dma_buf/bufinfo"
    twin = (
        b"00065536\t00000002\t00080007\t00000001\tudmabuf\t00002052\t\n"
        b"\tAttached Devices:\nTotal 0 devices attached\n\n"
    )
    text = bufinfo.read_bytes()
    header_end = text.index(b"ino     \n") + len(b"ino     \n")
    bufinfo.write_bytes(text[:header_end] + twin + text[header_end:])
    (tree / "sys/kernel/dmabuf/buffers/2052").mkdir()
    (tree / "sys/kernel/dmabuf/buffers/2052/exporter_name").write_text("udmabuf\n")
    (tree / "sys/kernel/dmabuf/buffers/2052/size").write_text("65536\n")
    return str(tree)


def test_a_capture_fd_that_matches_two_buffers_is_unjoined_not_a_buffer_of_its_own(tmp_path: Path) -> None:
    snap = collect(Roots.from_tree(_ambiguous_5_10(tmp_path)))
    by_inode = {b.inode: b for b in snap.buffers}
    assert sorted(by_inode) == [2048, 2049, 2050, 2051, 2052]  # no stand-in buffer for fd 14 beside them
    for twin in (2049, 2052):
        b = by_inode[twin]
        assert (b.holders, b.holders_known, b.kernel_only, b.kernel_refs) == ((), False, None, None)
    assert by_inode[2051].kernel_only is True  # videobuf2: no unjoined fd is of its size and exporter
    assert {p.pid: p.unjoined_fds for p in snap.processes} == {540: (), 733: (14,)}
    assert [(e.pid, e.kind) for e in snap.errors] == [(733, "unjoined")]
    assert snap.totals.bytes == 6103040 + 65536
    assert snap.totals.kernel_only_bytes is None


def test_without_maps_mappings_are_unknown_not_the_kernels() -> None:
    """--no-maps: a count the fds do not account for may be mappings: kernel_refs is unknown, and a
    buffer held only by a mapping is not counted as kernel-only."""
    snap = collect(Roots.from_tree(str(FIXTURES / "k6.12")), include_maps=False)
    got = {b.inode: (b.kernel_refs, b.holders_known, b.kernel_only) for b in snap.buffers}
    assert got == {
        30001: (None, False, False),  # count 2: fd 7 and a mapping
        30002: (None, False, False),
        30003: (None, False, False),  # count 2: fd 5 and a kernel reference; which, unknown
        30004: (None, False, None),  # held only by mappings: not the kernel's
        30005: (None, False, None),
    }
    assert snap.totals.kernel_only_bytes is None
    assert snap.sources["maps"] == "unavailable: not requested"


def test_without_maps_fds_that_account_for_the_whole_count_are_exact() -> None:
    snap = collect(Roots.from_tree(str(FIXTURES / "k7.3")), include_maps=False)
    got = {b.inode: (b.kernel_refs, b.holders_known, b.kernel_only) for b in snap.buffers}
    assert got[40003] == (0, True, False)  # count 2 = fds 9 and 5


def test_a_buffer_only_mappings_show_is_as_large_as_its_farthest_mapped_byte(tmp_path: Path) -> None:
    """k6.12 without its bufinfo: 30004 is held by two mappings of pid 1350 only (0x4000 bytes at
    offset 0, 0xc000 at 0x4000), so nothing but the mappings tells its size and name."""
    tree = FIXTURES / "k6.12"
    roots = Roots(
        proc_root=str(tree / "proc"), sys_root=str(tree / "sys"), debugfs_root=str(tmp_path), dev_root=str(tree / "dev")
    )
    (mapped,) = [b for b in collect(roots).buffers if b.inode == 30004]
    assert (mapped.size_bytes, mapped.size_source, mapped.name) == (0x10000, "maps", "mmap-only")
    assert [(h.pid, h.fds, h.maps, h.mapped_bytes) for h in mapped.holders] == [(1350, (), 2, 0x10000)]


def test_hostile_links_are_said_to_lead_outside_never_denied(capsys: pytest.CaptureFixture[str]) -> None:
    tree = FIXTURES / "hostile-links"
    snap = snap_of("hostile-links")
    assert snap.denied_pids == ()
    assert {e.kind for e in snap.errors} == {"outside"}
    links = {os.path.relpath(e.error.split(" leads outside the capture", 1)[0], tree) for e in snap.errors}
    assert links <= OUTSIDE_LINKS.keys()
    assert len(links & OUTSIDE_REFUSED_ONE_OF) == 1 and links - OUTSIDE_REFUSED_ONE_OF == OUTSIDE_REFUSED
    assert len(snap.errors) == len(links) == 8  # one each, though 667's fd table and maps both lead out
    for e in snap.errors:
        assert e.error.endswith(f" (to {OUTSIDE_LINKS[os.path.relpath(e.error.split(' leads', 1)[0], tree)]})")
    assert main(["--tree", str(tree), "list"]) == 0
    err = capsys.readouterr().err
    assert "dmabuf-inspect: 8 links lead outside the capture and were not followed" in err
    assert "permission denied" not in err.lower()
    assert main(["--tree", str(tree), "dump"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {e["kind"] for e in doc["errors"]} == {"outside"} and doc["denied_pids"] == []


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
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    snap = collect(Roots.from_tree(str(FIXTURES / name)), cgroups=True)  # as `dump` scans
    assert doc == json.loads(json.dumps(snapshot_to_dict(snap) | {"taken_at": doc["taken_at"]}))


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
