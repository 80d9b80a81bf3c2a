"""Metrics on a real kernel: the scene's processes are moved into real cgroups (cgroup2), then a
real Prometheus scrapes `serve` on the live /proc and a real node_exporter exposes `metrics
--textfile`; both give back the totals of a live `dump` and the per-cgroup figures the scene
implies. The binaries are the host's (the guest sees its root filesystem read-only).

    /system.slice/scene-lab.service           P1 scene-owner, P2 scene-fork
    /system.slice/docker-<ID>.scope           P3 scene-recv
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prom_servers import node_exporter, prometheus, serve
from prometheus_client.parser import text_string_to_metric_families
from scene import Scene

from dmabuf_inspect.kernel.cgroup import parse_proc_cgroup, unit_of

pytestmark = pytest.mark.kernel

DOCKER_ID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
SERVICE = "/system.slice/scene-lab.service"
CONTAINER = f"/system.slice/docker-{DOCKER_ID}.scope"


@pytest.fixture(scope="module")
def cgroup2() -> Iterator[Path]:
    """The cgroup2 hierarchy, mounted at a directory of our own (a second mount of the same tree)."""
    mount = Path(tempfile.mkdtemp(prefix="dmabuf-cg2-", dir="/var/tmp"))
    subprocess.run(["mount", "-t", "cgroup2", "none", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture(scope="module")
def scene(cgroup2: Path) -> Iterator[Scene]:
    made = [cgroup2 / SERVICE.lstrip("/"), cgroup2 / CONTAINER.lstrip("/")]
    for d in made:
        d.mkdir(parents=True, exist_ok=True)
    with Scene.start() as s:
        pids = s.pids
        try:
            for comm, where in (("scene-owner", made[0]), ("scene-fork", made[0]), ("scene-recv", made[1])):
                (where / "cgroup.procs").write_text(f"{pids[comm]}\n")
            yield s
        finally:
            for pid in pids.values():
                with contextlib.suppress(OSError):
                    (cgroup2 / "cgroup.procs").write_text(f"{pid}\n")
    for d in reversed([*made, cgroup2 / "system.slice"]):
        with contextlib.suppress(OSError):
            d.rmdir()


def _dump() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "dump", "-q"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def _expected_cgroups(scene: Scene) -> dict[str, dict[str, int]]:
    e = scene.expected
    shared = e["shared"].size_bytes
    mine = ("shared", "named", "mapped", "pymapped", "fenced", "signaled")
    return {
        SERVICE: {
            "processes": 2,
            "buffers": len(mine),
            "bytes": sum(e[r].size_bytes for r in mine),
            # P1 and P2 each hold a third of `shared`; P1 holds the rest alone.
            "pss_bytes": 2 * (shared // 3) + sum(e[r].size_bytes for r in mine[1:]),
            "shared_bytes": shared,
        },
        CONTAINER: {"processes": 1, "buffers": 1, "bytes": shared, "pss_bytes": shared // 3, "shared_bytes": shared},
    }


def test_the_kernel_prints_the_cgroups_we_made(scene: Scene) -> None:
    for comm, want in (("scene-owner", SERVICE), ("scene-fork", SERVICE), ("scene-recv", CONTAINER)):
        with open(f"/proc/{scene.pids[comm]}/cgroup", "rb") as f:
            got = parse_proc_cgroup(f.read())
        assert got.path == want and not got.deleted
    unit = unit_of(CONTAINER)
    assert unit is not None and unit.text == "docker:4f797c539e6c"


def test_prometheus_scrapes_serve_on_the_live_kernel(scene: Scene, tmp_path: Path) -> None:
    args = ["serve", "--listen", "127.0.0.1:0", "--min-interval", "0", "--per-process", "--per-cgroup"]
    with (
        serve(tmp_path / "serve", args) as served,
        prometheus(tmp_path / "prom", {"lab": served.port}, interval="5s") as prom,
    ):
        prom.wait_for('dmabuf_cgroup_bytes{job="lab"}', timeout=240)
        totals = _dump()["totals"]
        assert isinstance(totals, dict)
        for name in ("buffers", "bytes", "userspace_bytes", "kernel_only_bytes"):
            metric = "dmabuf_buffers" if name == "buffers" else f"dmabuf_{name}"
            (got,) = prom.query(metric)
            assert got[1] == totals[name], name
        for path, want in _expected_cgroups(scene).items():
            for field, value in want.items():
                (got,) = prom.query(f'dmabuf_cgroup_{field}{{cgroup="{path}"}}')
                assert got[1] == value, (path, field)
        (unit,) = prom.query(f'dmabuf_cgroup_bytes{{cgroup="{CONTAINER}"}}')
        assert unit[0]["unit"] == "docker:4f797c539e6c"
        (owner,) = prom.query(f'dmabuf_process_rss_bytes{{pid="{scene.pids["scene-owner"]}"}}')
        assert owner[0]["comm"] == "scene-owner"
        accounting = Path("/sys/module/dma_heap/parameters/mem_accounting")
        got_accounting = prom.query("dmabuf_heap_mem_accounting")
        if accounting.exists():  # 7.0+
            assert [v for _, v in got_accounting] == [1.0 if accounting.read_text().strip() == "Y" else 0.0]
        else:
            assert got_accounting == []
        assert served.stop() == 0


def test_node_exporter_exposes_the_live_textfile(scene: Scene, tmp_path: Path) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    prom_file = textfiles / "dmabuf.prom"
    out = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "metrics", "--textfile", str(prom_file), "--per-cgroup"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    totals = _dump()["totals"]
    assert isinstance(totals, dict)
    with node_exporter(tmp_path / "node", textfiles) as node:
        scraped = node.scrape()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    assert samples[("node_textfile_scrape_error", ())] == 0
    assert samples[("dmabuf_bytes", ())] == totals["bytes"]
    assert samples[("dmabuf_buffers", ())] == totals["buffers"]
    for path, want in _expected_cgroups(scene).items():
        key = [k for k in samples if k[0] == "dmabuf_cgroup_bytes" and dict(k[1])["cgroup"] == path]
        assert len(key) == 1 and samples[key[0]] == want["bytes"], path
    assert os.listdir(textfiles) == ["dmabuf.prom"]
