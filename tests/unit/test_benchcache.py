"""The bench result cache: where it lives, atomic writes, merging runs, reading without measuring."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import bench_fakes
import jsonschema
import pytest
from bench_cli_args import bench_args

from dmabuf_inspect import schemas
from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench import runner
from dmabuf_inspect.bench.cache import BenchCacheError, CacheReader
from dmabuf_inspect.bench.model import BenchReport
from dmabuf_inspect.cachedir import cache_dir
from dmabuf_inspect.cli.commands import alloc, bench

KERNEL = "6.12.107+deb13-amd64"
SIZES = (4096, 1 << 20, 64 << 20)
OLD_CACHE = Path(__file__).parent / "data" / "bench-cache-1.json"


def fake_report(exporters: dict[str, float], kernel: str = KERNEL, sizes: tuple[int, ...] = SIZES) -> BenchReport:
    """Exporter E's first touch costs SCALE times anon's, its bandwidth is anon's / SCALE."""
    report = bench_fakes.scaled_report(exporters, kernel, sizes)
    jsonschema.validate(report.to_json(), schemas.load(schemas.BENCH))
    return report


def test_cache_dir_follows_xdg_and_ignores_relative_paths() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}) == "/x/cache/dmabuf-inspect"
    for value in ("", "relative/cache"):
        assert cache_dir({"XDG_CACHE_HOME": value, "HOME": "/home/u"}) == "/home/u/.cache/dmabuf-inspect"
    assert cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/dmabuf-inspect"
    assert benchcache.cache_path("6.12.1-x", "/c") == "/c/bench-6.12.1-x.json"
    assert benchcache.cache_path("a/b", "/c") == "/c/bench-a_b.json"


def test_save_then_cost_at_the_nearest_measured_size(tmp_path: Path) -> None:
    path = benchcache.save(fake_report({"udmabuf": 0.25, "system": 0.5}), directory=str(tmp_path), now=1000.0)
    assert path == str(tmp_path / f"bench-{KERNEL}.json")
    assert os.listdir(tmp_path) == [f"bench-{KERNEL}.json"]  # no temporary file left behind
    cache = benchcache.load(KERNEL, str(tmp_path))
    assert cache is not None and len(cache.runs) == 1
    cost = cache.cost("udmabuf", 4 << 20)  # log2: 1 MiB is 2 away, 64 MiB 4 away
    assert cost is not None and cost.size_bytes == 1 << 20 and cost.measured_at == 1000.0 and cost.kernel == KERNEL
    assert cost.first_touch_ns_per_page == 5000.0 + 256
    assert cost.read_mib_s == 8000.0 and cost.write_mib_s == 1600.0
    assert cost.read_vs_anon == pytest.approx(4.0) and cost.write_vs_anon == pytest.approx(4.0)
    assert cost.first_touch_vs_anon == pytest.approx((5000 + 256) / (20000 + 256))
    tie = cache.cost("system", 8 << 20)  # 1 MiB and 64 MiB are 3 away each: the larger wins
    assert tie is not None and tie.size_bytes == 64 << 20
    assert cache.cost("system", 1).size_bytes == 4096  # type: ignore[union-attr]
    assert cache.cost("drm", 4096) is None and cache.cost("anon", 4096) is None  # baselines are no exporter


def test_a_newer_run_replaces_only_the_exporters_it_measured(tmp_path: Path) -> None:
    d = str(tmp_path)
    benchcache.save(fake_report({"udmabuf": 0.25, "system": 0.5}), directory=d, now=1000.0)
    benchcache.save(fake_report({"udmabuf": 2.0}), directory=d, now=2000.0)
    cache = benchcache.load(KERNEL, d)
    assert cache is not None and [r.measured_at for r in cache.runs] == [2000.0, 1000.0]
    assert cache.cost("udmabuf", 4096).measured_at == 2000.0  # type: ignore[union-attr]
    assert cache.cost("system", 4096).measured_at == 1000.0  # type: ignore[union-attr]
    benchcache.save(fake_report({"system": 1.0, "udmabuf": 1.0}), directory=d, now=3000.0)
    cache = benchcache.load(KERNEL, d)
    assert cache is not None and [r.measured_at for r in cache.runs] == [3000.0]  # both superseded
    assert benchcache.load("another-kernel", d) is None


def test_garbled_and_unreadable_caches(tmp_path: Path) -> None:
    path = tmp_path / f"bench-{KERNEL}.json"
    for text in ("{not json", '{"schema": "something-else", "runs": []}', "[]"):
        path.write_text(text)
        with pytest.raises(BenchCacheError, match=re.escape(str(path))):
            benchcache.load(KERNEL, str(tmp_path))
    benchcache.save(fake_report({"system": 1.0}), directory=str(tmp_path))  # a garbled cache is replaced
    assert benchcache.load(KERNEL, str(tmp_path)) is not None
    doc = json.loads(path.read_text())
    doc["runs"].append({"measured_at": "yesterday", "report": {}})  # bad runs are skipped, not fatal
    bad_size = json.loads(json.dumps(doc["runs"][0]))
    bad_size["report"]["targets"][0]["sizes"][0]["relative"] = {"anon": 3}
    doc["runs"].append(bad_size)
    path.write_text(json.dumps(doc))
    cache = benchcache.load(KERNEL, str(tmp_path))
    assert cache is not None and len(cache.runs) == 1


