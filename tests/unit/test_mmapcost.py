"""The bench without dma-bufs: the typed model, a turn's figures, worker passes, aggregation,
baselines, JSON shape, and `dmabuf-inspect bench` (sizes, refusals, the memory guard)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from bench_cli_args import bench_args
from bench_fakes import sample

from dmabuf_inspect import schemas
from dmabuf_inspect.bench import measure, runner
from dmabuf_inspect.bench.model import (
    BenchDocumentError,
    BenchReport,
    PassRequest,
    Spread,
    TargetPass,
    TargetSpec,
    pass_from_json,
    pass_to_json,
)
from dmabuf_inspect.cli.commands import alloc, bench
from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError, UsageError

OLD_CACHE = Path(__file__).parent / "data" / "bench-cache-1.json"
PAGE = measure.PAGE_SIZE


@pytest.fixture(autouse=True)
def plenty_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench command's memory guard sees 64 GiB available, whatever this machine has."""
    monkeypatch.setattr(bench, "read_memory", lambda: alloc.Memory(128 << 30, 64 << 30))


def report_json(report: BenchReport) -> dict[str, Any]:
    doc = json.loads(json.dumps(report.to_json()))
    jsonschema.validate(doc, schemas.load(schemas.BENCH))
    assert isinstance(doc, dict)
    return doc


# ---- statistics and the shape of a turn ------------------------------------------------------


def test_spread() -> None:
    s = Spread.of([5, 1, 3, 2, 4])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.n) == (3, 2, 4, 1, 5, 5)
    one = Spread.of([7])
    assert (one.median, one.q1, one.q3, one.n) == (7, 7, 7, 1)
    with pytest.raises(ValueError):
        Spread.of([])


def test_blocks_cover_256_kib_and_the_best_of_k_is_kept() -> None:
    assert measure.passes_for(4096) == 64
    assert measure.passes_for(64 << 10) == 4
    assert measure.passes_for(64 << 20) == 1
    assert measure.best_of(16 << 20) == 3 and measure.best_of(64 << 20) == 2
    assert [measure.touch_maps(s) for s in (4096, 256 << 10, 1 << 20, 16 << 20, 64 << 20)] == [16, 16, 4, 2, 2]


def test_a_turn_on_anonymous_memory_gives_every_figure_but_sync() -> None:
    s = measure.measure(-1, 4 * PAGE, anon=True, writable=True, sync=False)
    assert s.size_bytes == 4 * PAGE and s.error is None and s.figures is not None
    f = s.figures
    assert f.sync_pair_ns is None and f.write_mib_s is not None and f.write_mib_s > 0
    assert f.mmap_ns > 0 and f.first_touch_ns_per_page > 0 and f.read_mib_s > 0


# ---- aggregation -----------------------------------------------------------------------------


def _pass(read: float, touch: float, anon_read: float, *, error: str | None = None) -> list[TargetPass]:
    """One made-up pass over two targets (a dma-buf, then anon) at 4 KiB."""
    dmabuf = sample(4096, mmap_ns=10.0, touch_ns=touch, write_mib_s=None, read_mib_s=read, sync_ns=5.0)
    if error:
        dmabuf = type(dmabuf)(4096, None, error)
    anon = sample(4096, mmap_ns=20.0, touch_ns=100.0, write_mib_s=7.0, read_mib_s=anon_read)
    return [TargetPass("udmabuf", "udmabuf", None, (dmabuf,)), TargetPass(None, None, None, (anon,))]


def test_a_repeat_keeps_the_best_of_its_passes_and_ratios_stay_within_a_pass() -> None:
    specs = [TargetSpec("udmabuf", "dmabuf"), TargetSpec("anon", "baseline")]
    passes = [
        _pass(100.0, 50.0, 200.0),
        _pass(60.0, 80.0, 100.0),  # repeat 1: a slow process second
        _pass(90.0, 55.0, 180.0),
        _pass(0.0, 0.0, 0.0, error="allocation failed"),  # repeat 2
        _pass(50.0, 90.0, 100.0),
        _pass(110.0, 45.0, 220.0),  # repeat 3: a slow process first
    ]
    u, anon = runner.aggregate(specs, (4096,), passes, 2)
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


