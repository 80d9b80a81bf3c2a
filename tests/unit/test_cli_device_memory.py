"""VFIO device memory in the CLI tables, the diff and the metrics (issue 16, phase 2): device
bytes are never shown as RAM, and outputs without device memory stay as they were. The tree is
tests/support/vfio_tree.py (the format the 7.3 lab printed)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import jsonschema
import pytest
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families
from vfio_tree import VFIO_CGROUPS, VfioCg, write_vfio_tree

from dmabuf_inspect import schemas
from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.metrics.collector import exposition
from dmabuf_inspect.metrics.options import MetricOptions
from dmabuf_inspect.metrics.source import observe
from dmabuf_inspect.model import DeviceMemory, Snapshot
from dmabuf_inspect.scan.jsonout import snapshot_to_dict
from dmabuf_inspect.scan.snapshot import collect
from dmabuf_inspect.units import human_bytes

K612 = str(FIXTURES / "k6.12")
KIB = 1024


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_vfio_tree(tmp_path_factory.mktemp("vfio-cli")))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _rows(out: str) -> list[list[str]]:
    return [re.split(r" {2,}", line.strip()) for line in out.split("\n\n", 1)[0].splitlines()]


# ---- list ------------------------------------------------------------------------------------------------


def test_list_shows_ram_in_rss_and_pss_and_device_memory_apart(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "list", "--sort", "pid")
    rows = _rows(out)
    assert rows[0][:7] == ["PID", "USER", "COMM", "BUFS", "RSS", "PSS", "DEV"]
    got = {r[0]: r[3:7] for r in rows[1:]}
    # 100: 501 (4 KiB, shared with 200) + 502 (12 KiB) on the device; 503 (8 KiB heap, shared) in RAM
    assert got["100"] == ["3", "8.0 KiB", "4.0 KiB", "16.0 KiB"]
    assert got["200"] == ["2", "8.0 KiB", "4.0 KiB", "4.0 KiB"]
    assert got["500"] == ["1", "0 B", "0 B", "64.0 KiB"]
    footer = out.split("\n\n")[1].strip()
    assert footer.endswith("; device memory (not RAM) 88.0 KiB in 5 buffers")


def test_list_csv_appends_device_columns(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "list", "--csv", "--sort", "pid")
    header = out.splitlines()[0].split(",")
    assert header[-2:] == ['"device_rss_bytes"', '"device_pss_bytes"']
    rows = {r["pid"]: r for r in csv.DictReader(io.StringIO(out))}
    # as in the JSON: rss_bytes and pss_bytes are all of it, device_* the part that is device memory
    assert (rows["100"]["rss_bytes"], rows["100"]["device_rss_bytes"], rows["100"]["device_pss_bytes"]) == (
        str(24 * KIB),
        str(16 * KIB),
        str(14 * KIB),
    )


def test_list_without_device_memory_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", K612, "list")
    assert _rows(out)[0] == ["PID", "USER", "COMM", "BUFS", "RSS", "PSS", "EXPORTERS", "CMDLINE"]
    assert "device memory" not in out
    csv_out = _run(capsys, "--tree", K612, "list", "--csv")
    assert "device" not in csv_out.splitlines()[0]


# ---- per cgroup (and user, comm) -------------------------------------------------------------------------


def _vfio_cg(entry: dict[str, object]) -> VfioCg:
    return VfioCg(*(entry[k] for k in VfioCg._fields))  # type: ignore[arg-type]


def test_cgroups_count_device_memory_apart(tree: str) -> None:
    from dmabuf_inspect.scan.cgroups import cgroup_totals, user_totals

    snap = collect(Roots.from_tree(tree), cgroups=True)
    rows = cgroup_totals(snap, {p.pid: p.cgroup for p in snap.processes})
    assert [VfioCg(*(getattr(r, k) for k in VfioCg._fields)) for r in rows] == VFIO_CGROUPS
    [root] = user_totals(snap)  # every process is uid 0: 88 KiB of device memory, 8 KiB of RAM
    assert (root.bytes, root.device_bytes, root.pss_bytes, root.device_pss_bytes) == (
        96 * KIB,
        88 * KIB,
        96 * KIB,
        88 * KIB,
    )


def test_dump_cgroups_have_their_device_memory(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "--tree", tree, "dump", "-q"))
    jsonschema.validate(doc, schemas.load(schemas.SNAPSHOT))
    assert [_vfio_cg(e) for e in doc["cgroups"]] == VFIO_CGROUPS
    broken = json.loads(json.dumps(doc))
    broken["cgroups"][0]["device_bytes"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schemas.load(schemas.SNAPSHOT))


def test_dump_cgroups_without_device_memory_say_zero(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "--tree", str(FIXTURES / "cgroups-services"), "dump", "-q"))
    assert {(e["device_bytes"], e["device_pss_bytes"]) for e in doc["cgroups"]} == {(0, 0)}


def test_list_by_cgroup_shows_ram_and_device_memory_apart(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "list", "--by", "cgroup")
    rows = _rows(out)
    assert rows[0] == ["CGROUP", "UNIT", "PROCS", "BUFS", "BYTES", "PSS", "DEV", "SHARED"]
    want = [
        [
            "(unknown)" if c.path is None else c.path,
            "-" if c.unit is None else c.unit,
            str(c.processes),
            str(c.buffers),
            human_bytes(c.bytes - c.device_bytes),
            human_bytes(c.pss_bytes - c.device_pss_bytes),
            human_bytes(c.device_bytes),
            "-" if not c.shared_buffers else f"{human_bytes(c.shared_bytes)} in {c.shared_buffers} buffers",
        ]
        for c in VFIO_CGROUPS
    ]
    assert rows[1:] == want
    assert "DEV is device memory (a PCI BAR exported by vfio-pci), never RAM" in out


def test_list_by_csv_appends_device_columns(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "list", "--by", "cgroup", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0])[-2:] == ["device_bytes", "device_pss_bytes"]
    got = [(int(r["bytes"]), int(r["pss_bytes"]), int(r["device_bytes"]), int(r["device_pss_bytes"])) for r in rows]
    assert got == [(c.bytes, c.pss_bytes, c.device_bytes, c.device_pss_bytes) for c in VFIO_CGROUPS]
    plain = _run(capsys, "--tree", str(FIXTURES / "cgroups-services"), "list", "--by", "cgroup", "--csv")
    assert "device" not in plain.splitlines()[0]
    assert "DEV" not in _rows(_run(capsys, "--tree", str(FIXTURES / "cgroups-services"), "list", "--by", "user"))[0]


# ---- buffers ---------------------------------------------------------------------------------------------


def test_buffers_name_the_device_or_say_unknown(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "buffers", "--sort", "inode")
    rows = _rows(out)
    at = rows[0].index("DEVICE")
    assert rows[0][: at + 1] == ["INODE", "SIZE", "EXPORTER", "CLASS", "DEVICE"]
    devices = {r[0]: r[at] for r in rows[1:]}
    assert devices == {
        "501": "0000:00:03.0",
        "502": "0000:00:03.0",
        "503": "-",  # a heap buffer: RAM
        "504": "unknown",
        "505": "unknown",
        "506": "unknown",
    }


def test_buffers_csv_has_the_device(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["inode"]: r for r in csv.DictReader(io.StringIO(_run(capsys, "--tree", tree, "buffers", "--csv")))}
    assert (rows["501"]["device"], rows["503"]["device"], rows["504"]["device"]) == ("0000:00:03.0", "", "unknown")


def test_the_exporter_table_marks_device_memory(tree: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", tree, "buffers")
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["EXPORTER", "CLASS", "BUFS", "BYTES", "USERSPACE", "KERNEL-ONLY", "MEMORY"]
    vfio = next(line for line in table if line.startswith("vfio_pci_core"))
    system = next(line for line in table if line.startswith("system"))
    assert vfio.endswith("device memory, not RAM") and "device" not in system


def test_buffers_without_device_memory_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--tree", K612, "buffers")
    assert "DEVICE" not in out and "MEMORY" not in out
    assert "device" not in _run(capsys, "--tree", K612, "buffers", "--csv").splitlines()[0]


def test_device_names_are_escaped(
    tree: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = collect(Roots.from_tree(tree))
    hostile = tuple(d._replace(pci_address="\x1b[2Jdev\n") for d in real.device_memory)

    def fake(*_a: object, **_kw: object) -> Snapshot:
        return real._replace(device_memory=hostile)

    monkeypatch.setattr("dmabuf_inspect.cli.filters.collect", fake)
    out = _run(capsys, "--tree", tree, "buffers")
    assert "\x1b" not in out and "\\x1b[2Jdev\\n" in out


# ---- diff ------------------------------------------------------------------------------------------------


def test_diff_has_the_device_memory_delta(tree: str) -> None:
    from dmabuf_inspect.history.docdiff import diff_sides, side_from_document, side_from_snapshot

    with_device = collect(Roots.from_tree(tree))
    without: Snapshot = with_device._replace(
        buffers=tuple(b for b in with_device.buffers if b.exporter_class != "vfio"),
        totals=with_device.totals._replace(device_buffers=0, device_bytes=0),
        device_memory=(),
    )
    doc = diff_sides(side_from_snapshot(without), side_from_snapshot(with_device))
    jsonschema.Draft202012Validator(schemas.load(schemas.DIFF)).validate(doc)
    assert (doc["before"]["device_bytes"], doc["after"]["device_bytes"], doc["delta_device_bytes"]) == (
        0,
        90112,
        90112,
    )
    old_doc = json.loads(json.dumps(snapshot_to_dict(without)))
    del old_doc["totals"]["device_bytes"]  # a dump from before device memory: none
    doc = diff_sides(side_from_document(old_doc), side_from_snapshot(with_device))
    assert doc["delta_device_bytes"] == 90112


def test_diff_text_says_device_memory_only_when_there_is_some(
    tree: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "vfio.json"
    dump.write_text(_run(capsys, "--tree", tree, "dump", "-q"))
    assert main(["diff", K612, str(dump)]) == 0
    out = capsys.readouterr().out
    assert "device memory (not RAM) 0 B -> 88.0 KiB (+88.0 KiB)" in out
    assert main(["diff", K612, K612]) == 0
    assert "device memory" not in capsys.readouterr().out


# ---- metrics ---------------------------------------------------------------------------------------------


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_count_device_memory_apart(tree: str) -> None:
    samples = _samples(exposition(observe(Roots.from_tree(tree)), MetricOptions(per_process=True)).decode())
    assert samples["dmabuf_device_bytes"][()] == 90112
    assert samples["dmabuf_device_buffers"][()] == 5
    p100 = (("comm", "p2p-app"), ("pid", "100"))
    assert samples["dmabuf_process_device_rss_bytes"][p100] == 16 * KIB
    assert samples["dmabuf_process_device_pss_bytes"][p100] == 14 * KIB
    assert samples["dmabuf_process_rss_bytes"][p100] == 24 * KIB  # all of it, as in the JSON


def test_metrics_per_cgroup_count_device_memory_apart(tree: str) -> None:
    samples = _samples(exposition(observe(Roots.from_tree(tree)), MetricOptions(per_cgroup=True)).decode())
    for c in VFIO_CGROUPS:
        key = (("cgroup", "(unknown)" if c.path is None else c.path), ("unit", c.unit or ""))
        got = tuple(
            samples[f"dmabuf_cgroup_{name}"][key] for name in ("bytes", "pss_bytes", "device_bytes", "device_pss_bytes")
        )
        assert got == (c.bytes, c.pss_bytes, c.device_bytes, c.device_pss_bytes)


def test_metrics_without_device_memory_say_zero() -> None:
    samples = _samples(exposition(observe(Roots.from_tree(K612))).decode())
    assert samples["dmabuf_device_bytes"][()] == 0 and samples["dmabuf_device_buffers"][()] == 0
    assert set(samples["dmabuf_process_device_rss_bytes"].values()) == {0}


def test_device_memory_entries_keep_their_shape() -> None:
    # the model the columns read: one DeviceMemory per device buffer, pci_address or "unknown"
    assert DeviceMemory(1, "unknown", None, (), "why").pci_address == "unknown"


def test_the_grafana_dashboard_shows_device_memory_apart() -> None:
    from paths import REPO

    dashboard = json.loads((REPO / "contrib" / "grafana-dmabuf.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "dmabuf_device_bytes" in exprs and "dmabuf_process_device_rss_bytes" in exprs
