"""The Prometheus metrics of a scan (metrics/collector.py) and the `metrics` command: the text is
parsed back with prometheus_client's own parsers, and the values are the hand-computed ones."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from cgroup_expectations import (
    HOSTILE,
    HOSTILE_COMM,
    HOSTILE_EXPORTER,
    HOSTILE_HEAP,
    HOSTILE_TOTALS,
    SERVICES,
    SERVICES_TOTALS,
)
from paths import FIXTURES, REPO
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.metrics.collector import UNKNOWN_CGROUP, exposition, families, registry_of, write_textfile
from dmabuf_inspect.metrics.options import DEFAULT_OPTIONS, MetricOptions
from dmabuf_inspect.metrics.source import Observation, observe
from dmabuf_inspect.textsafe import escape

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    """{family: {sorted labels: value}}, {family: (type, help)}, with prometheus_client's parser."""
    samples: Samples = {}
    meta: dict[str, tuple[str, str]] = {}
    for family in text_string_to_metric_families(text):
        meta[family.name] = (family.type, family.documentation)
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples, meta


def _obs(tree: str, include_maps: bool = True) -> Observation:
    return observe(Roots.from_tree(str(FIXTURES / tree)), include_maps=include_maps)


def _text(tree: str, options: MetricOptions = DEFAULT_OPTIONS, **kw: bool) -> str:
    return exposition(_obs(tree, **kw), options).decode("utf-8")


def _dump_totals(tree: str) -> dict[str, int | None]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--tree", str(FIXTURES / tree), "dump", "-q"]) == 0
    totals: dict[str, int | None] = json.loads(out.getvalue())["totals"]
    return totals


@pytest.mark.parametrize("tree", ["cgroups-services", "cgroups-hostile", "k6.12", "k7.3", "no-dmabufs"])
def test_every_family_is_a_documented_gauge_named_dmabuf(tree: str) -> None:
    samples, meta = parse(_text(tree))
    assert meta and all(name.startswith("dmabuf_") for name in meta)
    assert all(kind == "gauge" and doc for kind, doc in meta.values())
    assert not [n for n in meta if n.endswith(("_total", "_count", "_sum", "_bucket", "_created"))]
    assert set(samples) <= set(meta)


@pytest.mark.parametrize(("tree", "want"), [("cgroups-services", SERVICES_TOTALS), ("cgroups-hostile", HOSTILE_TOTALS)])
def test_totals_equal_the_hand_computed_ones_and_dump(tree: str, want: dict[str, int]) -> None:
    samples, _ = parse(_text(tree))
    got = {
        "buffers": samples["dmabuf_buffers"][()],
        "bytes": samples["dmabuf_bytes"][()],
        "userspace_bytes": samples["dmabuf_userspace_bytes"][()],
        "kernel_only_bytes": samples["dmabuf_kernel_only_bytes"][()],
    }
    assert got == want
    dumped = _dump_totals(tree)
    assert got == {key: dumped[key] for key in got}  # dump also has device_buffers/device_bytes (issue 16)


def test_per_cgroup_series_equal_the_hand_computed_ones() -> None:
    for tree, rows in (("cgroups-services", SERVICES), ("cgroups-hostile", HOSTILE)):
        samples, _ = parse(_text(tree))
        assert samples["dmabuf_cgroups"][()] == len(rows)
        for row in rows:
            key = (
                ("cgroup", UNKNOWN_CGROUP if row.path is None else escape(row.path)),
                ("unit", escape(row.unit, none="")),
            )
            assert samples["dmabuf_cgroup_processes"][key] == row.processes
            assert samples["dmabuf_cgroup_buffers"][key] == row.buffers
            assert samples["dmabuf_cgroup_bytes"][key] == row.bytes
            assert samples["dmabuf_cgroup_pss_bytes"][key] == row.pss_bytes
            assert samples["dmabuf_cgroup_shared_bytes"][key] == row.shared_bytes
        assert len(samples["dmabuf_cgroup_bytes"]) == len(rows)


def test_per_process_and_per_exporter_series() -> None:
    samples, _ = parse(_text("cgroups-services"))
    assert samples["dmabuf_process_rss_bytes"][(("comm", "weston"), ("pid", "900"))] == 20 * 1024 * 1024
    assert samples["dmabuf_process_pss_bytes"][(("comm", "camerad-worker"), ("pid", "501"))] == 1398101
    assert samples["dmabuf_process_buffers"][(("comm", "media-encoder"), ("pid", "1500"))] == 3
    assert samples["dmabuf_processes"][()] == 5
    assert samples["dmabuf_exporter_buffers"][(("class", "heap"), ("exporter", "system"))] == 5
    assert samples["dmabuf_exporter_bytes"][(("class", "gpu-prime"), ("exporter", "drm"))] == 1024 * 1024
    assert samples["dmabuf_exporter_bytes"][(("class", "udmabuf"), ("exporter", "udmabuf"))] == 2 * 1024 * 1024


