"""Real Prometheus, node_exporter and `dmabuf-inspect serve` processes for the tests.

Each runs in a temporary directory on a free localhost port, is waited for with a timeout, and
is always stopped (SIGTERM, then SIGKILL). The binaries come from Debian's `prometheus` and
`prometheus-node-exporter` packages, which tests/run.sh installs; a missing one fails the test
(never skips it) and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from paths import REPO

PROMETHEUS = "prometheus"
NODE_EXPORTER = "prometheus-node-exporter"
READY_TIMEOUT_S = 60.0


def binary(name: str) -> str:
    """The path of a server binary; fails the test when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/bin:/sbin")
    if path is None:
        pytest.fail(
            f"{name} is not installed: tests/run.sh installs it (apt-get install prometheus prometheus-node-exporter)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b'') when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_until(
    what: str, check: Any, timeout: float = READY_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    """Call check() until it returns something true; fail after `timeout` (or when proc exits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with status {proc.returncode}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after {timeout:.0f} s", pytrace=False)
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `timeout`; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


class Served:
    """A running `dmabuf-inspect serve`."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
        self.proc, self.port, self.stderr = proc, port, stderr

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def stop(self) -> int:
        return stop(self.proc)

    def stderr_text(self) -> str:
        return _tail(self.stderr)


@contextmanager
def serve(workdir: Path, args: Sequence[str], *, python: str = sys.executable) -> Iterator[Served]:
    """`dmabuf-inspect ARGS serve --listen 127.0.0.1:0 ...` (args hold the command and its options);
    the port is read from the line it prints on stderr."""
    workdir.mkdir(parents=True, exist_ok=True)
    err_path = workdir / "serve.stderr"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([python, "-m", "dmabuf_inspect", *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:

        def port() -> int | None:
            m = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", _tail(err_path))
            return int(m.group(1)) if m else None

        found = wait_until("dmabuf-inspect serve", port, proc=proc)
        yield Served(proc, found, err_path)
    finally:
        stop(proc)


class Prometheus:
    """A running Prometheus server and its HTTP API."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url)
        assert status == 200, f"{url}: {status} {body[:500]!r}\n{_tail(self.log)}"
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """The instant vector of `expr`: (labels, value) per series."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_for(self, expr: str, timeout: float = READY_TIMEOUT_S) -> list[tuple[dict[str, str], float]]:
        """The result of `expr` once it is not empty."""
        result: list[tuple[dict[str, str], float]] = wait_until(
            f"prometheus query {expr}", lambda: self.query(expr), timeout, self.proc
        )
        return result

    def log_text(self) -> str:
        return _tail(self.log)


@contextmanager
def prometheus(workdir: Path, jobs: dict[str, int], *, interval: str = "1s") -> Iterator[Prometheus]:
    """A Prometheus scraping 127.0.0.1:PORT/metrics of each job every `interval`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    lines = ["global:", f"  scrape_interval: {interval}", f"  scrape_timeout: {interval}", "scrape_configs:"]
    for job, port in jobs.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['127.0.0.1:{port}']"]
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        wait_until(
            "prometheus /-/ready", lambda: http_get(f"http://127.0.0.1:{port}/-/ready", timeout=2)[0] == 200, proc=proc
        )
        yield Prometheus(proc, port, log)
    finally:
        stop(proc)


class NodeExporter:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def scrape(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200, f"node_exporter answered {status}\n{_tail(self.log)}"
        return body.decode("utf-8")

    def log_text(self) -> str:
        return _tail(self.log)


@contextmanager
def node_exporter(workdir: Path, textfile_dir: Path) -> Iterator[NodeExporter]:
    """node_exporter with only its textfile collector, reading `textfile_dir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "node_exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary(NODE_EXPORTER),
                f"--web.listen-address=127.0.0.1:{port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfile_dir}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        wait_until(
            "node_exporter /metrics",
            lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 200,
            proc=proc,
        )
        yield NodeExporter(proc, port, log)
    finally:
        stop(proc)
