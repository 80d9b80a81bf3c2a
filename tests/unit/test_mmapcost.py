"""mmapcost and `dmabuf-inspect bench` without dma-bufs: sizes, statistics, baselines, JSON shape."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jsonschema
import pytest
from bench_cli_args import bench_args

from dmabuf_inspect.bench import mmapcost
from dmabuf_inspect.cli.commands import bench
from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError, UsageError


@pytest.mark.parametrize(
    ("text", "size"),
    [("4K", 4096), ("64k", 65536), ("1M", 1 << 20), ("16MiB", 16 << 20), ("64M", 64 << 20), ("8192", 8192)],
)
def test_parse_size(text: str, size: int) -> None:
    assert mmapcost.parse_size(text) == size


@pytest.mark.parametrize("text", ["3K", "0", "-4K", "4X", "", "1.5M", "K"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        mmapcost.parse_size(text)


def test_parse_sizes() -> None:
    assert mmapcost.parse_sizes("4K, 1M,") == (4096, 1 << 20)
    with pytest.raises(UsageError):
        mmapcost.parse_sizes(" , ")


def test_spread() -> None:
    s = mmapcost.Spread.of([5, 1, 3, 2, 4])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.n) == (3, 2, 4, 1, 5, 5)
    one = mmapcost.Spread.of([7])
    assert (one.median, one.q1, one.q3, one.n) == (7, 7, 7, 1)
    with pytest.raises(ValueError):
        mmapcost.Spread.of([])


def test_blocks_cover_256_kib_and_the_best_of_k_is_kept() -> None:
    assert mmapcost.passes_for(4096) == 64
    assert mmapcost.passes_for(64 << 10) == 4
    assert mmapcost.passes_for(64 << 20) == 1
    assert mmapcost.best_of(16 << 20) == 3 and mmapcost.best_of(64 << 20) == 2
    assert [mmapcost.touch_maps(s) for s in (4096, 256 << 10, 1 << 20, 16 << 20, 64 << 20)] == [16, 16, 4, 2, 2]


def _pass(read: float, touch: float, anon_read: float, *, error: str | None = None) -> list[dict[str, object]]:
    """One made-up pass over two targets (a dma-buf, then anon) at 4 KiB."""
    dmabuf = {
        "figures": {
            "mmap_ns": 10.0,
            "first_touch_ns_per_page": touch,
            "write_mib_s": None,
            "read_mib_s": read,
            "sync_pair_ns": 5.0,
        },
        "error": None,
    }
    anon = {
        "figures": {
            "mmap_ns": 20.0,
            "first_touch_ns_per_page": 100.0,
            "write_mib_s": 7.0,
            "read_mib_s": anon_read,
            "sync_pair_ns": None,
        },
        "error": None,
    }
    return [
        {
            "exporter": "udmabuf",
            "exporter_class": "udmabuf",
            "error": None,
            "sizes": {"4096": {"error": error} if error else dmabuf},
        },
        {"exporter": None, "exporter_class": None, "error": None, "sizes": {"4096": anon}},
    ]


def test_a_repeat_keeps_the_best_of_its_passes_and_ratios_stay_within_a_pass() -> None:
    specs = [mmapcost._Spec("udmabuf", "dmabuf"), mmapcost._Spec("anon", "baseline")]
    passes = [
        _pass(100.0, 50.0, 200.0),
        _pass(60.0, 80.0, 100.0),  # repeat 1: a slow process second
        _pass(90.0, 55.0, 180.0),
        _pass(0.0, 0.0, 0.0, error="allocation failed"),  # repeat 2
        _pass(50.0, 90.0, 100.0),
        _pass(110.0, 45.0, 220.0),  # repeat 3: a slow process first
    ]
    u, anon = mmapcost._aggregate(specs, (4096,), passes, 2)
    (s,) = u.sizes
    assert s.read_mib_s is not None and (s.read_mib_s.n, s.read_mib_s.median) == (3, 100.0)  # 100, 90, 110
    assert s.first_touch_ns_per_page is not None and s.first_touch_ns_per_page.median == 50.0  # 50, 55, 45
    assert s.write_mib_s is None and s.sync_pair_ns is not None and s.sync_pair_ns.median == 5.0
    assert s.error == "allocation failed"  # said, though the other passes measured it
    (rel,) = s.relative
    assert rel.baseline == "anon" and rel.read_mib_s is not None
    assert rel.read_mib_s.n == 5 and rel.read_mib_s.median == 0.5  # per pass: .5 .6 .5 .5 .5
    assert anon.sizes[0].read_mib_s is not None and anon.sizes[0].read_mib_s.median == 200.0
    assert anon.sizes[0].relative == ()


def test_worker_processes_measure_and_report_how_many() -> None:
    report = mmapcost.run_bench(sizes=(4096,), repeat=2, processes=2)
    doc = report_json(report)
    assert doc["processes"] == 2 and doc["repeat"] == 2
    for t in report.targets:
        (s,) = t.sizes
        assert s.error is None and s.read_mib_s is not None and s.read_mib_s.n == 2
    assert any("fresh worker process" in note for note in report.notes)


def test_a_failing_worker_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(DmabufInspectError, match=r"^bench worker exited with status 1: no message$"):
        mmapcost.run_bench(sizes=(4096,), repeat=1, processes=1)
    with pytest.raises(UsageError):
        mmapcost.run_bench(sizes=(4096,), processes=-1)


def test_baselines_are_measured_and_match_the_schema() -> None:
    report = mmapcost.run_bench(sizes=(4096, 64 << 10), repeat=3)
    assert [t.target for t in report.targets] == ["anon", "memfd"]
    for t in report.targets:
        assert t.kind == "baseline" and t.exporter is None and t.error is None
        assert [s.size_bytes for s in t.sizes] == [4096, 64 << 10]
        for s in t.sizes:
            assert s.error is None and s.sync_pair_ns is None
            for spread in (s.mmap_ns, s.first_touch_ns_per_page, s.write_mib_s, s.read_mib_s):
                assert spread is not None and spread.n == 3
                assert 0 < spread.min <= spread.q1 <= spread.median <= spread.q3 <= spread.max
    doc = report_json(report)
    assert doc["schema"] == "dmabuf-inspect-bench/1" and doc["page_size"] == os.sysconf("SC_PAGE_SIZE")


def report_json(report: mmapcost.BenchReport) -> dict[str, object]:
    doc = json.loads(json.dumps(mmapcost.report_to_dict(report)))
    with open(mmapcost.schema_path()) as f:
        jsonschema.validate(doc, json.load(f))
    assert isinstance(doc, dict)
    return doc


def test_measure_fd_refuses_a_non_dmabuf() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(NotADmabufError):
            mmapcost.measure_fd(r, None, 1)
    finally:
        os.close(r)
        os.close(w)


def test_missing_devices_are_reported_per_target(tmp_path: Path) -> None:
    report = mmapcost.run_bench(
        exporters=["udmabuf", "system"], sizes=(4096,), repeat=1, dev_root=str(tmp_path), baselines=()
    )
    u, s = report.targets
    assert u.error is not None and u.error.startswith(f"Opening {tmp_path}/udmabuf: No such file")
    assert s.error is not None and s.error.startswith("Opening dma-buf heap system")
    assert u.sizes == () and s.sizes == ()
    report_json(report)


def test_bench_command_without_dmabufs_fails_with_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.run(bench_args(tmp_path, size="4K", repeat=1))
    out, err = capsys.readouterr()
    assert rc == 1
    assert "udmabuf  (exp_name -, class -)" in out and "not measured: Opening" in out
    assert "anon  (baseline)" in out and "memfd  (baseline)" in out
    assert "4 KiB" in out
    assert "no dma-buf could be measured" in err


def test_bench_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.run(bench_args(tmp_path, size="4K", repeat=1, json=True, exporter="udmabuf"))
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [t["target"] for t in doc["targets"]] == ["udmabuf", "anon", "memfd"]
    with open(mmapcost.schema_path()) as f:
        jsonschema.validate(doc, json.load(f))


def test_bench_command_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        bench.run(bench_args(tmp_path, size="3K"))
    with pytest.raises(UsageError):
        bench.run(bench_args(tmp_path, exporter=" , "))
    with pytest.raises(UsageError):
        bench.run(bench_args(tmp_path, size="4K", repeat=0, exporter="udmabuf"))
