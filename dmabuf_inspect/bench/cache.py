"""The latest `dmabuf-inspect bench` results per kernel release, kept in the user's cache.

    $XDG_CACHE_HOME/dmabuf-inspect/bench-<release>.json      (XDG_CACHE_HOME: ~/.cache by default)

The file holds the newest runs, newest first, each a whole bench report (bench-1.schema.json,
read with `BenchReport.from_json`) with the time it was measured:

    {"schema": "dmabuf-inspect-bench-cache/1", "kernel": RELEASE,
     "runs": [{"measured_at": SECONDS_SINCE_EPOCH, "report": BENCH_DOCUMENT}, ...]}

A new run replaces the older ones whose exporters it measured too, so `bench --exporter udmabuf`
does not forget what an earlier run found for the system heap. Writes are atomic (a temporary
file in the same directory, then rename).

Reading only reads this file: nothing is allocated, mapped or measured. `CacheReader` re-reads it
only when it was replaced or changed (inode, mtime, size), so a live view can ask on every refresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmabuf_inspect.bench.model import BenchDocumentError, BenchReport, SizeResult, Spread
from dmabuf_inspect.cachedir import cache_dir
from dmabuf_inspect.errors import DmabufInspectError

CACHE_SCHEMA = "dmabuf-inspect-bench-cache/1"
MAX_RUNS = 8


class BenchCacheError(DmabufInspectError):
    """The cache file exists but cannot be read or is not a bench cache."""


def cache_path(release: str, directory: str | None = None) -> str:
    safe = release.replace(os.sep, "_").replace("\0", "_") or "unknown"
    return os.path.join(directory if directory is not None else cache_dir(), f"bench-{safe}.json")


@dataclass(frozen=True, slots=True)
class ExporterCost:
    """One exporter's cached medians at one size, and against anonymous memory (dma-buf / anon:
    below 1 is cheaper for the first touch, above 1 is faster for bandwidth)."""

    exporter: str
    size_bytes: int
    first_touch_ns_per_page: float | None
    read_mib_s: float | None
    write_mib_s: float | None
    first_touch_vs_anon: float | None
    read_vs_anon: float | None
    write_vs_anon: float | None
    measured_at: float  # seconds since the epoch
    kernel: str


def _measured_exporters(report: BenchReport) -> set[str]:
    return {
        t.exporter
        for t in report.targets
        if t.kind == "dmabuf" and t.exporter and any(s.read_mib_s is not None for s in t.sizes)
    }


def _median(spread: Spread | None) -> float | None:
    return None if spread is None else spread.median


def _nearest(sizes: list[SizeResult], size_bytes: int) -> SizeResult:
    """The measured size nearest to SIZE_BYTES on a log scale."""
    target = math.log2(max(size_bytes, 1))
    return min(sizes, key=lambda s: (abs(math.log2(s.size_bytes) - target), -s.size_bytes))


@dataclass(frozen=True, slots=True)
class CachedRun:
    """One bench run as the cache keeps it: the report and when it was measured."""

    measured_at: float  # seconds since the epoch
    report: BenchReport

    def to_json(self) -> dict[str, Any]:
        return {"measured_at": self.measured_at, "report": self.report.to_json()}

    @classmethod
    def from_json(cls, doc: object, where: str = "run") -> CachedRun:
        """BenchDocumentError when DOC is not a run with a whole bench report."""
        if not isinstance(doc, Mapping) or set(doc) != {"measured_at", "report"}:
            raise BenchDocumentError(f"{where}: expected an object with measured_at and report")
        when = doc["measured_at"]
        if not isinstance(when, int | float) or isinstance(when, bool) or not math.isfinite(when):
            raise BenchDocumentError(f"{where}.measured_at: expected seconds since the epoch, got {when!r}")
        return cls(float(when), BenchReport.from_json(doc["report"], f"{where}.report"))


@dataclass(frozen=True, slots=True)
class BenchCache:
    release: str
    runs: tuple[CachedRun, ...]  # newest first

    def cost(self, exporter: str, size_bytes: int) -> ExporterCost | None:
        """The newest run's medians for EXPORTER (an fdinfo exp_name) at the measured size nearest
        to SIZE_BYTES; None when no run measured that exporter."""
        for run in self.runs:
            for t in run.report.targets:
                if t.kind != "dmabuf" or t.exporter != exporter:
                    continue
                sizes = [s for s in t.sizes if s.read_mib_s is not None]
                if not sizes:
                    continue
                s = _nearest(sizes, size_bytes)
                anon = next((r for r in s.relative if r.baseline == "anon"), None)
                return ExporterCost(
                    exporter=exporter,
                    size_bytes=s.size_bytes,
                    first_touch_ns_per_page=_median(s.first_touch_ns_per_page),
                    read_mib_s=_median(s.read_mib_s),
                    write_mib_s=_median(s.write_mib_s),
                    first_touch_vs_anon=_median(anon.first_touch_ns_per_page) if anon else None,
                    read_vs_anon=_median(anon.read_mib_s) if anon else None,
                    write_vs_anon=_median(anon.write_mib_s) if anon else None,
                    measured_at=run.measured_at,
                    kernel=run.report.kernel,
                )
        return None


def parse_cache(text: str | bytes, release: str) -> BenchCache:
    """A cache file's text -> BenchCache; BenchCacheError when it is not one. Runs that are not
    whole bench reports are left out."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BenchCacheError(f"not JSON ({exc})") from None
    if not isinstance(doc, Mapping) or doc.get("schema") != CACHE_SCHEMA or not isinstance(doc.get("runs"), list):
        raise BenchCacheError(f"not a {CACHE_SCHEMA} document")
    runs = []
    for i, run in enumerate(doc["runs"]):
        with contextlib.suppress(BenchDocumentError):
            runs.append(CachedRun.from_json(run, f"runs[{i}]"))
    return BenchCache(release, tuple(runs))