def test_reader_rereads_only_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = CacheReader(str(tmp_path))
    assert reader.read(KERNEL) == (None, None)
    benchcache.save(fake_report({"system": 1.0}), directory=str(tmp_path), now=1.0)
    loads: list[tuple[str, str | None]] = []
    real_load = benchcache.load

    def counted_load(release: str, directory: str | None = None) -> benchcache.BenchCache | None:
        loads.append((release, directory))
        return real_load(release, directory)

    monkeypatch.setattr(benchcache, "load", counted_load)
    first, problem = reader.read(KERNEL)
    assert first is not None and problem is None
    assert reader.read(KERNEL)[0] is first and len(loads) == 1
    benchcache.save(fake_report({"system": 3.0}), directory=str(tmp_path), now=2.0)  # loads once to merge
    second, _ = reader.read(KERNEL)
    assert second is not first and second is not None and len(loads) == 3
    assert second.cost("system", 4096).measured_at == 2.0  # type: ignore[union-attr]
    (tmp_path / f"bench-{KERNEL}.json").write_text("garbage")
    cache, problem = reader.read(KERNEL)
    assert cache is None and problem is not None and "not JSON" in problem


def test_reading_the_cache_never_loads_the_measuring_code(tmp_path: Path) -> None:
    benchcache.save(fake_report({"system": 1.0}), directory=str(tmp_path))
    code = (
        "import sys; from dmabuf_inspect.bench.cache import CacheReader; "
        f"c, p = CacheReader({str(tmp_path)!r}).read({KERNEL!r}); assert c.cost('system', 4096) and p is None; "
        "bad = [m for m in ('dmabuf_inspect.bench.runner', 'dmabuf_inspect.bench.measure', "
        "'dmabuf_inspect.ioctl.udmabuf', 'dmabuf_inspect.ioctl.heaps', "
        "'ctypes', 'mmap') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _measured_run(monkeypatch: pytest.MonkeyPatch) -> BenchReport:
    """run_bench as if udmabuf had been measured (no dma-buf device on a test machine)."""
    report = fake_report({"udmabuf": 0.5}, kernel=os.uname().release)
    monkeypatch.setattr(runner, "run_bench", lambda **kw: report)
    return report


def test_bench_command_keeps_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _measured_run(monkeypatch)
    assert bench.run(bench_args(tmp_path, json=True)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    cache = benchcache.load(os.uname().release, str(tmp_path / "cache" / "dmabuf-inspect"))
    assert cache is not None and cache.runs[0].report == BenchReport.from_json(json.loads(out))
    assert cache.cost("udmabuf", 4096) is not None


def test_bench_command_warns_in_one_line_when_the_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # the cache directory cannot be made
    _measured_run(monkeypatch)
    assert bench.run(bench_args(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "udmabuf" in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"dmabuf-inspect: bench: warning: result not kept: writing {tmp_path}/file/dmabuf-inspect/")
    assert "Not a directory" in err or "File exists" in err


def test_bench_command_keeps_nothing_when_nothing_was_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert bench.run(bench_args(tmp_path, size=(4096,), repeat=1, processes=0, exporter="udmabuf", json=True)) == 1
    assert not (tmp_path / "cache").exists()


@pytest.fixture(autouse=True)
def plenty_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench command's memory guard sees 64 GiB available, whatever this machine has."""
    monkeypatch.setattr(bench, "read_memory", lambda: alloc.Memory(128 << 30, 64 << 30))


# ---- a cache written before the typed model ---------------------------------------------------
# tests/unit/data/bench-cache-1.json was written by the dict-based mmapcost/benchcache (commit
# b44c768): two runs, the newer with a failed size, a read-only fd (no write figure), a failed
# SYNC and a target that could not be opened.


def test_a_cache_written_before_the_typed_model_loads_with_the_same_costs(tmp_path: Path) -> None:
    (tmp_path / f"bench-{KERNEL}.json").write_bytes(OLD_CACHE.read_bytes())
    cache = benchcache.load(KERNEL, str(tmp_path))
    assert cache is not None and [r.measured_at for r in cache.runs] == [1795000600.0, 1795000000.0]
    # the figures the old code gave for these calls
    assert cache.cost("udmabuf", 1 << 20) == benchcache.ExporterCost(
        "udmabuf", 4096, 285.0, 900.0, 400.0, 0.015, 0.9, 0.8, 1795000600.0, KERNEL
    )
    assert cache.cost("system", 1 << 20) == benchcache.ExporterCost(
        "system", 1 << 20, 10256.0, 4000.0, 800.0, 0.5063191153238547, 2.0, 2.0, 1795000000.0, KERNEL
    )
    newer = cache.runs[0].report
    fd = newer.target("fd:7")
    assert fd.sizes[0].write_mib_s is None and fd.sizes[1].sync_pair_ns is None
    assert fd.sizes[1].error == "DMA_BUF_IOCTL_SYNC: Invalid argument (EINVAL)"
    assert newer.target("no-such-heap").error is not None and newer.target("no-such-heap").sizes == ()


def test_old_runs_are_written_back_unchanged(tmp_path: Path) -> None:
    path = tmp_path / f"bench-{KERNEL}.json"
    path.write_bytes(OLD_CACHE.read_bytes())
    old = json.loads(OLD_CACHE.read_text())
    benchcache.save(fake_report({"carveout": 1.0}), directory=str(tmp_path), now=1795001000.0)
    runs = json.loads(path.read_text())["runs"]
    assert [r["measured_at"] for r in runs] == [1795001000.0, 1795000600.0, 1795000000.0]
    assert runs[1:] == old["runs"]  # from_json then to_json gives the same document


def test_every_run_of_the_old_cache_is_a_valid_bench_document() -> None:
    schema = schemas.load(schemas.BENCH)
    for run in json.loads(OLD_CACHE.read_text())["runs"]:
        jsonschema.validate(run["report"], schema)
        assert BenchReport.from_json(run["report"]).to_json() == run["report"]
