"""Bench reports built from made-up passes by the bench's own aggregation (no dma-buf needed)."""

from __future__ import annotations

from collections.abc import Sequence

from dmabuf_inspect.bench import runner
from dmabuf_inspect.bench.model import BenchReport, Figures, Sample, TargetPass, TargetSpec


def sample(
    size_bytes: int,
    *,
    touch_ns: float,
    read_mib_s: float,
    write_mib_s: float | None = 400.0,
    mmap_ns: float = 50_000.0,
    sync_ns: float | None = None,
    error: str | None = None,
) -> Sample:
    """One target's timed turn at one size."""
    return Sample(size_bytes, Figures(mmap_ns, touch_ns, write_mib_s, read_mib_s, sync_ns), error)


def report(
    kernel: str,
    specs: Sequence[TargetSpec],
    sizes: Sequence[int],
    passes: Sequence[Sequence[TargetPass]],
    *,
    per_repeat: int = 1,
    processes: int = 0,
) -> BenchReport:
    """PASSES (each one TargetPass per spec) aggregated as run_bench does, PER_REPEAT per repeat."""
    targets = runner.aggregate(specs, sizes, passes, per_repeat)
    return BenchReport(kernel, 4096, len(passes) // per_repeat, targets, processes=processes)


def scaled_report(exporters: dict[str, float], kernel: str, sizes: Sequence[int]) -> BenchReport:
    """Exporter E's first touch costs SCALE times anon's, its bandwidth is anon's / SCALE; two
    identical passes, one per repeat."""
    specs = [TargetSpec(e, "dmabuf") for e in exporters]
    specs += [TargetSpec("anon", "baseline"), TargetSpec("memfd", "baseline")]
    scales = [*exporters.values(), 1.0, 1.0]
    one_pass = [
        TargetPass(
            s.name if s.kind == "dmabuf" else None,
            "heap" if s.kind == "dmabuf" else None,
            None,
            tuple(
                sample(
                    z,
                    touch_ns=20_000.0 * k + z / 4096,
                    read_mib_s=2000.0 / k,
                    write_mib_s=400.0 / k,
                    sync_ns=9000.0 if s.kind == "dmabuf" else None,
                )
                for z in sizes
            ),
        )
        for s, k in zip(specs, scales, strict=True)
    ]
    return report(kernel, specs, sizes, [one_pass, one_pass])
