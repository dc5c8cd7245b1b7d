"""Bucket arithmetic, limits and the log helpers: pure, with explicit times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard.emulator import ModelSpec, RequestRecord
from tokenguard.emulator import max_requests_in_any_window as max_requests
from tokenguard.emulator import max_tokens_in_any_window as max_tokens
from tokenguard.emulator._bucket import TokenBucket
from tokenguard.emulator._limits import ModelLimits, format_wait


def test_groq_published_example_waits_4_77s() -> None:
    bucket = TokenBucket(6000, 60.0, now=0.0)
    bucket.take(5034, now=0.0)
    assert bucket.used(0.0) == pytest.approx(5034)
    assert not bucket.has_room(1443, now=0.0)
    assert bucket.wait_for(1443, now=0.0) == pytest.approx(4.77)
    assert format_wait(bucket.wait_for(1443, now=0.0)) == "4.77s"
    assert bucket.has_room(1443, now=4.77)


def test_refill_is_continuous_and_capped() -> None:
    bucket = TokenBucket(600, 60.0, now=100.0)
    bucket.take(600, now=100.0)
    assert bucket.available(100.0) == 0
    assert bucket.available(101.0) == pytest.approx(10)
    assert bucket.time_to_full(101.0) == pytest.approx(59.0)
    assert bucket.available(1000.0) == 600
    assert bucket.available(50.0) == 0  # a clock going backwards refills nothing


def test_wait_is_infinite_for_more_than_capacity_and_zero_when_it_fits() -> None:
    bucket = TokenBucket(100, 1.0, now=0.0)
    assert bucket.wait_for(101, now=0.0) == math.inf
    assert bucket.wait_for(100, now=0.0) == 0.0


def test_give_refunds_but_never_above_capacity() -> None:
    bucket = TokenBucket(100, 10.0, now=0.0)
    bucket.take(80, now=0.0)
    bucket.give(30, now=0.0)
    assert bucket.available(0.0) == pytest.approx(50)
    bucket.give(1000, now=0.0)
    assert bucket.available(0.0) == 100


@pytest.mark.parametrize(("capacity", "period"), [(0, 1.0), (10, 0.0), (10, math.inf)])
def test_bad_bucket_parameters_are_refused(capacity: float, period: float) -> None:
    with pytest.raises(ValueError, match="bucket"):
        TokenBucket(capacity, period, now=0.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.77, "4.77s"), (2.0, "2s"), (0.0, "0s"), (0.1204, "121ms"), (578.016, "9m38.016s")],
)
def test_waits_are_go_durations_rounded_up_to_the_millisecond(seconds: float, text: str) -> None:
    assert format_wait(seconds) == text


def spec(
    tpm: int | None = 6000,
    rpm: int | None = 30,
    tpd: int | None = 500_000,
    rpd: int | None = 14_400,
) -> ModelSpec:
    return ModelSpec("m", tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd)


def test_the_longest_wait_is_reported_when_several_buckets_lack_room() -> None:
    limits = ModelLimits(spec(tpm=6000, tpd=7000), window=60.0, now=0.0)
    limits.charge(5000, now=0.0)
    denial = limits.check(3000, now=0.0)
    assert denial is not None
    # TPM lacks 2000 (20 s at 100/s); TPD lacks 1000 at 7000 per 86400 s (12342.857 s).
    assert denial.kind.name == "TPD"
    assert denial.wait == pytest.approx(1000 * 86400 / 7000)
    assert (denial.limit, denial.used, denial.requested) == (7000, 5000, 3000)


def test_requests_buckets_count_one_per_request() -> None:
    limits = ModelLimits(spec(rpm=2, tpm=None, tpd=None, rpd=None), window=60.0, now=0.0)
    limits.charge(10, now=0.0)
    limits.charge(10, now=0.0)
    denial = limits.check(10, now=0.0)
    assert denial is not None
    assert (denial.kind.name, denial.kind.type, denial.used, denial.requested) == (
        "RPM",
        "requests",
        2,
        1,
    )
    assert denial.wait == pytest.approx(30.0)


def test_zero_or_none_limits_have_no_bucket_and_no_header() -> None:
    limits = ModelLimits(spec(tpm=0, rpm=None, tpd=0, rpd=0), window=60.0, now=0.0)
    assert limits.buckets == {}
    assert limits.check(10**9, now=0.0) is None
    assert limits.headers(0.0) == {}


def test_headers_requests_are_rpd_and_tokens_are_tpm() -> None:
    limits = ModelLimits(spec(), window=60.0, now=0.0)
    limits.charge(1035, now=0.0)
    assert limits.headers(0.0) == {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14399",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "4965",
        "x-ratelimit-reset-tokens": "10.35s",
    }


def test_too_large_names_tpm_first() -> None:
    limits = ModelLimits(spec(tpm=6000, tpd=5000), window=60.0, now=0.0)
    found = limits.too_large(7950)
    assert found is not None
    assert (found[0].name, found[1]) == ("TPM", 6000)
    over_tpd = limits.too_large(5500)
    assert over_tpd is not None
    assert over_tpd[0].name == "TPD"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 400)), min_size=1, max_size=80
    )
)
def test_a_bucket_never_admits_more_than_capacity_plus_refill(
    ops: list[tuple[float, int]],
) -> None:
    capacity, period = 1000, 10.0
    bucket = TokenBucket(capacity, period, now=0.0)
    now = 0.0
    log = []
    for dt, amount in ops:
        now += dt
        if bucket.has_room(amount, now):
            bucket.take(amount, now)
            log.append(RequestRecord(t=now, model="m", status=200, requested_tokens=amount))
        else:
            assert bucket.wait_for(amount, now) > 0
    for window in (1.0, period):
        # What arrives in any window: at most the full bucket plus what refills meanwhile.
        assert max_tokens(log, window) <= capacity + capacity * window / period + 1e-6


def rec(t: float, tokens: int, status: int = 200, model: str = "m") -> RequestRecord:
    return RequestRecord(t=t, model=model, status=status, requested_tokens=tokens)


def test_window_helpers_use_half_open_windows_and_skip_rejections() -> None:
    log = [rec(0, 100), rec(0.5, 200), rec(1.0, 300), rec(1.2, 999, status=429), rec(5, 50)]
    assert max_tokens(log, 1.0) == 500  # [0.5, 1.5) holds 200 + 300
    assert max_tokens(log, 1.01) == 600
    assert max_requests(log, 1.0) == 2
    assert max_requests(log, 10.0) == 4
    assert max_tokens([], 1.0) == 0


def test_window_helpers_filter_by_model_and_ignore_other_endpoints() -> None:
    log = [rec(0, 100, model="a"), rec(0, 200, model="b")]
    log.append(RequestRecord(t=0, model=None, status=200, endpoint="models"))
    assert max_tokens(log, 1.0, model="a") == 100
    assert max_requests(log, 1.0) == 2