def _old_passes(k: float) -> list[TargetPass]:
    """The made-up pass from which the dict-based code wrote the newer run of bench-cache-1.json."""
    mib = 1 << 20
    enomem = (
        "Creating udmabuf (1048576 bytes at offset 0 of memfd 5): Cannot allocate memory (ENOMEM): "
        "the kernel could not pin the memfd's pages; free some memory or ask for less"
    )
    no_heap = (
        "Opening dma-buf heap no-such-heap (/dev/dma_heap/no-such-heap): No such file or directory (ENOENT): "
        "no heap no-such-heap in /dev/dma_heap (heaps here: system)"
    )

    def fig(size: int, touch: float, read: float, write: float | None, sync: float | None) -> Any:
        return sample(size, mmap_ns=4e4, touch_ns=touch, read_mib_s=read, write_mib_s=write, sync_ns=sync)

    sync_failed = fig(mib, 210.0, 1900.0, None, None)
    return [
        TargetPass(
            "udmabuf",
            "udmabuf",
            None,
            (fig(4096, 300.0 * k, 900.0, 400.0, 8000.0), type(sync_failed)(mib, None, enomem)),
        ),
        TargetPass(
            "udmabuf",
            "udmabuf",
            None,
            (
                fig(4096, 250.0, 950.0 * k, None, 7000.0),
                type(sync_failed)(mib, sync_failed.figures, "DMA_BUF_IOCTL_SYNC: Invalid argument (EINVAL)"),
            ),
        ),
        TargetPass(None, None, no_heap, ()),
        TargetPass(None, None, None, (fig(4096, 2e4 * k, 1000.0, 500.0, None), fig(mib, 2e4, 2000.0, 600.0, None))),
        TargetPass(None, None, None, (fig(4096, 400.0, 1100.0 * k, 550.0, None), fig(mib, 300.0, 2100.0, 650.0, None))),
    ]


def test_aggregation_writes_what_the_dict_based_code_wrote() -> None:
    specs = [
        TargetSpec("udmabuf", "dmabuf"),
        TargetSpec("fd:7", "dmabuf", 7, 1 << 20, False, "udmabuf", "udmabuf"),
        TargetSpec("no-such-heap", "dmabuf"),
        TargetSpec("anon", "baseline"),
        TargetSpec("memfd", "baseline"),
    ]
    passes = [_old_passes(k) for k in (1.0, 1.1, 0.9, 1.2)]
    old = json.loads(OLD_CACHE.read_text())["runs"][0]["report"]
    report = BenchReport(
        old["kernel"], 4096, 2, runner.aggregate(specs, (4096, 1 << 20), passes, 2), tuple(old["notes"]), 2
    )
    assert report.to_json() == old


# ---- the typed model -------------------------------------------------------------------------


def test_a_pass_crosses_the_process_boundary_unchanged() -> None:
    request = PassRequest((TargetSpec("fd:5", "dmabuf", 5, 8192, False, "system", "heap"),), (4096, 8192), 3)
    assert PassRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
    answer = tuple(_old_passes(1.0))
    assert pass_from_json(json.loads(json.dumps(pass_to_json(answer))), 5) == answer


def _old_report() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OLD_CACHE.read_text())["runs"][0]["report"]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    if value is KeyError:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), "dmabuf-inspect-bench/2", "report.schema: expected 'dmabuf-inspect-bench/1', got 'dmabuf-"),
        (("kernel",), KeyError, "report: missing kernel"),
        (("surprise",), 1, "report: unexpected surprise"),
        (("repeat",), 0, "report.repeat: expected a whole number >= 1, got 0"),
        (("processes",), True, "report.processes: expected a whole number >= 0, got True"),
        (("targets",), {}, "report.targets: expected a list, got {}"),
        (("targets", 0, "kind"), "gpu", "report.targets[0].kind: expected 'dmabuf' or 'baseline', got 'gpu'"),
        (("targets", 1, "sizes", 1, "read_mib_s", "median"), "fast", "[1].read_mib_s.median: expected a number >= 0"),
        (("targets", 0, "sizes", 0, "mmap_ns", "min"), -1.0, "sizes[0].mmap_ns.min: expected a number >= 0, got -1.0"),
        (("targets", 0, "sizes", 0, "mmap_ns", "n"), 0, "sizes[0].mmap_ns.n: expected a whole number >= 1, got 0"),
        (("targets", 0, "sizes", 0, "relative", "swap"), {}, "sizes[0].relative.swap (its name): expected 'anon' or"),
        (("targets", 3, "exporter"), 5, "report.targets[3].exporter: expected a string, got 5"),
    ],
)
def test_from_json_names_the_first_bad_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = _old_report()
    _set(doc, path, value)
    with pytest.raises(BenchDocumentError) as info:
        BenchReport.from_json(doc)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and info.value.exit_code == 1


def test_from_json_refuses_what_is_not_an_object() -> None:
    doc: object
    for doc in (None, [], "report"):
        with pytest.raises(BenchDocumentError, match=r"^report: expected an object"):
            BenchReport.from_json(doc)


# ---- passes in this process and in workers ---------------------------------------------------


def test_worker_processes_measure_and_report_how_many() -> None:
    report = runner.run_bench(sizes=(4096,), repeat=2, processes=2)
    doc = report_json(report)
    assert doc["processes"] == 2 and doc["repeat"] == 2
    for t in report.targets:
        (s,) = t.sizes
        assert s.error is None and s.read_mib_s is not None and s.read_mib_s.n == 2
    assert any("fresh worker process" in note for note in report.notes)


def test_a_failing_worker_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(DmabufInspectError, match=r"^bench worker exited with status 1: no message$"):
        runner.run_bench(sizes=(4096,), repeat=1, processes=1)
    with pytest.raises(UsageError):
        runner.run_bench(sizes=(4096,), processes=-1)