def test_hostile_label_values_come_back_escaped_and_valid() -> None:
    text = _text("cgroups-hostile")
    text.encode("utf-8")  # no lone surrogate survived
    samples, _ = parse(text)
    comms = {dict(k)["comm"] for k in samples["dmabuf_process_rss_bytes"]}
    assert escape(HOSTILE_COMM) in comms  # 'ev"il\\n\\\\x\\xff': visible, one line
    assert all("\n" not in c and c.isprintable() for c in comms)
    assert {dict(k)["exporter"] for k in samples["dmabuf_exporter_bytes"]} == {"system", escape(HOSTILE_EXPORTER)}
    assert {dict(k)["heap"] for k in samples["dmabuf_heap_present"]} == {"system", escape(HOSTILE_HEAP)}
    paths = {dict(k)["cgroup"] for k in samples["dmabuf_cgroup_bytes"]}
    assert "/system.slice/bad\\n0::\\xff.service" in paths and UNKNOWN_CGROUP in paths
    # Every line is a comment or one sample: a newline in a label never split one.
    assert all(line.startswith(("# HELP dmabuf_", "# TYPE dmabuf_", "dmabuf_")) for line in text.splitlines())


def test_openmetrics_output_parses_too() -> None:
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    for tree in ("cgroups-services", "cgroups-hostile"):
        obs = _obs(tree)
        text = openmetrics_latest(registry_of(lambda obs=obs: obs)).decode("utf-8")
        got = {f.name: f for f in parse_openmetrics(text)}
        assert text.endswith("# EOF\n") and got["dmabuf_bytes"].samples[0].value == _dump_totals(tree)["bytes"]


def test_unknown_kernel_only_bytes_is_absent_not_nan() -> None:
    # No debugfs in no-dmabufs; k6.12 without maps: a buffer no fd holds may be mapped.
    for tree, kw in (("no-dmabufs", {}), ("k6.12", {"include_maps": False})):
        obs = _obs(tree, **kw)
        assert obs.snapshot.totals.kernel_only_bytes is None
        samples, meta = parse(exposition(obs).decode())
        assert "dmabuf_kernel_only_bytes" not in meta
        assert samples["dmabuf_userspace_bytes"][()] == obs.snapshot.totals.userspace_bytes
    samples, _ = parse(_text("no-dmabufs"))
    assert samples["dmabuf_source_available"][(("source", "bufinfo"),)] == 0
    assert samples["dmabuf_buffers"][()] == 0


def test_devices_and_scan_health() -> None:
    samples, _ = parse(_text("cgroups-services"))
    assert samples["dmabuf_heap_mem_accounting"][()] == 1
    assert samples["dmabuf_heaps"][()] == 1 and samples["dmabuf_udmabuf_present"][()] == 1
    assert samples["dmabuf_denied_processes"][()] == 0
    assert {dict(k)["kind"] for k in samples["dmabuf_scan_errors"]} == {"denied", "outside", "broken", "unjoined"}
    sources = {dict(k)["source"]: v for k, v in samples["dmabuf_source_available"].items()}
    assert sources == {"fdinfo": 1, "maps": 1, "bufinfo": 1, "sysfs": 0, "heaps": 1, "udmabuf": 1, "cgroup": 1}
    assert samples["dmabuf_kernel_info"] == {(("release", "7.3.4+deb13-amd64"),): 1}
    assert samples["dmabuf_scan_duration_seconds"][()] > 0
    _, meta = parse(_text("cgroups-hostile"))
    assert "dmabuf_heap_mem_accounting" not in meta  # 6.12: no such parameter
    links, _ = parse(_text("hostile-links"))
    assert links["dmabuf_scan_errors"][(("kind", "outside"),)] >= 1