def load(release: str, directory: str | None = None) -> BenchCache | None:
    """The cached runs for kernel RELEASE; None when there is no cache file. BenchCacheError when
    it is unreadable or garbled."""
    path = cache_path(release, directory)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BenchCacheError(f"{path}: {exc.strerror or exc}") from None
    try:
        return parse_cache(text, release)
    except BenchCacheError as exc:
        raise BenchCacheError(f"{path}: {exc}") from None


def save(report: BenchReport, *, directory: str | None = None, now: float | None = None) -> str:
    """Keep REPORT as the newest run for its kernel; returns the path. Older runs stay only for
    exporters the newer ones did not measure. OSError when it cannot be written."""
    release = report.kernel
    directory = directory if directory is not None else cache_dir()
    path = cache_path(release, directory)
    try:
        old = load(release, directory)
    except BenchCacheError:
        old = None  # a garbled cache is replaced
    runs = [CachedRun(time.time() if now is None else now, report)]
    covered = _measured_exporters(report)
    for run in old.runs if old is not None else ():
        mine = _measured_exporters(run.report)
        if mine - covered and len(runs) < MAX_RUNS:
            runs.append(run)
            covered |= mine
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"schema": CACHE_SCHEMA, "kernel": release, "runs": [r.to_json() for r in runs]}, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class CacheReader:
    """Reads a release's cache file again only when it was replaced, or its mtime or size changed."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self._key: tuple[str, int, int, int] | None = None
        self._value: tuple[BenchCache | None, str | None] = (None, None)

    def read(self, release: str) -> tuple[BenchCache | None, str | None]:
        """(the cache or None, why it could not be read or None)."""
        path = cache_path(release, self.directory)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._key, self._value = None, (None, None)
            return self._value
        except OSError as exc:
            return None, f"{path}: {exc.strerror or exc}"
        key = (path, st.st_ino, st.st_mtime_ns, st.st_size)  # save() renames: a new inode each time
        if key != self._key:
            try:
                value: tuple[BenchCache | None, str | None] = (load(release, self.directory), None)
            except BenchCacheError as exc:
                value = (None, str(exc))
            self._key, self._value = key, value
        return self._value
