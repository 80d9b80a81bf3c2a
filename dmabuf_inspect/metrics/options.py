"""What the metrics export, and the command-line options that say it (for `metrics` and `serve`).

No prometheus_client here: `--help` and argument errors cost no import of it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

DEFAULT_TOP = 20


@dataclass(frozen=True, slots=True)
class MetricOptions:
    top: int = DEFAULT_TOP  # processes and cgroups exported one by one, largest first
    per_process: bool = False  # every process, not the top N
    per_cgroup: bool = False  # every cgroup, not the top N

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MetricOptions:
        return cls(top=args.top, per_process=args.per_process, per_cgroup=args.per_cgroup)


DEFAULT_OPTIONS = MetricOptions()


def top_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--top, --per-process, --per-cgroup and --no-maps."""
    parser.add_argument(
        "--top",
        type=top_count,
        default=DEFAULT_TOP,
        metavar="N",
        help="export the N largest processes and the N largest cgroups one by one (default %(default)s)",
    )
    parser.add_argument("--per-process", action="store_true", help="export every process holding dma-bufs")
    parser.add_argument("--per-cgroup", action="store_true", help="export every cgroup holding dma-bufs")
    parser.add_argument("--no-maps", action="store_true", help="skip /proc/PID/maps (faster; misses fd-less mappings)")
