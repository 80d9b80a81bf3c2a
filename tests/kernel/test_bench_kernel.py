"""`dmabuf-inspect bench --json` on real udmabufs and system-heap buffers.

Runs in the kernel lab VM as root (python3 tests/kernel/run_lab.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dmabuf_inspect import schemas
from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench import runner
from dmabuf_inspect.bench.model import BenchReport
from dmabuf_inspect.ioctl import udmabuf

pytestmark = pytest.mark.kernel
FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s")


def bench(*args: str, pass_fds: tuple[int, ...] = (), cache: str | None = None) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ)
    if cache is not None:
        env["XDG_CACHE_HOME"] = cache
    proc = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "bench", "--json", *args],
        capture_output=True,
        text=True,
        pass_fds=pass_fds,
        timeout=600,
        env=env,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stderr


def well_formed(size: dict[str, Any], *, sync: bool) -> None:
    assert size["error"] is None
    for figure in (*FIGURES, "sync_pair_ns") if sync else FIGURES:
        s = size[figure]
        assert s is not None, figure
        assert s["n"] == 2
        assert 0 < s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"], (figure, s)
    if not sync:
        assert size["sync_pair_ns"] is None


def test_bench_json_udmabuf_and_system(tmp_path: Path) -> None:
    rc, doc, err = bench("--exporter", "udmabuf,system", "--size", "4K,1M", "--repeat", "2", cache=str(tmp_path))
    assert rc == 0, err
    jsonschema.validate(doc, schemas.load(schemas.BENCH))
    assert doc["kernel"] == os.uname().release and doc["repeat"] == 2
    assert doc["processes"] == 2  # each repeat: the best of 2 worker processes, each with its own buffers
    cache = benchcache.load(os.uname().release, str(tmp_path / "dmabuf-inspect"))
    assert cache is not None and cache.runs[0].report.to_json() == doc  # kept for the TUI
    assert BenchReport.from_json(doc) == cache.runs[0].report
    system = cache.cost("system", 4 << 20)
    assert system is not None and system.size_bytes == 1 << 20 and system.read_vs_anon is not None
    targets = {t["target"]: t for t in doc["targets"]}
    assert list(targets) == ["udmabuf", "system", "anon", "memfd"]
    assert (targets["udmabuf"]["exporter"], targets["udmabuf"]["exporter_class"]) == ("udmabuf", "udmabuf")
    assert (targets["system"]["exporter"], targets["system"]["exporter_class"]) == ("system", "heap")
    for name, t in targets.items():
        assert t["error"] is None
        assert [s["size_bytes"] for s in t["sizes"]] == [4096, 1 << 20]
        assert [s["pages"] for s in t["sizes"]] == [1, 256]
        for s in t["sizes"]:
            well_formed(s, sync=t["kind"] == "dmabuf")
        assert t["kind"] == ("baseline" if name in ("anon", "memfd") else "dmabuf")


def test_system_heap_mmap_populates_every_page() -> None:
    # system_heap_mmap() calls remap_pfn_range() for every page at mmap time, so mapping 16 MiB
    # costs far more than mapping 4 KiB, and its first touch then finds the pages mapped.
    report = runner.run_bench(exporters=["system"], sizes=(4096, 16 << 20), repeat=3, baselines=())
    small, big = report.target("system").sizes
    assert small.mmap_ns is not None and big.mmap_ns is not None
    assert big.mmap_ns.median > 10 * small.mmap_ns.median


def test_bench_an_inherited_fd(tmp_path: Path) -> None:
    with udmabuf.create_with_memfd(64 << 10, cloexec=False) as buf:
        fd = buf.fd  # the bench's worker processes inherit it in turn
        rc, doc, err = bench(
            "--fd", str(fd), "--size", "4K,64K,1M", "--repeat", "2", pass_fds=(fd,), cache=str(tmp_path)
        )
    assert rc == 0, err
    target = doc["targets"][0]
    assert (target["target"], target["exporter"], target["exporter_class"]) == (f"fd:{fd}", "udmabuf", "udmabuf")
    assert [s["size_bytes"] for s in target["sizes"]] == [4096, 64 << 10]  # 1M is past the buffer
    for s in target["sizes"]:
        well_formed(s, sync=True)


def test_bench_reports_a_missing_heap_and_fails_without_any_dmabuf(tmp_path: Path) -> None:
    rc, doc, _ = bench("--exporter", "no-such-heap", "--size", "4K", "--repeat", "1", cache=str(tmp_path))
    assert rc == 1
    target = doc["targets"][0]
    assert target["target"] == "no-such-heap" and target["sizes"] == []
    assert target["error"].startswith("Opening dma-buf heap no-such-heap")
    assert not (tmp_path / "dmabuf-inspect").exists()  # nothing measured, nothing kept


def test_bench_refuses_a_pass_larger_than_the_memory_available(tmp_path: Path) -> None:
    import psutil

    page = os.sysconf("SC_PAGE_SIZE")
    size = psutil.virtual_memory().available // 3 // page * page  # x (system + anon + memfd)
    rc, doc, err = bench("--exporter", "system", "--size", f"4K,{size}", "--repeat", "1", cache=str(tmp_path))
    assert rc == 1 and doc == {}
    assert err.startswith("dmabuf-inspect: refusing to measure: a pass holding ") and err.count("\n") == 1
    assert "for each of 1 exporter and 2 baselines" in err
    assert not (tmp_path / "dmabuf-inspect").exists()


def test_bench_refuses_a_tree(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    rc, doc, err = bench("--exporter", "system", "--size", "4K", "--tree", str(tmp_path), cache=str(tmp_path))
    assert rc == 2 and doc == {}
    assert err.endswith(
        "so it takes no --tree, --proc-root, --sys-root, --debugfs-root or --dev-root (given: --tree)\n"
    )
