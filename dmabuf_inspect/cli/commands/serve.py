"""Serve Prometheus metrics over HTTP at /metrics, scanning when scraped.

Each scrape of /metrics scans the machine (the same metrics as `metrics`), one scan at a time;
a scrape within --min-interval seconds of the last scan gets its result. It listens on
127.0.0.1:9870 by default: the metrics name processes and cgroups, so listening on other
interfaces (--listen 0.0.0.0:9870, --listen [::]:9870) must be asked for. --listen HOST:0
picks a free port; the address is printed on stderr. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from types import FrameType

from dmabuf_inspect.errors import DmabufInspectError, UsageError
from dmabuf_inspect.metrics import options

NAME = "serve"
DEFAULT_LISTEN = "127.0.0.1:9870"  # metrics.server.DEFAULT_LISTEN
DEFAULT_MIN_INTERVAL_S = 5.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="address to listen on (default %(default)s; [::1]:PORT for IPv6; 0.0.0.0:PORT: every interface)",
    )
    parser.add_argument(
        "--min-interval",
        type=_seconds,
        default=DEFAULT_MIN_INTERVAL_S,
        metavar="S",
        help="scrapes within S seconds of the last scan get its result (default %(default)s; 0: scan every scrape)",
    )
    options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dmabuf_inspect.metrics.server import MetricsServer, ScanCache, is_loopback, parse_listen, resolve
    from dmabuf_inspect.metrics.source import observe
    from dmabuf_inspect.textsafe import escape

    try:
        listen = parse_listen(args.listen)
        family, address = resolve(listen)
    except ValueError as exc:
        raise UsageError(f"--listen {escape(str(exc))}") from None
    roots, include_maps = args.roots, not args.no_maps
    cache = ScanCache(lambda: observe(roots, include_maps=include_maps), args.min_interval)
    try:
        server = MetricsServer(address, cache, options.MetricOptions.from_args(args), family)
    except OSError as exc:
        raise DmabufInspectError(f"cannot listen on {escape(str(listen))}: {exc.strerror or exc}") from None
    stopped_by: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped_by.append(signum)
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for the loop

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    host = str(server.server_address[0])
    shown = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
    print(f"dmabuf-inspect: serving http://{shown}/metrics", file=sys.stderr, flush=True)
    if not is_loopback(host):
        print(
            f"dmabuf-inspect: listening on {shown}, not only this machine: whoever reaches it sees process "
            "names and cgroups",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 130 if stopped_by and stopped_by[0] == signal.SIGINT else 0