def test_a_worker_answer_that_is_not_a_pass_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/echo")  # answers "-c from ...": not JSON
    with pytest.raises(BenchDocumentError, match=r"^bench worker answered what is not a pass: "):
        runner.run_bench(sizes=(4096,), repeat=1, processes=1)


def test_a_worker_refuses_a_malformed_request_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from dmabuf_inspect.bench.runner import worker_main; worker_main()"],
        input='{"specs": []}',
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "dmabuf-inspect bench worker: request: missing sizes_bytes, rotate, dev_root, sys_root\n"


def test_baselines_are_measured_and_match_the_schema() -> None:
    report = runner.run_bench(sizes=(4096, 64 << 10), repeat=3)
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
    assert BenchReport.from_json(doc) == report


def test_a_given_fd_must_be_a_dmabuf() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(NotADmabufError):
            runner.run_bench(fd=r, sizes=(), repeat=1, baselines=())
    finally:
        os.close(r)
        os.close(w)


def test_missing_devices_are_reported_per_target(tmp_path: Path) -> None:
    report = runner.run_bench(
        exporters=["udmabuf", "system"], sizes=(4096,), repeat=1, dev_root=str(tmp_path), baselines=()
    )
    u, s = report.targets
    assert u.error is not None and u.error.startswith(f"Opening {tmp_path}/udmabuf: No such file")
    assert s.error is not None and s.error.startswith("Opening dma-buf heap system")
    assert u.sizes == () and s.sizes == ()
    report_json(report)


def test_peak_bytes_is_the_largest_size_for_every_exporter_and_baseline() -> None:
    assert runner.peak_bytes((4096, 64 << 20, 1 << 20), ["udmabuf", "system"]) == 4 * (64 << 20)
    assert runner.peak_bytes((4096,), [], ["anon"]) == 4096


# ---- `dmabuf-inspect bench` ------------------------------------------------------------------


def test_parse_sizes_takes_the_one_size_grammar() -> None:
    assert bench.parse_sizes("4K, 1.5M,64kib") == (4096, 3 << 19, 64 << 10)  # 1.5M: refused before
    with pytest.raises(UsageError, match=r"^--size: give at least one size"):
        bench.parse_sizes(" , ")
    with pytest.raises(UsageError, match=rf"^--size: size '3K' is not a whole number of pages \({PAGE} bytes\)$"):
        bench.parse_sizes("4K,3K")
    with pytest.raises(UsageError, match=r"^--size: size '4X' is not a number with an optional K, M, G or T suffix$"):
        bench.parse_sizes("4X")


def test_bench_size_errors_are_argparse_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="dmabuf-inspect bench")
    bench.add_arguments(parser)
    assert parser.parse_args([]).size == (4096, 64 << 10, 1 << 20, 16 << 20, 64 << 20)
    assert parser.parse_args(["--size", "1.5M"]).size == (3 << 19,)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--size", "0.1K"])
    assert info.value.code == 2
    assert "argument --size: size '0.1K' is not a whole number of bytes" in capsys.readouterr().err


def test_bench_command_without_dmabufs_fails_with_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.run(bench_args(tmp_path, size=(4096,), repeat=1))
    out, err = capsys.readouterr()
    assert rc == 1
    assert "udmabuf  (exp_name -, class -)" in out and "not measured: Opening" in out
    assert "anon  (baseline)" in out and "memfd  (baseline)" in out
    assert "4.0 KiB" in out
    assert "no dma-buf could be measured" in err


def test_bench_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.run(bench_args(tmp_path, size=(4096,), repeat=1, json=True, exporter="udmabuf"))
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [t["target"] for t in doc["targets"]] == ["udmabuf", "anon", "memfd"]
    jsonschema.validate(doc, schemas.load(schemas.BENCH))


def test_bench_command_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        bench.run(bench_args(tmp_path, exporter=" , "))
    with pytest.raises(UsageError):
        bench.run(bench_args(tmp_path, size=(4096,), repeat=0, exporter="udmabuf"))


def test_bench_refuses_what_does_not_fit_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Measured(Exception):
        pass

    def fake_run_bench(**kw: object) -> None:
        raise Measured

    monkeypatch.setattr(runner, "run_bench", fake_run_bench)
    # 1 GiB available, margin 128 MiB: 3 x 250 MiB fits, 4 x 250 MiB does not
    monkeypatch.setattr(bench, "read_memory", lambda: alloc.Memory(4 << 30, 1 << 30))
    with pytest.raises(alloc.NotEnoughMemoryError) as info:
        bench.run(bench_args(tmp_path, size=(4096, 250 << 20), exporter="udmabuf,system"))
    assert str(info.value) == (
        "refusing to measure: a pass holding 250.0 MiB for each of 2 exporters and 2 baselines = 1000.0 MiB is "
        "more than the memory available (1.0 GiB) less a margin of 128.0 MiB kept for the rest of the machine; "
        "ask for smaller sizes or fewer exporters"
    )
    assert info.value.exit_code == 1
    with pytest.raises(Measured):
        bench.run(bench_args(tmp_path, size=(4096, 250 << 20), exporter="udmabuf"))
