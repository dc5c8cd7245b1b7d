"""Reading Groq's rate-limit headers (any mapping, any case; bad values ignored)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tokenguard.limiter import ServerView, parse_headers
from tokenguard.limiter._headers import MAX_LIMIT


def test_reads_groq_headers_from_httpx() -> None:
    headers = httpx.Headers(
        {
            "X-RateLimit-Limit-Requests": "14400",
            "X-RateLimit-Limit-Tokens": "18000",
            "X-RateLimit-Remaining-Requests": "14370",
            "X-RateLimit-Remaining-Tokens": "17997",
            "X-RateLimit-Reset-Requests": "2m59.56s",
            "X-RateLimit-Reset-Tokens": "7.66s",
        }
    )
    view = parse_headers(headers)
    assert (view.remaining_tokens, view.limit_tokens) == (17997, 18000)
    assert (view.remaining_requests, view.limit_requests) == (14370, 14400)
    assert view.reset_tokens == pytest.approx(7.66)
    assert view.reset_requests == pytest.approx(179.56)
    assert view.retry_after is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float) -> None:
    assert parse_headers(headers).retry_after == pytest.approx(expected)


def test_bad_values_are_ignored_with_a_debug_event() -> None:
    with capture_logs() as logs:
        view = parse_headers(
            {
                "x-ratelimit-remaining-tokens": "-3",
                "x-ratelimit-reset-tokens": "soon",
                "x-ratelimit-remaining-requests": "nan",
                "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT",
                "x-ratelimit-limit-tokens": "6000",
            }
        )
    assert view == ServerView(limit_tokens=6000)
    assert {e["header"] for e in logs} == {
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-remaining-requests",
        "retry-after",
    }
    assert all(e["log_level"] == "debug" for e in logs)


@pytest.mark.parametrize("limit", ["250000.5", "5e8", "6000.0", "+6000", "1_000", "0x10", "٣"])
def test_a_limit_that_is_not_plain_digits_is_a_bad_header(limit: str) -> None:
    with capture_logs() as logs:
        view = parse_headers({"x-ratelimit-limit-tokens": limit, "x-ratelimit-reset-tokens": "6s"})
    assert view == ServerView(reset_tokens=6.0)
    assert [e["header"] for e in logs] == ["x-ratelimit-limit-tokens"]


@pytest.mark.parametrize("kind", ["tokens", "requests"])
def test_a_remaining_above_its_limit_is_a_bad_header(kind: str) -> None:
    """The same response cannot leave more room than its bucket holds: the remaining is
    not believed (before: 10**12 of 6,000 taught the limiter that the server refunds);
    the limit and the reset beside it stand on their own. A full bucket is believed."""
    limit, remaining, reset = (
        f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset")
    )
    with capture_logs() as logs:
        view = parse_headers({limit: "6000", remaining: str(10**12), reset: "6s"})
    said: dict[str, Any] = {f"limit_{kind}": 6000, f"reset_{kind}": 6.0}
    assert view == ServerView(**said)
    assert [e["header"] for e in logs] == [remaining]
    full = parse_headers({limit: "6000", remaining: "6000"})
    assert full == ServerView(**{f"limit_{kind}": 6000, f"remaining_{kind}": 6000})


def test_unrelated_or_missing_headers_give_an_empty_view() -> None:
    assert parse_headers({"content-type": "application/json"}).empty
    assert parse_headers(None).empty
    assert parse_headers({b"x-ratelimit-remaining-tokens": b"12"}).remaining_tokens == 12


# -- the fast reading agrees with a plain one ------------------------------------------

_WANTED = [
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-requests",
    "retry-after",
    "retry-after-ms",
]


def _plain_view(pairs: list[tuple[str, str]]) -> tuple[ServerView, list[str]]:
    """What the headers say, read the plain way: every pair decoded, names lower-cased,
    values stripped, the last of repeated names kept, numbers read by ``float``, durations
    by the Go-duration parser; and the names reported as bad."""
    import math

    from tokenguard._durations import parse_go_duration

    found = {k.lower(): v.strip() for k, v in pairs}
    bad: list[str] = []

    def count(name: str) -> int | None:
        try:
            value = float(found[name])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            bad.append(name)
            return None
        return math.floor(value)

    def duration(name: str) -> float | None:
        try:
            return parse_go_duration(found[name])
        except ValueError:
            bad.append(name)
            return None

    def limit(name: str) -> int | None:
        # A limit is believed only when plain decimal digits, positive, at most MAX_LIMIT.
        text = found[name]
        if not (text.isascii() and text.isdigit() and 0 < int(text) <= MAX_LIMIT):
            bad.append(name)
            return None
        return int(text)

    reader = {"remaining": count, "reset": duration, "limit": limit}
    fields: dict[str, float | None] = {}
    for kind in ("remaining", "reset", "limit"):
        for suffix in ("tokens", "requests"):
            name = f"x-ratelimit-{kind}-{suffix}"
            if name in found:
                fields[f"{kind}_{suffix}"] = reader[kind](name)
    for suffix in ("tokens", "requests"):
        # A remaining count above the limit beside it cannot be.
        remaining, most = fields.get(f"remaining_{suffix}"), fields.get(f"limit_{suffix}")
        if remaining is not None and most is not None and remaining > most:
            bad.append(f"x-ratelimit-remaining-{suffix}")
            fields[f"remaining_{suffix}"] = None
    if "retry-after-ms" in found:
        ms = count("retry-after-ms")
        fields["retry_after"] = None if ms is None else ms / 1000
    elif "retry-after" in found:
        fields["retry_after"] = duration("retry-after")
    return ServerView(**fields), bad  # type: ignore[arg-type]


_NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " 12 ", "1_000", "+7", "-0", "1e3", "nan", "12.9", "\xa05"]),
)
_DURATIONS = st.one_of(
    st.sampled_from(["6s", "520ms", "2m59.56s", "1h4m48s", "7.66s", "0s", "soon", " 6s", ""]),
    st.floats(min_value=0, max_value=10**6).map(lambda f: f"{f}s"),
    st.integers(min_value=0, max_value=10**6).map(lambda n: f"{n}ms"),
    st.floats(min_value=0, max_value=10**4).map(lambda f: f"{f}ms"),
    _NUMBERS,
)


@st.composite
def _header_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        name = draw(st.sampled_from([*_WANTED, "server", "date", "x-request-id", "retry"]))
        name = draw(st.sampled_from([name, name.upper(), name.title()]))
        reset = "reset" in name.lower() or name.lower() == "retry-after"
        pairs.append((name, draw(_DURATIONS if reset else _NUMBERS)))
    return pairs


@given(_header_pairs())
@settings(max_examples=200, deadline=None)
def test_httpx_and_dict_headers_read_as_the_plain_reading_does(
    pairs: list[tuple[str, str]],
) -> None:
    """The fast reading (httpx's raw byte pairs looked up by name, integers by ``int``,
    durations remembered) gives the view and the bad-value reports a plain reading gives,
    for httpx headers and for a dict alike."""
    expected, bad = _plain_view(pairs)
    raw = httpx.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs])
    for headers in (raw, dict(pairs)):
        if isinstance(headers, dict) and len({k.lower() for k in headers}) < len(pairs):
            continue  # a dict keeps one of names differing in case: not the same pairs
        with capture_logs() as logs:
            view = parse_headers(headers)
        assert view == expected
        assert sorted(e["header"] for e in logs if "header" in e) == sorted(bad)
        assert view.empty == (expected == ServerView())
