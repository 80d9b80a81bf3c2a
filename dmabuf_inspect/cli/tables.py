"""Plain-text and CSV tables for the CLI. Every cell that a process chose is escaped."""

from __future__ import annotations

import io
from collections.abc import Sequence

from dmabuf_inspect.units import human_bytes

__all__ = ["csv_cell", "human_bytes", "render_csv", "render_table"]

# A spreadsheet reads a cell that starts with one of these as a formula (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell; the last column is never padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(headers) - 1
    formats = ["{}" if i == last else f"{{:>{w}}}" if i in right else f"{{:<{w}}}" for i, w in enumerate(widths)]
    line = "  ".join(formats).format
    return "\n".join(line(*row).rstrip() for row in (headers, *rows))


def csv_cell(value: str | int | None) -> str | int:
    """A cell as OWASP's CSV injection guidance has it: text that starts with = + - @, a tab or a
    carriage return gets a leading single quote, so that a spreadsheet shows it as text instead of
    running it as a formula. Numbers stay numbers; None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def render_csv(headers: Sequence[str], rows: Sequence[Sequence[str | int | None]]) -> str:
    """RFC 4180 CSV with every text cell in double quotes (a quote inside is doubled), numbers bare,
    and text cells neutralized by csv_cell(): what OWASP advises against CSV injection."""
    import csv  # only for --csv: the tables never pay for it

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(headers)
    writer.writerows([csv_cell(c) for c in row] for row in rows)
    return out.getvalue()
