"""Durations: Go-style as Groq writes them in headers and 429 bodies, and for people."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard._durations import for_people, format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6s", 6.0),
        ("1.559999999s", 1.559999999),
        ("120ms", 0.12),
        ("1m26.4s", 86.4),
        ("2m59.56s", 179.56),
        ("1h4m48s", 3888.0),
        ("9m38.016s", 578.016),
        ("4.77s", 4.77),
        ("0s", 0.0),
        ("2", 2.0),
        ("1.5", 1.5),
        ("500us", 0.0005),
        ("3ns", 3e-9),
    ],
)
def test_parse_groq_examples(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "5x", "m5s", "-3s", "1s2", "nan", "inf", "-1"])
def test_parse_rejects_non_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.12, "120ms"),
        (4.77, "4.77s"),
        (86.4, "1m26.4s"),
        (3888, "1h4m48s"),
        (60, "1m0s"),
    ],
)
def test_format_like_groq(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_format_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        format_go_duration(bad)


@given(st.floats(min_value=0, max_value=10 * 86400, allow_nan=False))
def test_round_trip_within_a_millisecond(seconds: float) -> None:
    assert parse_go_duration(format_go_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.05, "50 ms"),
        (1.23, "1.2 s"),
        (9.96, "10 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),  # rounded to the unit shown, not "60 s"
        (95, "1 min 35 s"),
        (240, "4 min"),
        (1500, "25 min"),
        (3599, "1 h"),
        (11_400, "3 h 10 min"),
        (200_000, "2 d 8 h"),
        (math.inf, "forever"),
    ],
)
def test_for_people_rounds_to_two_units_at_most(seconds: float, text: str) -> None:
    assert for_people(seconds) == text


@given(st.floats(min_value=0, max_value=400 * 86400, allow_nan=False))
def test_for_people_is_within_its_rounding(seconds: float) -> None:
    text = for_people(seconds)
    units = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    parts = text.split()
    total = sum(float(n) * units[u] for n, u in zip(parts[::2], parts[1::2], strict=True))
    # Each unit is rounded to the smallest one shown: at most half of it off.
    smallest = units[parts[-1]] * (0.1 if "." in parts[-2] else 1.0)
    assert abs(total - seconds) <= smallest / 2 + 1e-9
