"""`serve`: the scan cache (one scan at a time, --min-interval), the HTTP endpoint, --listen,
and stopping on SIGTERM (metrics/server.py, cli/commands/serve.py)."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cgroup_expectations import SERVICES_TOTALS
from paths import FIXTURES, REPO
from prom_servers import free_port, http_get, serve
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.metrics.server import Listen, MetricsServer, ScanCache, parse_listen
from dmabuf_inspect.metrics.source import Observation, observe

SERVICES = str(FIXTURES / "cgroups-services")


def _value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and not s.labels:
                return float(s.value)
    raise AssertionError(f"{name} not in the output")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- ScanCache --------------------------------------------------------------------------------------------


def test_scrapes_within_the_interval_get_the_last_result() -> None:
    clock, made = _Clock(), []
    obs = observe(Roots.from_tree(SERVICES))

    def scan() -> Observation:
        made.append(clock.now)
        return obs

    cache = ScanCache(scan, 5.0, clock)
    assert cache.get() is obs and made == [100.0]
    clock.now = 104.9
    assert cache.get() is obs and made == [100.0] and cache.hits == 1
    clock.now = 105.0
    cache.get()
    assert made == [100.0, 105.0] and cache.scans == 2


def test_min_interval_zero_scans_every_time() -> None:
    clock, made = _Clock(), []
    cache = ScanCache(lambda: made.append(1) or observe(Roots.from_tree(SERVICES)), 0.0, clock)  # type: ignore[func-returns-value]
    cache.get()
    cache.get()
    assert len(made) == 2


def test_a_failed_scan_is_not_cached() -> None:
    clock, calls = _Clock(), []
    obs = observe(Roots.from_tree(SERVICES))

    def scan() -> Observation:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return obs

    cache = ScanCache(scan, 60.0, clock)
    with pytest.raises(OSError):
        cache.get()
    assert cache.get() is obs and len(calls) == 2


def test_one_scan_at_a_time_and_waiting_scrapes_share_it() -> None:
    obs = observe(Roots.from_tree(SERVICES))
    running, most, lock = [0], [0], threading.Lock()

    def slow_scan() -> Observation:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return obs

    cache = ScanCache(slow_scan, 10.0)
    got: list[Observation] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 6 and all(g is obs for g in got)
    assert cache.scans == 1 and cache.hits == 5 and most[0] == 1


# ---- the HTTP endpoint, in this process ----------------------------------------------------------------------


@contextmanager
def _server(cache: ScanCache) -> Iterator[MetricsServer]:
    server = MetricsServer(("127.0.0.1", 0), cache)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_metrics_index_and_not_found() -> None:
    with _server(ScanCache(lambda: observe(Roots.from_tree(SERVICES)), 5.0)) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, body = http_get(base + "/metrics")
        assert status == 200 and _value(body.decode(), "dmabuf_bytes") == SERVICES_TOTALS["bytes"]
        assert http_get(base + "/")[0] == 200
        assert http_get(base + "/metrics/../x")[0] == 404
        assert http_get(base + "/favicon.ico")[0] == 404
        status, body = http_get(base + "/metrics", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and gzip.decompress(body).startswith(b"# HELP dmabuf_")
        status, body = http_get(base + "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
        assert status == 200 and body.endswith(b"# EOF\n")
        assert server.cache.scans == 1  # four scrapes within the interval: one scan


def test_a_failing_scan_answers_500_and_the_server_lives_on() -> None:
    calls: list[int] = []

    def scan() -> Observation:
        calls.append(1)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied")
        return observe(Roots.from_tree(SERVICES))

    with _server(ScanCache(scan, 0.0)) as server:
        status, body = http_get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 500 and b"scan failed" in body and server.failures == 1
        assert http_get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200


# ---- --listen ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9870", Listen("127.0.0.1", 9870)),
        ("localhost:0", Listen("localhost", 0)),
        ("0.0.0.0:9870", Listen("0.0.0.0", 9870)),
        ("[::1]:9870", Listen("::1", 9870)),
        ("[::]:65535", Listen("::", 65535)),
    ],
)
def test_parse_listen(text: str, want: Listen) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize(
    "text", ["9870", ":9870", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "1.2.3.4:65536", "::1:80", "[::1]80", "[::1]:"]
)
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


# ---- the command, as a process -------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "dmabuf_inspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd="/",
    )


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("nonsense", "give HOST:PORT"),
        ("127.0.0.1:70000", "from 0 to 65535"),
        ("no-such-host.invalid:9870", "no-such-host.invalid"),
        (":9870", "give the address"),
    ],
)
def test_bad_listen_is_a_usage_error(listen: str, message: str) -> None:
    out = _cli("serve", "--listen", listen)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _cli("serve", "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_min_interval_is_a_usage_error() -> None:
    for value in ("-1", "nan", "x"):
        out = _cli("serve", "--min-interval", value)
        assert out.returncode == 2 and "--min-interval" in out.stderr


def test_serve_caches_within_min_interval_and_stops_on_sigterm(tmp_path: Path) -> None:
    with serve(tmp_path, ["--tree", SERVICES, "serve", "--listen", "127.0.0.1:0", "--min-interval", "30"]) as s:
        first = http_get(s.url)[1].decode()
        second = http_get(s.url)[1].decode()
        stamp = _value(first, "dmabuf_scan_timestamp_seconds")
        assert stamp == _value(second, "dmabuf_scan_timestamp_seconds")  # the same scan
        assert _value(first, "dmabuf_bytes") == SERVICES_TOTALS["bytes"]
        # SIGTERM mid --min-interval 30: exit 0 means it stopped by itself, within stop()'s 10 s
        # before SIGKILL, not at the interval's end.
        assert s.stop() == 0
        assert "Traceback" not in s.stderr_text()


def test_serve_min_interval_zero_scans_each_scrape(tmp_path: Path) -> None:
    with serve(tmp_path, ["--tree", SERVICES, "serve", "--listen", "127.0.0.1:0", "--min-interval", "0"]) as s:
        stamps = {_value(http_get(s.url)[1].decode(), "dmabuf_scan_timestamp_seconds") for _ in range(3)}
        assert len(stamps) == 3


def test_sigint_stops_it_with_130(tmp_path: Path) -> None:
    with serve(tmp_path, ["--tree", SERVICES, "serve", "--listen", "127.0.0.1:0"]) as s:
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(10) == 130
        assert "Traceback" not in s.stderr_text()


def test_listening_wider_is_said_on_stderr(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    err = tmp_path / "err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmabuf_inspect", "--tree", SERVICES, "serve", "--listen", f"0.0.0.0:{port}"],
            stderr=f,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while b"serving" not in err.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    text = err.read_text()
    assert f"serving http://0.0.0.0:{port}/metrics" in text and "not only this machine" in text


def test_a_cached_scrape_is_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import dmabuf_inspect.metrics.server as server_mod

    renders: list[int] = []
    real = server_mod.registry_of

    def counting(*args: object, **kw: object) -> object:
        renders.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(server_mod, "registry_of", counting)
    with _server(ScanCache(lambda: observe(Roots.from_tree(SERVICES)), 60.0)) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        first, second = http_get(url)[1], http_get(url)[1]
        assert first == second and len(renders) == 1
        om = {"Accept": "application/openmetrics-text;version=1.0.0"}
        assert http_get(url, headers=om)[1].endswith(b"# EOF\n") and len(renders) == 2  # another format
        http_get(url, headers=om)
        assert len(renders) == 2 and server.cache.scans == 1
