"""The bench's results as typed records: what a worker process sends back, what a report holds,
what the cache keeps. Every record has `to_json()` and `from_json()`; `from_json` checks the
document and raises BenchDocumentError naming the first bad field.

    BenchReport                   the `bench --json` document (schemas/bench-1.schema.json)
      TargetResult                one exporter, fd or baseline
        SizeResult                one size: a Spread of each figure over the repeats
          Relative                against one baseline: a Spread of the ratios within each pass

    PassRequest                   what a worker process is asked to do: every size of every target once
      TargetSpec                  one target
    TargetPass                    one target's findings in one pass (a worker's answer is a list)
      Sample                      one size: the Figures of its timed turn, or why there are none

How the figures are measured: dmabuf_inspect.bench.runner.

This module imports nothing that measures (no ctypes, no mmap), so the cache can read reports
cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar, cast

from dmabuf_inspect.errors import DmabufInspectError

SCHEMA = "dmabuf-inspect-bench/1"
FIGURES = ("mmap_ns", "first_touch_ns_per_page", "write_mib_s", "read_mib_s")
"""The figures that have a ratio to the baselines."""
ALL_FIGURES = (*FIGURES, "sync_pair_ns")
HIGHER_IS_BETTER = frozenset({"write_mib_s", "read_mib_s"})
BASELINES = ("anon", "memfd")

Kind = Literal["dmabuf", "baseline"]
Baseline = Literal["anon", "memfd"]

_T = TypeVar("_T")


class BenchDocumentError(DmabufInspectError, ValueError):
    """A bench document (or a worker's answer) that does not have the expected shape."""


# ---- checking a parsed JSON document ------------------------------------------------------


def _fail(where: str, expected: str, value: object) -> BenchDocumentError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BenchDocumentError(f"{where}: expected {expected}, got {shown}")


def _object(value: object, where: str, keys: Sequence[str]) -> Mapping[str, Any]:
    """VALUE as a JSON object with exactly KEYS."""
    if not isinstance(value, Mapping):
        raise _fail(where, "an object", value)
    missing = [k for k in keys if k not in value]
    if missing:
        raise BenchDocumentError(f"{where}: missing {', '.join(missing)}")
    extra = sorted(str(k) for k in value if k not in keys)
    if extra:
        raise BenchDocumentError(f"{where}: unexpected {', '.join(extra)}")
    return value


def _int(value: object, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(where, f"a whole number >= {minimum}", value)
    return value


def _number(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise _fail(where, "a number >= 0", value)
    return float(value)


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def _optional(check: Callable[[object, str], _T], value: object, where: str) -> _T | None:
    return None if value is None else check(value, where)


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, "a list", value)
    return value


def _choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(where, " or ".join(repr(c) for c in choices), value)
    return value


def _opt_number(value: object, where: str) -> float | None:
    return _optional(_number, value, where)


def _opt_str(value: object, where: str) -> str | None:
    return _optional(_str, value, where)


# ---- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, quartiles (inclusive method), min and max of one figure over n values, in the
    figure's unit."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        if not samples:
            raise ValueError("no samples")
        if len(samples) == 1:
            v = float(samples[0])
            return cls(v, v, v, v, v, 1)
        import statistics  # only the runner computes spreads; the cache only reads them

        q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(med, q1, q3, float(min(samples)), float(max(samples)), len(samples))

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max, "n": self.n}

    @classmethod
    def from_json(cls, doc: object, where: str = "spread") -> Spread:
        d = _object(doc, where, ("median", "q1", "q3", "min", "max", "n"))
        return cls(
            median=_number(d["median"], f"{where}.median"),
            q1=_number(d["q1"], f"{where}.q1"),
            q3=_number(d["q3"], f"{where}.q3"),
            min=_number(d["min"], f"{where}.min"),
            max=_number(d["max"], f"{where}.max"),
            n=_int(d["n"], f"{where}.n", 1),
        )


def _spread_json(s: Spread | None) -> dict[str, Any] | None:
    return None if s is None else s.to_json()


def _spread_from(doc: object, where: str) -> Spread | None:
    return None if doc is None else Spread.from_json(doc, where)


@dataclass(frozen=True, slots=True)
class Relative:
    """A dma-buf's figures divided by a baseline's, pass by pass (for bandwidth above 1 is
    faster, for times above 1 is slower)."""

    baseline: Baseline
    mmap_ns: Spread | None
    first_touch_ns_per_page: Spread | None
    write_mib_s: Spread | None
    read_mib_s: Spread | None

    def to_json(self) -> dict[str, Any]:
        """The ratios; the baseline's name is the key they are kept under."""
        return {f: _spread_json(getattr(self, f)) for f in FIGURES}

    @classmethod
    def from_json(cls, baseline: str, doc: object, where: str = "relative") -> Relative:
        name = cast(Baseline, _choice(baseline, f"{where} (its name)", BASELINES))
        d = _object(doc, where, FIGURES)
        spread = {f: _spread_from(d[f], f"{where}.{f}") for f in FIGURES}
        return cls(
            name,
            mmap_ns=spread["mmap_ns"],
            first_touch_ns_per_page=spread["first_touch_ns_per_page"],
            write_mib_s=spread["write_mib_s"],
            read_mib_s=spread["read_mib_s"],
        )


class _Spreads(TypedDict):
    mmap_ns: Spread | None
    first_touch_ns_per_page: Spread | None
    write_mib_s: Spread | None
    read_mib_s: Spread | None
    sync_pair_ns: Spread | None


def size_spreads(spreads: Mapping[str, Spread | None]) -> _Spreads:
    """The figures of a SizeResult, by name."""
    return _Spreads(
        mmap_ns=spreads.get("mmap_ns"),
        first_touch_ns_per_page=spreads.get("first_touch_ns_per_page"),
        write_mib_s=spreads.get("write_mib_s"),
        read_mib_s=spreads.get("read_mib_s"),
        sync_pair_ns=spreads.get("sync_pair_ns"),
    )


_SIZE_KEYS = ("size_bytes", "pages", "passes", *ALL_FIGURES, "error", "relative")


@dataclass(frozen=True, slots=True)
class SizeResult:
    """One target at one size, over all repeats."""

    size_bytes: int
    pages: int
    passes: int  # write/read passes over the buffer per timed block
    mmap_ns: Spread | None = None
    first_touch_ns_per_page: Spread | None = None
    write_mib_s: Spread | None = None
    read_mib_s: Spread | None = None
    sync_pair_ns: Spread | None = None  # None for the baselines, and for a failed SYNC
    error: str | None = None  # why figures are missing (allocation, mmap or SYNC failed)
    relative: tuple[Relative, ...] = ()  # dma-bufs only: against each baseline of the same run

    def to_json(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "pages": self.pages,
            "passes": self.passes,
            **{f: _spread_json(getattr(self, f)) for f in ALL_FIGURES},
            "error": self.error,
            "relative": {r.baseline: r.to_json() for r in self.relative},
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "size") -> SizeResult:
        d = _object(doc, where, _SIZE_KEYS)
        relative = d["relative"]
        if not isinstance(relative, Mapping):
            raise _fail(f"{where}.relative", "an object", relative)
        return cls(
            _int(d["size_bytes"], f"{where}.size_bytes", 1),
            _int(d["pages"], f"{where}.pages", 1),
            _int(d["passes"], f"{where}.passes", 1),
            **size_spreads({f: _spread_from(d[f], f"{where}.{f}") for f in ALL_FIGURES}),
            error=_opt_str(d["error"], f"{where}.error"),
            relative=tuple(Relative.from_json(b, r, f"{where}.relative.{b}") for b, r in relative.items()),
        )


_TARGET_KEYS = ("target", "kind", "exporter", "exporter_class", "error", "sizes")


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One target over all sizes."""

    target: str  # "udmabuf", a heap name, "fd:N", or a baseline "anon" / "memfd"
    kind: Kind
    exporter: str | None  # fdinfo exp_name of the dma-buf; None for the baselines
    exporter_class: str | None
    sizes: tuple[SizeResult, ...] = ()
    error: str | None = None  # why the target was not measured at all

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "exporter": self.exporter,
            "exporter_class": self.exporter_class,
            "error": self.error,
            "sizes": [s.to_json() for s in self.sizes],
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "target") -> TargetResult:
        d = _object(doc, where, _TARGET_KEYS)
        return cls(
            _str(d["target"], f"{where}.target"),
            cast(Kind, _choice(d["kind"], f"{where}.kind", ("dmabuf", "baseline"))),
            _opt_str(d["exporter"], f"{where}.exporter"),
            _opt_str(d["exporter_class"], f"{where}.exporter_class"),
            tuple(SizeResult.from_json(s, f"{where}.sizes[{i}]") for i, s in enumerate(_list(d["sizes"], where))),
            _opt_str(d["error"], f"{where}.error"),
        )


_REPORT_KEYS = ("schema", "kernel", "page_size", "repeat", "processes", "notes", "targets")


@dataclass(frozen=True, slots=True)
class BenchReport:
    """A whole bench run; `to_json()` is the `bench --json` document."""

    kernel: str  # uname -r of the machine measured
    page_size_bytes: int
    repeat: int  # repeats; every Spread is over these (relative ones: over the passes)
    targets: tuple[TargetResult, ...]
    notes: tuple[str, ...] = ()
    processes: int = 0  # worker processes per repeat; 0: measured in the bench's own process

    def target(self, name: str) -> TargetResult:
        for t in self.targets:
            if t.target == name:
                return t
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The document of schemas/bench-1.schema.json."""
        return {
            "schema": SCHEMA,
            "kernel": self.kernel,
            "page_size": self.page_size_bytes,
            "repeat": self.repeat,
            "processes": self.processes,
            "notes": list(self.notes),
            "targets": [t.to_json() for t in self.targets],
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "report") -> BenchReport:
        """A parsed `bench --json` document -> BenchReport; BenchDocumentError naming the first
        field that is missing, extra or of the wrong type."""
        d = _object(doc, where, _REPORT_KEYS)
        if d["schema"] != SCHEMA:
            raise _fail(f"{where}.schema", repr(SCHEMA), d["schema"])
        notes = _list(d["notes"], f"{where}.notes")
        targets = _list(d["targets"], f"{where}.targets")
        return cls(
            _str(d["kernel"], f"{where}.kernel"),
            _int(d["page_size"], f"{where}.page_size", 1),
            _int(d["repeat"], f"{where}.repeat", 1),
            tuple(TargetResult.from_json(t, f"{where}.targets[{i}]") for i, t in enumerate(targets)),
            notes=tuple(_str(n, f"{where}.notes[{i}]") for i, n in enumerate(notes)),
            processes=_int(d["processes"], f"{where}.processes", 0),
        )


# ---- a pass: what a worker process is asked, and answers ----------------------------------


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What a pass measures: one target."""

    name: str  # "udmabuf", a heap name, "fd:N", "anon" or "memfd"
    kind: Kind
    given_fd: int | None = None  # --fd: an fd the bench inherited (a worker inherits it in turn)
    given_size_bytes: int = 0  # the given fd's buffer, in whole pages
    writable: bool = True
    exporter: str | None = None  # known in advance for a given fd
    exporter_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "given_fd": self.given_fd,
            "given_size_bytes": self.given_size_bytes,
            "writable": self.writable,
            "exporter": self.exporter,
            "exporter_class": self.exporter_class,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "spec") -> TargetSpec:
        keys = ("name", "kind", "given_fd", "given_size_bytes", "writable", "exporter", "exporter_class")
        d = _object(doc, where, keys)
        if not isinstance(d["writable"], bool):
            raise _fail(f"{where}.writable", "true or false", d["writable"])
        return cls(
            _str(d["name"], f"{where}.name"),
            cast(Kind, _choice(d["kind"], f"{where}.kind", ("dmabuf", "baseline"))),
            _optional(lambda v, w: _int(v, w, 0), d["given_fd"], f"{where}.given_fd"),
            _int(d["given_size_bytes"], f"{where}.given_size_bytes", 0),
            d["writable"],
            _opt_str(d["exporter"], f"{where}.exporter"),
            _opt_str(d["exporter_class"], f"{where}.exporter_class"),
        )


@dataclass(frozen=True, slots=True)
class PassRequest:
    """One pass: every size of every target once, with buffers made under these roots."""

    specs: tuple[TargetSpec, ...]
    sizes_bytes: tuple[int, ...]
    rotate: int  # the pass's number: the targets' order within a size rotates by it
    dev_root: str = "/dev"
    sys_root: str = "/sys"

    def to_json(self) -> dict[str, Any]:
        return {
            "specs": [s.to_json() for s in self.specs],
            "sizes_bytes": list(self.sizes_bytes),
            "rotate": self.rotate,
            "dev_root": self.dev_root,
            "sys_root": self.sys_root,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "request") -> PassRequest:
        d = _object(doc, where, ("specs", "sizes_bytes", "rotate", "dev_root", "sys_root"))
        specs = _list(d["specs"], f"{where}.specs")
        sizes = _list(d["sizes_bytes"], f"{where}.sizes_bytes")
        return cls(
            tuple(TargetSpec.from_json(s, f"{where}.specs[{i}]") for i, s in enumerate(specs)),
            tuple(_int(s, f"{where}.sizes_bytes[{i}]", 1) for i, s in enumerate(sizes)),
            _int(d["rotate"], f"{where}.rotate", 0),
            _str(d["dev_root"], f"{where}.dev_root"),
            _str(d["sys_root"], f"{where}.sys_root"),
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """One timed turn of one target at one size; each figure the best of its timings."""

    mmap_ns: float
    first_touch_ns_per_page: float
    write_mib_s: float | None  # None for a read-only fd
    read_mib_s: float
    sync_pair_ns: float | None  # None for the baselines, and when SYNC failed

    def get(self, figure: str) -> float | None:
        value: float | None = getattr(self, figure)
        return value

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in ALL_FIGURES}

    @classmethod
    def from_json(cls, doc: object, where: str = "figures") -> Figures:
        d = _object(doc, where, ALL_FIGURES)
        return cls(
            _number(d["mmap_ns"], f"{where}.mmap_ns"),
            _number(d["first_touch_ns_per_page"], f"{where}.first_touch_ns_per_page"),
            _opt_number(d["write_mib_s"], f"{where}.write_mib_s"),
            _number(d["read_mib_s"], f"{where}.read_mib_s"),
            _opt_number(d["sync_pair_ns"], f"{where}.sync_pair_ns"),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One target at one size in one pass: its figures (None when allocation or mmap failed),
    and why figures are missing (a failed SYNC leaves the others)."""

    size_bytes: int
    figures: Figures | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "figures": None if self.figures is None else self.figures.to_json(),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "sample") -> Sample:
        d = _object(doc, where, ("size_bytes", "figures", "error"))
        figures = d["figures"]
        return cls(
            _int(d["size_bytes"], f"{where}.size_bytes", 1),
            None if figures is None else Figures.from_json(figures, f"{where}.figures"),
            _opt_str(d["error"], f"{where}.error"),
        )


