"""An HTTP `/metrics` endpoint that scans when scraped, one scan at a time.

    cache = ScanCache(lambda: observe(roots), min_interval_s=5)
    server = MetricsServer(("127.0.0.1", 9870), cache)       # OSError if it cannot bind
    server.serve_forever()                                   # server.shutdown() from another thread

A scrape runs a scan unless the last one ended less than `min_interval_s` ago; then it gets that
result, as rendered for the scrape before it (one rendering per scan and format). Scrapes that
arrive during a scan wait for it (a lock: never two scans at once) and, when it is recent
enough, share it. The answer is the Prometheus text format, or OpenMetrics when the scraper asks
for it (Prometheus does), gzip-compressed when accepted.
"""

from __future__ import annotations

import gzip
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

from dmabuf_inspect.metrics.collector import registry_of
from dmabuf_inspect.metrics.options import DEFAULT_OPTIONS, MetricOptions
from dmabuf_inspect.metrics.source import Observation
from dmabuf_inspect.records import NamedTuple

DEFAULT_PORT = 9870
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


class ScanCache:
    """The last observation, and the lock that keeps scans one at a time."""

    def __init__(
        self,
        scan: Callable[[], Observation],
        min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scan = scan
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Observation | None = None
        self._last_at = 0.0
        self.scans = 0  # how many scans ran
        self.hits = 0  # how many requests got the last result instead

    def get(self) -> Observation:
        """A fresh observation, or the last one when it ended less than min_interval_s ago.
        Raises what the scan raises (nothing is cached then)."""
        with self._lock:
            last = self._last
            if last is not None and self._clock() - self._last_at < self.min_interval_s:
                self.hits += 1
                return last
            obs = self._scan()
            self._last, self._last_at = obs, self._clock()
            self.scans += 1
            return obs


class Listen(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """'127.0.0.1:9870', '[::1]:9870', 'localhost:9870', '0.0.0.0:9870' -> Listen; ValueError with
    a one-line reason otherwise. Port 0 picks a free port."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: an IPv6 address is written [ADDRESS]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: give HOST:PORT, such as {DEFAULT_LISTEN}")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, such as [::1]:{DEFAULT_PORT}")
    if not host:
        raise ValueError(
            f"{text!r}: give the address to listen on: 127.0.0.1 (this machine) or 0.0.0.0 (every interface)"
        )
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return Listen(host, int(port))


def resolve(listen: Listen) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and socket address to bind; ValueError when the host does not resolve."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"{listen}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsServer(ThreadingHTTPServer):
    """A threading HTTP server whose `/metrics` answers from a ScanCache."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        cache: ScanCache,
        options: MetricOptions = DEFAULT_OPTIONS,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> None:
        self.address_family = family
        self.cache = cache
        self.options = options
        self.failures = 0
        self._render_lock = threading.Lock()
        self._rendered_obs: Observation | None = None
        self._rendered: dict[str, bytes] = {}  # content type -> body, for _rendered_obs
        super().__init__(address, _Handler)

    def render(self, obs: Observation, accept: str) -> tuple[bytes, str]:
        """The exposition of `obs` in the format `accept` asks for, and its content type; made
        once per observation and format, so a scrape that gets the last result costs no rendering."""
        encoder, content_type = choose_encoder(accept)
        with self._render_lock:
            if self._rendered_obs is not obs:
                self._rendered_obs, self._rendered = obs, {}
            body = self._rendered.get(content_type)
            if body is None:
                body = self._rendered[content_type] = encoder(registry_of(lambda: obs, self.options))
        return body, content_type

    @property
    def port(self) -> int:
        return int(self.server_address[1])


_INDEX = b"<html><body><p>dmabuf-inspect: dma-buf metrics at <a href='/metrics'>/metrics</a></p></body></html>\n"


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", _INDEX)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _metrics(self) -> None:
        server = self.server
        try:
            obs = server.cache.get()
        except Exception as exc:  # a failed scan is one 500 and one line on stderr, never a dead server
            server.failures += 1
            line = f"scan failed: {type(exc).__name__}: {exc}"
            print(f"dmabuf-inspect: {line}", file=sys.stderr, flush=True)
            self._send(500, "text/plain; charset=utf-8", line.encode("utf-8", "backslashreplace") + b"\n")
            return
        body, content_type = server.render(obs, self.headers.get("Accept", ""))
        extra = []
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        self._send(200, content_type, body, extra)

    def _send(self, code: int, content_type: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra or ():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a scrape every few seconds is no news."""
