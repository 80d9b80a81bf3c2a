"""Measure what CPU access to dma-bufs costs, per exporter and size, against anon and memfd memory.

For each exporter (udmabuf, or a heap under /dev/dma_heap) and each size, the bench's own worker
processes allocate buffers and time mmap, the first touch per page, steady write and read
bandwidth and the DMA_BUF_IOCTL_SYNC start/end pair; anonymous memory and a memfd are measured
the same way in the same run. Figures are medians over the repeats with their quartiles, and
each dma-buf's ratio to the baselines. With --fd N, an fd this process inherited is measured too.
How it is measured, and why (worker processes, turns, best of k): the docstring of
dmabuf_inspect/bench/runner.py.

Allocating needs access to /dev/udmabuf or /dev/dma_heap/NAME (usually root). It refuses to start
when a pass would hold more than the memory available less a margin (see `alloc --help`): the
largest size times the exporters and baselines. It measures this machine, so it takes no root
option. The result is kept per kernel release in $XDG_CACHE_HOME/dmabuf-inspect/bench-RELEASE.json
(~/.cache by default), where the TUI's buffer detail finds it.
"""

from __future__ import annotations

import argparse
import json
import sys

from dmabuf_inspect.bench import cache as benchcache
from dmabuf_inspect.bench import runner
from dmabuf_inspect.bench.model import BASELINES, BenchReport, Spread
from dmabuf_inspect.cli.commands.alloc import NotEnoughMemoryError, check_memory, read_memory, refuse_root_options
from dmabuf_inspect.errors import EXIT_FAILURE, EXIT_OK, UsageError, describe_oserror
from dmabuf_inspect.textsafe import escape
from dmabuf_inspect.units import SIZE_GRAMMAR, SizeError, human_bytes, parse_size

NAME = "bench"
DEFAULT_SIZES = "4K,64K,1M,16M,64M"


def parse_sizes(text: str) -> tuple[int, ...]:
    """'4K,1.5M' -> sizes in bytes, each a whole number of pages; UsageError otherwise."""
    sizes = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            size = parse_size(part)
        except SizeError as exc:
            raise UsageError(f"--size: {exc}") from None
        if size % runner.PAGE_SIZE:
            raise UsageError(f"--size: size {part.strip()!r} is not a whole number of pages ({runner.PAGE_SIZE} bytes)")
        sizes.append(size)
    if not sizes:
        raise UsageError("--size: give at least one size, e.g. 4K,1M")
    return tuple(sizes)


def _sizes_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_sizes(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--size: ")) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exporter",
        metavar="LIST",
        help="comma-separated: udmabuf and/or heap names such as system (default: udmabuf and every "
        "heap in /dev/dma_heap; none with --fd)",
    )
    parser.add_argument(
        "--size",
        type=_sizes_arg,
        default=DEFAULT_SIZES,
        metavar="LIST",
        help=f"comma-separated sizes, each a whole number of pages (default: %(default)s); a size is {SIZE_GRAMMAR}",
    )
    parser.add_argument(
        "--repeat", type=int, default=runner.DEFAULT_REPEAT, metavar="N", help="repeats (default: %(default)s)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=runner.DEFAULT_PROCESSES,
        metavar="N",
        help="fresh worker processes per repeat, of which each figure keeps the best (default: %(default)s; "
        "0: measure in this process)",
    )
    parser.add_argument("--fd", type=int, metavar="N", help="measure this inherited dma-buf fd too")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (bench-1.schema.json)")


def _exporters(args: argparse.Namespace) -> list[str]:
    if args.exporter is not None:
        names = [n.strip() for n in args.exporter.split(",") if n.strip()]
        if not names:
            raise UsageError("--exporter: give at least one name, e.g. udmabuf,system")
        return names
    if args.fd is not None:
        return []
    from dmabuf_inspect.ioctl.heaps import heap_names

    return ["udmabuf", *(heap_names(args.roots.dev_root) or [])]


def _cell(s: Spread | None, scale: float, digits: int) -> str:
    if s is None:
        return "-"
    return f"{s.median / scale:.{digits}f} ({s.q1 / scale:.{digits}f}-{s.q3 / scale:.{digits}f})"


def print_report(report: BenchReport) -> None:
    where = f"best of {report.processes} processes each" if report.processes else "in this process"
    page = report.page_size_bytes
    print(f"kernel {escape(report.kernel)}, page {page} B, {report.repeat} repeats ({where}); median (q1-q3)")
    header = ("size", "mmap us", "touch ns/page", "write MiB/s", "read MiB/s", "sync pair us")
    for t in report.targets:
        label = escape(t.target)
        if t.kind == "dmabuf":
            label += f"  (exp_name {escape(t.exporter)}, class {escape(t.exporter_class)})"
        else:
            label += "  (baseline)"
        print(f"\n{label}")
        if t.error:
            print(f"  not measured: {escape(t.error)}")
            continue
        rows = [header]
        for s in t.sizes:
            rows.append(
                (
                    human_bytes(s.size_bytes),
                    _cell(s.mmap_ns, 1e3, 1),
                    _cell(s.first_touch_ns_per_page, 1, 0),
                    _cell(s.write_mib_s, 1, 0),
                    _cell(s.read_mib_s, 1, 0),
                    _cell(s.sync_pair_ns, 1e3, 2),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        for s in t.sizes:
            if s.error:
                print(f"  {human_bytes(s.size_bytes)}: {escape(s.error)}")
        for s in t.sizes:
            for rel in s.relative:
                pairs = (
                    ("mmap", rel.mmap_ns),
                    ("touch", rel.first_touch_ns_per_page),
                    ("write", rel.write_mib_s),
                    ("read", rel.read_mib_s),
                )
                parts = [f"{label} x{spread.median:.2f}" for label, spread in pairs if spread is not None]
                print(f"  {human_bytes(s.size_bytes)} / {rel.baseline}: {', '.join(parts)}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    refuse_root_options(args, "bench measures buffers it makes")
    sizes: tuple[int, ...] = args.size
    exporters = _exporters(args)
    largest = human_bytes(max(sizes))
    try:
        check_memory(
            runner.peak_bytes(sizes, exporters),
            f"a pass holding {largest} for each of {_count(len(exporters), 'exporter')} and "
            f"{_count(len(BASELINES), 'baseline')}",
            read_memory(),
        )
    except NotEnoughMemoryError as exc:
        raise NotEnoughMemoryError(f"refusing to measure: {exc}; ask for smaller sizes or fewer exporters") from None
    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(what: str) -> None:
            print(f"measuring {escape(what)} ...", file=sys.stderr, flush=True)

    report = runner.run_bench(
        exporters=exporters,
        fd=args.fd,
        sizes=sizes,
        repeat=args.repeat,
        processes=args.processes,
        dev_root=args.roots.dev_root,
        sys_root=args.roots.sys_root,
        progress=progress,
    )
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    measured = any(
        t.kind == "dmabuf" and any(s.error is None or s.read_mib_s is not None for s in t.sizes) for t in report.targets
    )
    if not measured:
        if not args.json:
            print("dmabuf-inspect: bench: no dma-buf could be measured (see above)", file=sys.stderr)
        return EXIT_FAILURE
    _keep(report)
    return EXIT_OK


def _keep(report: BenchReport) -> None:
    """The latest result per kernel, for the TUI; failing to write it is only a warning."""
    path = benchcache.cache_path(report.kernel)
    try:
        benchcache.save(report)
    except OSError as exc:
        print(
            f"dmabuf-inspect: bench: warning: result not kept: {escape(describe_oserror(f'writing {path}', exc))}",
            file=sys.stderr,
        )