@dataclass(frozen=True, slots=True)
class TargetPass:
    """One target's findings in one pass: a Sample per size it measured (sizes it sat out, such
    as those past a given fd's buffer, have none)."""

    exporter: str | None
    exporter_class: str | None
    error: str | None  # why no size could be measured (the device could not be opened)
    samples: tuple[Sample, ...] = ()

    def sample(self, size_bytes: int) -> Sample | None:
        for s in self.samples:
            if s.size_bytes == size_bytes:
                return s
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "exporter_class": self.exporter_class,
            "error": self.error,
            "samples": [s.to_json() for s in self.samples],
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "target") -> TargetPass:
        d = _object(doc, where, ("exporter", "exporter_class", "error", "samples"))
        samples = _list(d["samples"], f"{where}.samples")
        return cls(
            _opt_str(d["exporter"], f"{where}.exporter"),
            _opt_str(d["exporter_class"], f"{where}.exporter_class"),
            _opt_str(d["error"], f"{where}.error"),
            tuple(Sample.from_json(s, f"{where}.samples[{i}]") for i, s in enumerate(samples)),
        )


def pass_to_json(targets: Sequence[TargetPass]) -> list[dict[str, Any]]:
    """A worker's answer: its pass, one entry per target in the request's order."""
    return [t.to_json() for t in targets]


def pass_from_json(doc: object, count: int) -> tuple[TargetPass, ...]:
    """A worker's answer -> its TargetPasses; BenchDocumentError unless there are COUNT."""
    items = _list(doc, "pass")
    if len(items) != count:
        raise BenchDocumentError(f"pass: expected {count} targets, got {len(items)}")
    return tuple(TargetPass.from_json(t, f"pass[{i}]") for i, t in enumerate(items))
