"""Sizes as people write and read them: one parser and one formatter for every front end."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class SizeError(ValueError):
    """A size that `parse_size` refuses; the message quotes the text (repr, so it is printable)."""


SIZE_GRAMMAR = (
    "a whole number of bytes, or a number with a K, M, G or T suffix (powers of 1024; KiB and KB "
    "mean the same, case does not matter), e.g. 4096, 64K, 1.5M, 2GiB; a decimal must come to whole bytes"
)
_MULTIPLIERS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4096', '4K', '64kib', '1.5M', '2 GiB' -> bytes; the inverse of `human_bytes` where that
    is exact (human_bytes(1536) == '1.5 KiB', parse_size('1.5 KiB') == 1536).

    Grammar (SIZE_GRAMMAR): DIGITS[.DIGITS] [K|M|G|T][i][B], any case, blanks around and before
    the unit allowed. Units are powers of 1024 whether or not the `i` is there; `B` alone means
    bytes. The value must be a whole number of bytes and more than 0. Raises SizeError.
    """
    import re
    from decimal import Decimal

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(I?)B?|(B?))\s*", text, re.IGNORECASE | re.ASCII)
    if not match:
        raise SizeError(f"size {text!r} is not a number with an optional K, M, G or T suffix")
    value = Decimal(match.group(1)) * _MULTIPLIERS[(match.group(2) or "").upper()]
    if value != value.to_integral_value():
        raise SizeError(f"size {text!r} is not a whole number of bytes")
    if value <= 0:
        raise SizeError(f"size {text!r} must be more than 0")
    return int(value)
