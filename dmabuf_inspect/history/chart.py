"""Totals over time as a chart: in the terminal (plotext), as SVG (written here) or PNG (Pillow).

    series = ChartSeries.of_report(doc)                 # from a `report` document
    print(terminal_chart(series, width=80, height=16))   # None when plotext is missing
    write_svg(series, "totals.svg")
    write_png(series, "totals.png")                      # ChartError without Pillow

plotext and Pillow are imported only here, and only when a chart is drawn: no other command
pays for them. The SVG needs nothing: it is a few lines of text. The PNG is drawn with
Pillow's ImageDraw, an optional extra (`pip install 'dmabuf-inspect[png]'`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from dmabuf_inspect.errors import DmabufInspectError

_MIB = float(1 << 20)
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


class ChartError(DmabufInspectError):
    pass


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    values: tuple[float | None, ...]  # None: not measured at that sample (no bufinfo)


@dataclass(frozen=True, slots=True)
class ChartSeries:
    title: str
    seconds: tuple[float, ...]  # since the first sample
    lines: tuple[Line, ...]  # in MiB
    unit: str = "MiB"

    @classmethod
    def of_report(cls, doc: dict[str, Any], title: str | None = None) -> ChartSeries:
        totals = doc.get("totals") or []
        t0 = totals[0]["time"] if totals else 0.0
        seconds = tuple(float(t["time"]) - t0 for t in totals)
        lines = [Line("total", tuple(t["bytes"] / _MIB for t in totals))]
        if any(t.get("kernel_only_bytes") is not None for t in totals):
            ko = tuple(None if t.get("kernel_only_bytes") is None else t["kernel_only_bytes"] / _MIB for t in totals)
            lines.append(Line("kernel-only", ko))
        kernel = doc.get("kernel", "")
        return cls(
            title or f"dma-buf bytes over {_duration(seconds[-1] if seconds else 0)} ({kernel})", seconds, tuple(lines)
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _tick_text(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


def terminal_chart(series: ChartSeries, *, width: int = 80, height: int = 16, color: bool = False) -> str | None:
    """The chart as text for a terminal; None when plotext can't be imported."""
    if not series.seconds:
        return None
    try:
        import plotext  # type: ignore[import-untyped]
    except ImportError:
        return None
    fig = plotext.figure
    fig.clear()
    fig.plot_size(width, height)
    for line in series.lines:
        pts = [(t, v) for t, v in zip(series.seconds, line.values, strict=True) if v is not None]
        if not pts:
            continue
        sig = fig.signal([p[0] for p in pts], [p[1] for p in pts])
        sig.label(line.label)
        sig.lines()
        fig.draw(sig)
    fig.title(series.title)
    fig.label("seconds", "x")
    fig.label(series.unit, "y")
    text: str = fig.build().string(colorless=not color)
    fig.clear()
    return text.rstrip("\n")


@dataclass(frozen=True, slots=True)
class _Layout:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_ticks: list[float]
    y_ticks: list[float]

    def x(self, t: float) -> float:
        lo, hi = self.x_ticks[0], self.x_ticks[-1]
        return self.left + (t - lo) / (hi - lo or 1) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        return self.height - self.bottom - (v - lo) / (hi - lo or 1) * (self.height - self.top - self.bottom)


def _layout(series: ChartSeries, width: int, height: int) -> _Layout:
    values = [v for line in series.lines for v in line.values if v is not None]
    hi = max(values, default=1.0)
    x_hi = series.seconds[-1] if series.seconds else 1.0
    return _Layout(
        width, height, 70, 20, 40, 50, nice_ticks(0.0, x_hi or 1.0, 6), nice_ticks(0.0, hi if hi > 0 else 1.0, 5)
    )


def _points(series: ChartSeries, line: Line, lay: _Layout) -> list[list[tuple[float, float]]]:
    """The line as runs of points (a gap where a value is missing)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in zip(series.seconds, line.values, strict=True):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((lay.x(t), lay.y(v)))
    return [r for r in runs if r]


def svg_chart(series: ChartSeries, *, width: int = 800, height: int = 400) -> str:
    lay = _layout(series, width, height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{xml_escape(series.title)}</text>',
    ]
    x0, x1 = lay.left, width - lay.right
    y0, y1 = lay.top, height - lay.bottom
    for v in lay.y_ticks:
        y = lay.y(v)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_text(v)}</text>')
    for t in lay.x_ticks:
        x = lay.x(t)
        out.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 5}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{y1 + 19}" text-anchor="middle">{_tick_text(t)}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{height - 12}" text-anchor="middle">seconds</text>')
    out.append(
        f'<text x="16" y="{(y0 + y1) / 2}" text-anchor="middle" transform="rotate(-90 16 {(y0 + y1) / 2})">'
        f"{xml_escape(series.unit)}</text>"
    )
    for i, line in enumerate(series.lines):
        color = _COLORS[i % len(_COLORS)]
        for run in _points(series, line, lay):
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = y0 + 16 + 18 * i
        out.append(
            f'<line x1="{x0 + 10}" y1="{ly - 4}" x2="{x0 + 30}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
        )
        out.append(f'<text x="{x0 + 36}" y="{ly}">{xml_escape(line.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(series: ChartSeries, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg_chart(series))


def write_png(series: ChartSeries, path: str, *, width: int = 800, height: int = 400) -> None:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ChartError(
            "--png needs Pillow: pip install 'dmabuf-inspect[png]' (or use --svg, which needs nothing)"
        ) from None
    lay = _layout(series, width, height)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0, x1 = lay.left, width - lay.right
    y0, y1 = lay.top, height - lay.bottom
    draw.text((width / 2, 14), series.title, fill="black", anchor="mt")
    for v in lay.y_ticks:
        y = lay.y(v)
        draw.line([(x0, y), (x1, y)], fill="#dddddd")
        draw.text((x0 - 6, y), _tick_text(v), fill="black", anchor="rm")
    for t in lay.x_ticks:
        x = lay.x(t)
        draw.line([(x, y1), (x, y1 + 5)], fill="#333333")
        draw.text((x, y1 + 8), _tick_text(t), fill="black", anchor="mt")
    draw.rectangle([(x0, y0), (x1, y1)], outline="#333333")
    draw.text(((x0 + x1) / 2, height - 14), "seconds", fill="black", anchor="mm")
    draw.text((8, y0 - 14), series.unit, fill="black")
    for i, line in enumerate(series.lines):
        color = _COLORS[i % len(_COLORS)]
        for run in _points(series, line, lay):
            if len(run) == 1:
                run = [run[0], run[0]]
            draw.line(run, fill=color, width=2)
        ly = y0 + 12 + 16 * i
        draw.line([(x0 + 10, ly), (x0 + 30, ly)], fill=color, width=2)
        draw.text((x0 + 36, ly), line.label, fill="black", anchor="lm")
    img.save(path, format="PNG")


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """Eight-level block characters for the newest `width` values (the TUI's history strip)."""
    blocks = " ▁▂▃▄▅▆▇█"
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return blocks[4] * len(vals) if hi > 0 else blocks[0] * len(vals)
    return "".join(blocks[1 + round((v - lo) / span * 7)] for v in vals)
