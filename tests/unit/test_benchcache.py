"""The bench result cache: where it lives, atomic writes, merging runs, reading without measuring."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from bench_cli_args import bench_args

from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench import mmapcost
from dmabuf_inspect.bench.cache import BenchCacheError, CacheReader
from dmabuf_inspect.cli.commands import bench

KERNEL = "6.12.107+deb13-amd64"
SIZES = (4096, 1 << 20, 64 << 20)


def fake_report(exporters: dict[str, float], kernel: str = KERNEL, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """A bench document built by mmapcost's own aggregation from made-up passes: exporter E's
    first touch costs SCALE times anon's, its bandwidth is anon's / SCALE."""
    specs = [mmapcost._Spec(e, "dmabuf") for e in exporters]
    specs += [mmapcost._Spec("anon", "baseline"), mmapcost._Spec("memfd", "baseline")]
    scales = [*exporters.values(), 1.0, 1.0]

    def entry(spec: mmapcost._Spec, scale: float, size: int) -> dict[str, Any]:
        figures = {
            "mmap_ns": 50_000.0,
            "first_touch_ns_per_page": 20_000.0 * scale + size / 4096,
            "write_mib_s": 400.0 / scale,
            "read_mib_s": 2000.0 / scale,
            "sync_pair_ns": 9000.0 if spec.kind == "dmabuf" else None,
        }
        return {"figures": figures, "error": None}

    one_pass = [
        {
            "exporter": s.name if s.kind == "dmabuf" else None,
            "exporter_class": "heap" if s.kind == "dmabuf" else None,
            "error": None,
            "sizes": {str(z): entry(s, k, z) for z in sizes},
        }
        for s, k in zip(specs, scales, strict=True)
    ]
    targets = mmapcost._aggregate(specs, sizes, [one_pass, one_pass], 1)
    doc = mmapcost.report_to_dict(mmapcost.BenchReport(kernel, 4096, 2, targets, processes=0))
    with open(mmapcost.schema_path()) as f:
        jsonschema.validate(doc, json.load(f))
    return doc


def test_cache_dir_follows_xdg_and_ignores_relative_paths() -> None:
    assert benchcache.cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}) == "/x/cache/dmabuf-inspect"
    for value in ("", "relative/cache"):
        assert benchcache.cache_dir({"XDG_CACHE_HOME": value, "HOME": "/home/u"}) == "/home/u/.cache/dmabuf-inspect"
    assert benchcache.cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/dmabuf-inspect"
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
    assert cache is not None and [r["measured_at"] for r in cache.runs] == [2000.0, 1000.0]
    assert cache.cost("udmabuf", 4096).measured_at == 2000.0  # type: ignore[union-attr]
    assert cache.cost("system", 4096).measured_at == 1000.0  # type: ignore[union-attr]
    benchcache.save(fake_report({"system": 1.0, "udmabuf": 1.0}), directory=d, now=3000.0)
    cache = benchcache.load(KERNEL, d)
    assert cache is not None and [r["measured_at"] for r in cache.runs] == [3000.0]  # both superseded
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
    loads = []
    real_load = benchcache.load
    monkeypatch.setattr(benchcache, "load", lambda *a: loads.append(a) or real_load(*a))
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
        "bad = [m for m in ('dmabuf_inspect.bench.mmapcost', 'dmabuf_inspect.ioctl.udmabuf', "
        "'dmabuf_inspect.ioctl.heaps', "
        "'ctypes', 'mmap') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _measured_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_bench as if udmabuf had been measured (no dma-buf device on a test machine)."""
    doc = fake_report({"udmabuf": 0.5}, kernel=os.uname().release)

    def fake_run_bench(**kw: object) -> mmapcost.BenchReport:
        targets = tuple(
            mmapcost.TargetResult(
                t["target"],
                t["kind"],
                t["exporter"],
                t["exporter_class"],
                tuple(
                    mmapcost.SizeResult(
                        s["size_bytes"],
                        s["pages"],
                        s["passes"],
                        read_mib_s=mmapcost.Spread.of([s["read_mib_s"]["median"]]),
                    )
                    for s in t["sizes"]
                ),
            )
            for t in doc["targets"]
        )
        return mmapcost.BenchReport(doc["kernel"], 4096, 1, targets, processes=0)

    monkeypatch.setattr(mmapcost, "run_bench", fake_run_bench)


def test_bench_command_keeps_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _measured_run(monkeypatch)
    assert bench.run(bench_args(tmp_path, json=True)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    cache = benchcache.load(os.uname().release, str(tmp_path / "cache" / "dmabuf-inspect"))
    assert cache is not None and cache.runs[0]["report"] == json.loads(out)
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
    assert bench.run(bench_args(tmp_path, size="4K", repeat=1, processes=0, exporter="udmabuf", json=True)) == 1
    assert not (tmp_path / "cache").exists()
