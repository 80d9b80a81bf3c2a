"""A real node_exporter (Debian's `prometheus-node-exporter`, installed by tests/run.sh) with
--collector.textfile.directory exposes what `metrics --textfile` wrote: every sample comes back
with its labels and value, and a rewrite is seen at the next scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cgroup_expectations import HOSTILE_COMM, HOSTILE_TOTALS, SERVICES_TOTALS
from paths import FIXTURES, REPO
from prom_servers import node_exporter
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_inspect.textsafe import escape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str, *, ours: bool = True) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not ours or s.name.startswith("dmabuf_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _write(tree: str, path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", "--tree", str(FIXTURES / tree), "metrics", "--textfile", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_node_exporter_exposes_the_textfile(tmp_path: Path) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    prom = textfiles / "dmabuf.prom"
    _write("cgroups-services", prom)
    with node_exporter(tmp_path / "node", textfiles) as node:
        scraped = node.scrape()
        everything = _samples(scraped, ours=False)
        assert everything[("node_textfile_scrape_error", ())] == 0, node.log_text()
        written = _samples(prom.read_text())
        assert _samples(scraped) == written  # every sample, label and value, as we wrote it
        assert written[("dmabuf_bytes", ())] == SERVICES_TOTALS["bytes"]
        assert written[("dmabuf_kernel_only_bytes", ())] == SERVICES_TOTALS["kernel_only_bytes"]
        assert ("node_textfile_mtime_seconds", (("file", str(prom)),)) in everything  # it read our file

        _write("cgroups-hostile", prom)  # renamed over the old file while node_exporter runs
        assert sorted(os.listdir(textfiles)) == ["dmabuf.prom"]
        scraped = node.scrape()
        assert _samples(scraped, ours=False)[("node_textfile_scrape_error", ())] == 0, node.log_text()
        hostile = _samples(scraped)
        assert hostile == _samples(prom.read_text())
        assert hostile[("dmabuf_bytes", ())] == HOSTILE_TOTALS["bytes"]
        comms = {dict(labels).get("comm") for name, labels in hostile if name == "dmabuf_process_rss_bytes"}
        assert escape(HOSTILE_COMM) in comms
