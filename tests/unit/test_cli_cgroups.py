"""Per-cgroup totals joined into the scan, `capture`, the JSON, `list --by`, `heaps` and the
metrics (issue 15, phase 2). On fixtures/cgroups-services and cgroups-hostile every figure is the
hand-computed one of tests/support/cgroup_expectations.py; a buffer shared by cgroups is counted
once in each and flagged."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cgroup_expectations import HOSTILE, HOSTILE_COMM, MIB, SERVICES, Cg
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_inspect import schemas
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.metrics.collector import UNKNOWN_CGROUP, exposition
from dmabuf_inspect.metrics.options import MetricOptions
from dmabuf_inspect.metrics.source import Observation, observe
from dmabuf_inspect.model import Process, Snapshot
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import human_bytes

SERVICES_TREE = str(FIXTURES / "cgroups-services")
HOSTILE_TREE = str(FIXTURES / "cgroups-hostile")
K612 = str(FIXTURES / "k6.12")
BAD_PATH = "/system.slice/bad\n0::\udcff.service"
SERVICE_PATHS = {
    500: "/system.slice/camera-daemon.service",
    501: "/system.slice/camera-daemon.service",
    900: "/user.slice/user-1000.slice/session-2.scope",
    1100: "/user.slice/user-1000.slice/user@1000.service/session.slice/pipewire.service",
    1500: SERVICES[1].path,
}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _snap(tree: str, **kw: bool) -> Snapshot:
    return collect(Roots.from_tree(tree), **kw)


# ---- model and scan --------------------------------------------------------------------------------------


def test_the_model_has_cgroup_and_mem_accounting_unknown_by_default() -> None:
    p = Process(1, 0, "c", "", 0, "u", 0, 0, 0)
    assert p.cgroup is None
    assert Snapshot("k", 0.0, {}, (), (), _snap(K612).totals, ()).mem_accounting is None


def test_the_scan_reads_each_process_cgroup_when_asked() -> None:
    snap = _snap(SERVICES_TREE, cgroups=True)
    assert {p.pid: p.cgroup for p in snap.processes} == SERVICE_PATHS
    assert snap.sources["cgroup"] == "ok"
    assert snap.mem_accounting is True


def test_the_scan_reads_no_cgroup_unless_asked() -> None:
    snap = _snap(SERVICES_TREE)
    assert all(p.cgroup is None for p in snap.processes)
    assert "cgroup" not in snap.sources
    assert snap.mem_accounting is True  # one read per scan: always


def test_hostile_cgroup_files() -> None:
    snap = _snap(HOSTILE_TREE, cgroups=True)
    got = {p.pid: p.cgroup for p in snap.processes}
    assert got[300] == BAD_PATH
    assert got[302] is None and got[303] is None  # v1 only; no file in the capture
    assert got[304] == HOSTILE[1].path  # " (deleted)" is not part of the path
    assert snap.mem_accounting is None  # 6.12: no such parameter
    assert snap.errors == _snap(HOSTILE_TREE).errors  # an unreadable cgroup is unknown, not a scan gap


def test_a_capture_without_cgroup_files_says_so() -> None:
    snap = _snap(K612, cgroups=True)
    assert all(p.cgroup is None for p in snap.processes)
    assert snap.sources["cgroup"].startswith("unavailable: ")


def test_a_cgroup_link_out_of_a_capture_is_refused_and_said(tmp_path: Path) -> None:
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(SERVICES_TREE, tree, symlinks=True)
    (tree / "proc/900/cgroup").unlink()
    (tree / "proc/900/cgroup").symlink_to("/proc/self/cgroup")
    snap = collect(Roots.from_tree(str(tree)), cgroups=True)
    assert {p.pid: p.cgroup for p in snap.processes}[900] is None
    assert [(e.pid, e.source, e.kind) for e in snap.errors] == [(900, "cgroup", "outside")]


# ---- capture ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tree", [SERVICES_TREE, HOSTILE_TREE])
def test_capture_keeps_cgroups_and_mem_accounting(tree: str, tmp_path: Path) -> None:
    from dmabuf_inspect.scan.capture import capture

    out = tmp_path / "c"
    capture(str(out), Roots.from_tree(tree))
    for pid_dir in (Path(tree) / "proc").iterdir():
        if (pid_dir / "cgroup").exists() and (out / "proc" / pid_dir.name).exists():
            assert (out / "proc" / pid_dir.name / "cgroup").read_bytes() == (pid_dir / "cgroup").read_bytes()
    assert not (out / "proc/303/cgroup").exists()  # none to copy (hostile): the process is still captured
    param = "sys/module/dma_heap/parameters/mem_accounting"
    assert (out / param).exists() == (Path(tree) / param).exists()
    again, before = _snap(str(out), cgroups=True), _snap(tree, cgroups=True)
    assert {p.pid: p.cgroup for p in again.processes} == {p.pid: p.cgroup for p in before.processes}
    assert again.mem_accounting == before.mem_accounting


# ---- JSON ------------------------------------------------------------------------------------------------


def _dump(capsys: pytest.CaptureFixture[str], tree: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_run(capsys, "--tree", tree, "dump", "-q"))
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    return doc


def _cg_of_json(entry: dict[str, Any]) -> Cg:
    path = entry["path"]
    if "path_hex" in entry:
        path = bytes.fromhex(entry["path_hex"]).decode("utf-8", "surrogateescape")
    return Cg(
        path,
        entry["unit"],
        entry["processes"],
        entry["buffers"],
        entry["bytes"],
        entry["pss_bytes"],
        entry["shared_buffers"],
        entry["shared_bytes"],
        tuple(entry["shared_inodes"]),
    )


@pytest.mark.parametrize(("tree", "want"), [(SERVICES_TREE, SERVICES), (HOSTILE_TREE, HOSTILE)])
def test_dump_has_the_hand_computed_cgroups(tree: str, want: list[Cg], capsys: pytest.CaptureFixture[str]) -> None:
    doc = _dump(capsys, tree)
    assert [_cg_of_json(e) for e in doc["cgroups"]] == want


def test_dump_has_each_process_cgroup_and_mem_accounting(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _dump(capsys, SERVICES_TREE)
    assert {p["pid"]: p["cgroup"] for p in doc["processes"]} == SERVICE_PATHS
    assert doc["mem_accounting"] is True and doc["sources"]["cgroup"] == "ok"
    hostile = _dump(capsys, HOSTILE_TREE)
    p300 = next(p for p in hostile["processes"] if p["pid"] == 300)
    assert p300["cgroup"] == "/system.slice/bad\n0::\ufffd.service"
    assert bytes.fromhex(p300["cgroup_hex"]) == b"/system.slice/bad\n0::\xff.service"
    assert all("cgroup_hex" not in p for p in hostile["processes"] if p["pid"] != 300)
    assert hostile["mem_accounting"] is None


def test_the_fast_writer_writes_what_json_dumps_does() -> None:
    from dmabuf_inspect.scan import jsonout

    for tree in (SERVICES_TREE, HOSTILE_TREE, K612):
        snap = _snap(tree, cgroups=True)
        out = io.StringIO()
        jsonout.write(snap, out)
        assert out.getvalue() == json.dumps(snapshot_to_dict(snap), separators=(",", ":")) + "\n"


def test_a_document_without_cgroups_read_has_no_cgroups_key() -> None:
    doc = snapshot_to_dict(_snap(SERVICES_TREE))
    assert "cgroups" not in doc and all(p["cgroup"] is None for p in doc["processes"])


def test_the_schema_checks_the_cgroups() -> None:
    doc = json.loads(json.dumps(snapshot_to_dict(_snap(SERVICES_TREE, cgroups=True))))
    schema = schemas.load(schemas.SNAPSHOT)
    jsonschema.validate(doc, schema)
    for key, bad in (("bytes", -1), ("path", 3), ("shared_inodes", ["x"])):
        broken = json.loads(json.dumps(doc))
        broken["cgroups"][0][key] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(doc))
    del broken["cgroups"][0]["shared_bytes"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(doc))
    broken["mem_accounting"] = "Y"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---- list --by -------------------------------------------------------------------------------------------


def _rows(out: str) -> list[list[str]]:
    return [re.split(r" {2,}", line.strip()) for line in out.split("\n\n", 1)[0].splitlines()]


def _shared(n: int, size: int) -> str:
    return "-" if not n else f"{human_bytes(size)} in {n} buffer{'s' if n != 1 else ''}"


@pytest.mark.parametrize(("tree", "want"), [(SERVICES_TREE, SERVICES), (HOSTILE_TREE, HOSTILE)])
def test_list_by_cgroup_is_the_hand_computed_table(
    tree: str, want: list[Cg], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "--tree", tree, "list", "--by", "cgroup")
    rows = _rows(out)
    assert rows[0] == ["CGROUP", "UNIT", "PROCS", "BUFS", "BYTES", "PSS", "SHARED"]
    expected = [
        [
            "(unknown)" if c.path is None else escape(c.path),
            "-" if c.unit is None else escape(c.unit),
            str(c.processes),
            str(c.buffers),
            human_bytes(c.bytes),
            human_bytes(c.pss_bytes),
            _shared(c.shared_buffers, c.shared_bytes),
        ]
        for c in want
    ]
    assert rows[1:] == expected
    assert "\n" not in "".join(r[0] for r in rows) and "\x1b" not in out


def test_list_by_cgroup_csv_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", SERVICES_TREE, "list", "--by", "cgroup", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "cgroup",
        "unit",
        "processes",
        "buffers",
        "bytes",
        "pss_bytes",
        "shared_buffers",
        "shared_bytes",
    ]
    got = [
        (r["cgroup"], int(r["processes"]), int(r["bytes"]), int(r["pss_bytes"]), int(r["shared_bytes"])) for r in rows
    ]
    assert got == [(c.path, c.processes, c.bytes, c.pss_bytes, c.shared_bytes) for c in SERVICES]


def test_list_by_user_and_comm(capsys: pytest.CaptureFixture[str]) -> None:
    users = _rows(_run(capsys, "--tree", SERVICES_TREE, "list", "--by", "user"))
    assert users[0] == ["USER", "PROCS", "BUFS", "BYTES", "PSS", "SHARED"]
    by_user = {r[0]: r for r in users[1:]}
    assert by_user["0"][1:4] == ["3", "5", human_bytes(23 * MIB + 64 * 1024)]
    assert by_user["1000"][5] == _shared(2, 20 * MIB)  # A and C, held by uid 0 too
    comms = _rows(_run(capsys, "--tree", HOSTILE_TREE, "list", "--by", "comm"))
    assert comms[0] == ["COMM", "PROCS", "BUFS", "BYTES", "PSS", "SHARED"]
    assert escape(HOSTILE_COMM) in [r[0] for r in comms[1:]]


def test_list_by_keeps_the_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """--pid keeps the groups of those processes; a buffer they share with another group is still
    flagged shared (900, in session-2.scope, holds C too)."""
    rows = _rows(_run(capsys, "--tree", SERVICES_TREE, "list", "--by", "cgroup", "--pid", "1500"))
    docker = SERVICES[1]
    assert rows[1:] == [
        [
            docker.path,
            docker.unit,
            "1",
            "3",
            human_bytes(docker.bytes),
            human_bytes(docker.pss_bytes),
            _shared(1, docker.shared_bytes),
        ]
    ]
    rows = _rows(_run(capsys, "--tree", SERVICES_TREE, "list", "--by", "user", "--exporter", "udmabuf"))
    assert [r[:4] for r in rows[1:]] == [["0", "1", "1", "2.0 MiB"]]  # B, held by 500 alone
    assert main(["--tree", SERVICES_TREE, "list", "--by", "cgroup", "--pid", "99999"]) == 1


def test_list_by_refuses_sort(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", SERVICES_TREE, "list", "--by", "cgroup", "--sort", "pid"]) == 2
    got = capsys.readouterr()
    assert got.out == ""
    assert got.err == ("dmabuf-inspect: --sort and --by cgroup cannot be combined: groups are listed largest first\n")


def test_list_by_cgroup_without_cgroup_files_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tree", K612, "list", "--by", "cgroup"]) == 0
    got = capsys.readouterr()
    assert [r[0] for r in _rows(got.out)[1:]] == ["(unknown)"]
    assert "cgroup" in got.err and "unknown" in got.err


# ---- heaps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "line", "value"),
    [
        (SERVICES_TREE, "mem_accounting: on", True),
        (HOSTILE_TREE, "mem_accounting: not in this capture", None),
    ],
)
def test_heaps_says_whether_mem_accounting_is_on(
    tree: str, line: str, value: bool | None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "--tree", tree, "heaps")
    assert any(x.startswith(line) for x in out.splitlines()), out
    doc = json.loads(_run(capsys, "--tree", tree, "heaps", "--json"))
    assert doc["mem_accounting"] is value
    assert _dump(capsys, tree)["mem_accounting"] is value


def test_heaps_says_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(SERVICES_TREE, tree, symlinks=True)
    (tree / "sys/module/dma_heap/parameters/mem_accounting").write_text("N\n")
    out = _run(capsys, "--tree", str(tree), "heaps")
    assert any(x.startswith("mem_accounting: off") for x in out.splitlines())


# ---- metrics ---------------------------------------------------------------------------------------------


def _samples(obs: Observation) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = exposition(obs, MetricOptions(per_process=True, per_cgroup=True)).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_observe_takes_cgroups_and_mem_accounting_from_the_scan() -> None:
    obs = observe(Roots.from_tree(SERVICES_TREE))
    assert obs.cgroup_paths() == {p.pid: p.cgroup for p in obs.snapshot.processes} == SERVICE_PATHS
    assert obs.mem_accounting is obs.snapshot.mem_accounting is True


def test_metrics_file_each_process_under_the_cgroup_the_scan_saw() -> None:
    """What the scan read is what the metrics say: a pid that exited and was reused after the scan
    is never filed under the new process's cgroup (nothing is read again)."""
    snap = _snap(SERVICES_TREE, cgroups=True)
    moved = snap._replace(
        processes=tuple(p._replace(cgroup="/as.scanned") if p.pid == 1100 else p for p in snap.processes)
    )
    samples = _samples(Observation(moved, 0.5))
    by_cgroup = {dict(k)["cgroup"]: v for k, v in samples["dmabuf_cgroup_bytes"].items()}
    assert by_cgroup["/as.scanned"] == 512 * 1024
    assert SERVICE_PATHS[1100] not in by_cgroup


@pytest.mark.parametrize(("tree", "want"), [(SERVICES_TREE, SERVICES), (HOSTILE_TREE, HOSTILE)])
def test_metrics_per_cgroup_are_the_hand_computed_ones(tree: str, want: list[Cg]) -> None:
    samples = _samples(observe(Roots.from_tree(tree)))
    for c in want:
        label = UNKNOWN_CGROUP if c.path is None else escape(c.path)
        (value,) = [v for k, v in samples["dmabuf_cgroup_bytes"].items() if dict(k)["cgroup"] == label]
        assert value == c.bytes
        (shared,) = [v for k, v in samples["dmabuf_cgroup_shared_bytes"].items() if dict(k)["cgroup"] == label]
        assert shared == c.shared_bytes
    assert samples["dmabuf_source_available"][(("source", "cgroup"),)] == 1


def test_metrics_say_cgroups_unavailable_where_none_could_be_read() -> None:
    samples = _samples(observe(Roots.from_tree(K612)))
    assert samples["dmabuf_source_available"][(("source", "cgroup"),)] == 0