def test_top_n_bounds_the_process_and_cgroup_series() -> None:
    samples, _ = parse(_text("cgroups-services", MetricOptions(top=2)))
    assert set(samples["dmabuf_process_rss_bytes"]) == {
        (("comm", "weston"), ("pid", "900")),
        (("comm", "media-encoder"), ("pid", "1500")),
    }
    assert {dict(k)["unit"] for k in samples["dmabuf_cgroup_bytes"]} == {
        "session-2.scope (uid 1000)",
        "docker:4f797c539e6c",
    }
    assert samples["dmabuf_processes"][()] == 5 and samples["dmabuf_cgroups"][()] == 4  # all, always
    every, _ = parse(_text("cgroups-services", MetricOptions(top=2, per_process=True, per_cgroup=True)))
    assert len(every["dmabuf_process_rss_bytes"]) == 5 and len(every["dmabuf_cgroup_bytes"]) == 4
    none, meta = parse(_text("cgroups-services", MetricOptions(top=0)))
    assert "dmabuf_process_rss_bytes" not in none and "dmabuf_process_rss_bytes" in meta


def test_families_are_built_from_the_observation_only() -> None:
    obs = _obs("cgroups-services")
    assert [f.name for f in families(obs)] == [f.name for f in families(obs)]
    calls = []
    registry = registry_of(lambda: calls.append(1) or obs)  # type: ignore[func-returns-value]
    assert calls == []  # registering never scans (no describe())
    list(registry.collect())
    assert calls == [1]


# ---- the textfile -------------------------------------------------------------------------------------------


def test_textfile_is_written_atomically_and_parses(tmp_path: Path) -> None:
    path = tmp_path / "dmabuf.prom"
    path.write_text("old\n")
    old_inode = path.stat().st_ino
    write_textfile(str(path), _obs("cgroups-services"))
    assert path.stat().st_ino != old_inode  # renamed over, never rewritten in place
    assert os.listdir(tmp_path) == ["dmabuf.prom"]  # no temporary file left
    samples, _ = parse(path.read_text())
    assert samples["dmabuf_bytes"][()] == SERVICES_TOTALS["bytes"]


# ---- the command --------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", *args], capture_output=True, text=True, env=env, timeout=120, cwd="/"
    )


def test_metrics_command_prints_what_the_collector_makes() -> None:
    out = _cli("--tree", str(FIXTURES / "cgroups-hostile"), "metrics", "--top", "3")
    assert out.returncode == 0, out.stderr
    samples, _ = parse(out.stdout)
    assert len(samples["dmabuf_process_rss_bytes"]) == 3
    assert samples["dmabuf_bytes"][()] == HOSTILE_TOTALS["bytes"]


def test_metrics_command_textfile(tmp_path: Path) -> None:
    path = tmp_path / "dmabuf.prom"
    out = _cli("--tree", str(FIXTURES / "cgroups-services"), "metrics", "--textfile", str(path), "--per-process", "-q")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out
    samples, _ = parse(path.read_text())
    assert len(samples["dmabuf_process_rss_bytes"]) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--textfile", "/tmp/dmabuf.txt"], "must end in .prom"),
        (["--textfile", "/nonexistent-dir/dmabuf.prom"], "no such directory"),
        (["--top", "-1"], "must be 0 or more"),
        (["--top", "x"], "not a number"),
    ],
)
def test_metrics_command_usage_errors(args: list[str], message: str) -> None:
    out = _cli("--tree", str(FIXTURES / "k6.12"), "metrics", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr and "Traceback" not in out.stderr


def test_metrics_notes_go_to_stderr_once() -> None:
    out = _cli("--tree", str(FIXTURES / "no-dmabufs"), "metrics")
    assert out.returncode == 0
    assert out.stderr.count("bufinfo") <= 1
    parse(out.stdout)


def test_metrics_of_this_machine_parse() -> None:
    out = _cli("metrics", "-q")
    assert out.returncode == 0, out.stderr
    samples, _ = parse(out.stdout)
    assert samples["dmabuf_kernel_info"] == {(("release", os.uname().release),): 1}


def _loaded(argv: list[str]) -> set[str]:
    code = (
        "import io, sys\nsys.stdout = io.StringIO()\nfrom dmabuf_inspect.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "sys.__stdout__.write(' '.join(sorted(sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    return set(out.stdout.split())


def test_prometheus_client_is_imported_only_to_make_metrics() -> None:
    tree = str(FIXTURES / "k6.12")
    assert "prometheus_client" not in _loaded(["--tree", tree, "list"])
    assert "prometheus_client" not in _loaded(["--tree", tree, "dump"])
    assert "prometheus_client" not in _loaded(["metrics", "--help"])
    assert "prometheus_client" not in _loaded(["serve", "--help"])
    assert "prometheus_client" in _loaded(["--tree", tree, "metrics"])


def test_the_grafana_dashboard_queries_only_metrics_we_export() -> None:
    import re

    dashboard = json.loads((REPO / "contrib" / "grafana-dmabuf.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bdmabuf_\w+", e)}
    _, meta = parse(_text("cgroups-services"))
    assert used and used <= set(meta), used - set(meta)
