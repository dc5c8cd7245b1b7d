"""Reading Groq's rate-limit headers (any mapping, any case; bad values ignored)."""

from __future__ import annotations

import httpx
import pytest
from structlog.testing import capture_logs

from tokenguard.limiter import ServerView, parse_headers


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


def test_unrelated_or_missing_headers_give_an_empty_view() -> None:
    assert parse_headers({"content-type": "application/json"}).empty
    assert parse_headers(None).empty
    assert parse_headers({b"x-ratelimit-remaining-tokens": b"12"}).remaining_tokens == 12
