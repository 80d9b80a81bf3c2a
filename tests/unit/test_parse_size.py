"""units.parse_size: the one size grammar of `alloc --size` and `bench --size`, and its round
trip with units.human_bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_inspect.units import SizeError, human_bytes, parse_size

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("1", 1),
        ("4K", 4096),
        ("4k", 4096),
        ("4KiB", 4096),
        ("4kib", 4096),
        ("4KB", 4096),
        ("4kb", 4096),
        ("4 KiB", 4096),
        (" 1M ", 1 << 20),
        ("16MiB", 16 << 20),
        ("1G", GIB),
        ("2T", 2 << 40),
        ("1.5M", 3 << 19),
        ("0.5K", 512),
        ("512 B", 512),
        ("4096b", 4096),
        ("1.0 KiB", 1024),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is not a number with an optional K, M, G or T suffix"),
        ("K", "is not a number"),
        ("1X", "is not a number with an optional K, M, G or T suffix"),
        ("4iB", "is not a number"),
        ("4KBB", "is not a number"),
        ("-1", "is not a number"),
        ("1e3", "is not a number"),
        ("1,5K", "is not a number"),
        (".5K", "is not a number"),
        ("\u0664K", "is not a number"),  # an Arabic-Indic four: digits are ASCII
        ("0", "must be more than 0"),
        ("0K", "must be more than 0"),
        ("1.5", "is not a whole number of bytes"),
        ("0.1K", "is not a whole number of bytes"),
        ("\x1b[2J", "\\x1b[2J"),
    ],
)
def test_parse_size_refuses_in_one_printable_line(text: str, why: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    message = str(info.value)
    assert message.startswith(f"size {text!r} ") and why in message
    assert message.isprintable()
    assert isinstance(info.value, ValueError)


UNITS = st.sampled_from([("", 1), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)])


@given(st.integers(min_value=1, max_value=1 << 60))
def test_plain_numbers_are_bytes(n: int) -> None:
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}B") == n


@given(st.integers(min_value=1, max_value=1 << 20), UNITS, st.sampled_from(["", "B", "iB", "ib", "b"]), st.booleans())
def test_every_spelling_of_a_unit_is_a_power_of_1024(m: int, unit: tuple[str, int], tail: str, upper: bool) -> None:
    suffix, factor = unit
    spelled = (suffix if upper else suffix.lower()) + (tail if suffix else tail.replace("i", "").replace("I", ""))
    assert parse_size(f"{m}{spelled}") == m * factor


@given(st.integers(min_value=1, max_value=1023), st.integers(min_value=0, max_value=4))
def test_round_trip_with_human_bytes_at_whole_units(m: int, power: int) -> None:
    n = m << (10 * power)
    assert parse_size(human_bytes(n)) == n


@given(st.integers(min_value=1, max_value=1022), st.integers(min_value=1, max_value=4))
def test_round_trip_with_human_bytes_at_half_units(m: int, power: int) -> None:
    n = (2 * m + 1) << (10 * power - 1)  # m.5 units: human_bytes writes it exactly
    assert human_bytes(n).endswith(".5 " + ["KiB", "MiB", "GiB", "TiB"][power - 1])
    assert parse_size(human_bytes(n)) == n


@given(st.integers(min_value=1, max_value=1 << 50))
def test_human_bytes_parses_back_to_within_its_rounding(n: int) -> None:
    text = human_bytes(n)
    value, unit = text.split()
    factor = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
    tenths = round(float(value) * 10)
    if tenths * factor % 10 == 0:  # the text is a whole number of bytes
        assert abs(parse_size(text) - n) <= factor / 20
    else:
        with pytest.raises(SizeError, match="is not a whole number of bytes"):
            parse_size(text)
