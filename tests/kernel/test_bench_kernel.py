"""`dmabuf-inspect bench --json` on real udmabufs and system-heap buffers.

Runs in the kernel lab VM as root (python3 tests/kernel/run_lab.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from dmabuf_inspect import mmapcost, udmabuf

pytestmark = pytest.mark.kernel
FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s")


def bench(*args: str, pass_fds: tuple[int, ...] = ()) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "bench", "--json", *args],
        capture_output=True, text=True, pass_fds=pass_fds, timeout=600,
    )  # fmt: skip
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


def test_bench_json_udmabuf_and_system() -> None:
    rc, doc, err = bench("--exporter", "udmabuf,system", "--size", "4K,1M", "--repeat", "2")
    assert rc == 0, err
    with open(mmapcost.schema_path()) as f:
        jsonschema.validate(doc, json.load(f))
    assert doc["kernel"] == os.uname().release and doc["repeat"] == 2
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
    report = mmapcost.run_bench(exporters=["system"], sizes=(4096, 16 << 20), repeat=3, baselines=())
    small, big = report.target("system").sizes
    assert small.mmap_ns is not None and big.mmap_ns is not None
    assert big.mmap_ns.median > 10 * small.mmap_ns.median


def test_bench_an_inherited_fd() -> None:
    with udmabuf.create_with_memfd(64 << 10, cloexec=False) as buf:
        fd = buf.fd
        rc, doc, err = bench("--fd", str(fd), "--size", "4K,64K,1M", "--repeat", "2", pass_fds=(fd,))
    assert rc == 0, err
    target = doc["targets"][0]
    assert (target["target"], target["exporter"], target["exporter_class"]) == (f"fd:{fd}", "udmabuf", "udmabuf")
    assert [s["size_bytes"] for s in target["sizes"]] == [4096, 64 << 10]  # 1M is past the buffer
    for s in target["sizes"]:
        well_formed(s, sync=True)


def test_bench_reports_a_missing_heap_and_fails_without_any_dmabuf() -> None:
    rc, doc, _ = bench("--exporter", "no-such-heap", "--size", "4K", "--repeat", "1")
    assert rc == 1
    target = doc["targets"][0]
    assert target["target"] == "no-such-heap" and target["sizes"] == []
    assert target["error"].startswith("Opening dma-buf heap no-such-heap")
