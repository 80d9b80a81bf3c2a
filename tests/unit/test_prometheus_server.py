"""A real Prometheus server (Debian's `prometheus`, installed by tests/run.sh) scrapes `serve` on
two fixture trees; its HTTP API gives back the `dump` totals and the hand-computed per-cgroup
figures, and the hostile tree's label values arrive as we escaped them."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from cgroup_expectations import HOSTILE_COMM, HOSTILE_EXPORTER, SERVICES
from paths import FIXTURES
from prom_servers import prometheus, serve

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.metrics.collector import UNKNOWN_CGROUP
from dmabuf_inspect.textsafe import escape

TREES = {"services": "cgroups-services", "hostile": "cgroups-hostile"}


def _dump(tree: str) -> dict[str, object]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--tree", str(FIXTURES / tree), "dump", "-q"]) == 0
    doc: dict[str, object] = json.loads(out.getvalue())
    return doc


def _one(result: list[tuple[dict[str, str], float]]) -> float:
    assert len(result) == 1, result
    return result[0][1]


def test_prometheus_scrapes_serve_and_gets_the_dump_totals(tmp_path: Path) -> None:
    args = ["serve", "--listen", "127.0.0.1:0", "--min-interval", "0", "--per-process"]
    with (
        serve(tmp_path / "services", ["--tree", str(FIXTURES / TREES["services"]), *args]) as services,
        serve(tmp_path / "hostile", ["--tree", str(FIXTURES / TREES["hostile"]), *args]) as hostile,
        prometheus(tmp_path / "prometheus", {"services": services.port, "hostile": hostile.port}) as prom,
    ):
        for job in TREES:
            prom.wait_for(f'dmabuf_kernel_info{{job="{job}"}}')
            assert _one(prom.query(f'up{{job="{job}"}}')) == 1
        for job, tree in TREES.items():
            totals = _dump(tree)["totals"]
            assert isinstance(totals, dict)
            for name in ("buffers", "bytes", "userspace_bytes", "kernel_only_bytes"):
                metric = "dmabuf_buffers" if name == "buffers" else f"dmabuf_{name}"
                assert _one(prom.query(f'{metric}{{job="{job}"}}')) == totals[name], (job, name)

        for row in SERVICES:
            selector = f'job="services",cgroup="{row.path}"'
            assert _one(prom.query(f"dmabuf_cgroup_bytes{{{selector}}}")) == row.bytes
            assert _one(prom.query(f"dmabuf_cgroup_pss_bytes{{{selector}}}")) == row.pss_bytes
            assert _one(prom.query(f"dmabuf_cgroup_shared_bytes{{{selector}}}")) == row.shared_bytes
            (labels, _), *_ = prom.query(f"dmabuf_cgroup_processes{{{selector}}}")
            assert labels["unit"] == row.unit
        # PromQL over our series: the sum of Pss over cgroups is the sum over processes.
        by_cgroup = _one(prom.query('sum(dmabuf_cgroup_pss_bytes{job="services"})'))
        by_process = _one(prom.query('sum(dmabuf_process_pss_bytes{job="services"})'))
        assert by_cgroup == by_process == sum(r.pss_bytes for r in SERVICES)

        comms = {labels["comm"] for labels, _ in prom.query('dmabuf_process_rss_bytes{job="hostile"}')}
        assert escape(HOSTILE_COMM) in comms
        exporters = {labels["exporter"] for labels, _ in prom.query('dmabuf_exporter_bytes{job="hostile"}')}
        assert escape(HOSTILE_EXPORTER) in exporters
        cgroups = {labels["cgroup"] for labels, _ in prom.query('dmabuf_cgroup_bytes{job="hostile"}')}
        assert {UNKNOWN_CGROUP, "/system.slice/bad\\n0::\\xff.service"} <= cgroups
        assert "level=error" not in prom.log_text()
