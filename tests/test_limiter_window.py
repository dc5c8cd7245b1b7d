"""The window arithmetic and the in-memory queue, exhaustively, with a fake clock.

The Hypothesis test (``limiter_property.py``; the same one runs the Lua port in
``test_limiter_property_redis.py``) drives the memory backend with any interleaving
of acquire, commit (with the headers a token-bucket server would send), cancel,
leave, observe and time passing, and checks: the ledger never admits more than a
limit in any window, the server's bucket never goes below zero, whether it charges
every estimate in full or refunds the unused part before it answers, except for the
bounded 429s of learning refunds (stated there), and the queue is served in order.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from tokenguard.limiter._backend import Soonest
from tokenguard.limiter._window import HOLD_STEPS, Ledger, Window, WindowLimits, _server_bucket


def test_earliest_is_the_release_that_makes_room() -> None:
    w = Window(WindowLimits(tpm=100, window=10.0))
    w.admit(60, 0.0)
    w.admit(30, 4.0)
    assert w.earliest(10, 5.0) == 5.0
    assert w.earliest(11, 5.0) == 10.0
    assert w.earliest(71, 5.0) == 14.0
    w.expire(10.0)
    assert w.minute is not None
    assert w.minute.tokens == 30


def test_entry_counts_until_exactly_one_period_later() -> None:
    led = Ledger(10.0)
    led.add(0.0, 5, 1)
    led.expire(9.999)
    assert led.tokens == 5
    led.expire(10.0)
    assert led.tokens == 0
    assert not led.entries


def test_day_ledger_buckets_stay_bounded() -> None:
    w = Window(WindowLimits(tpd=10**9, rpd=10**9, window=1.0))
    for i in range(10_000):
        w.admit(1, i * 0.01)  # 100 admissions per window
    assert w.day is not None
    assert len(w.day.entries) == 100
    assert w.day.tokens == 10_000
    assert w.day.requests == 10_000


def test_commit_restamps_and_cancel_removes() -> None:
    w = Window(WindowLimits(tpm=100, window=10.0), refunds=True)
    c = w.admit(80, 0.0)
    w.settle(c, 50, 3.0)  # counted from the response on
    w.expire(10.0)
    assert w.minute is not None
    assert w.minute.tokens == 50
    assert w.earliest(60, 10.0) == 13.0
    w.settle(c, None, 11.0)
    assert w.minute.tokens == 0


def test_soonest_takes_tokens_in_flight_as_refunded_and_names_the_binding_limit() -> None:
    w = Window(WindowLimits(tpm=100, rpm=1, window=10.0))
    c = w.admit(100, 0.0)
    # In flight: a cancel would free its tokens, but its request still counts.
    assert w.soonest(60, 1.0) == Soonest(10.0, "rpm", 10.0)
    w2 = Window(WindowLimits(tpm=100, window=10.0))
    c = w2.admit(100, 0.0)
    assert w2.soonest(60, 1.0) == Soonest(1.0, "", 1.0)
    w2.settle(c, 100, 1.0)  # charged for good: free again a window after its commit
    assert w2.soonest(60, 1.0) == Soonest(11.0, "tpm", 11.0)


def test_adopt_makes_a_staircase_that_follows_the_refill() -> None:
    led = Ledger(10.0)
    size = led.adopt(
        0.0, limit=100, unit="tokens", remaining=0, server_limit=100, reset=10.0, unseen=0
    )
    assert size == 100
    assert len(led.holds) == HOLD_STEPS
    # Never looser than the bucket: at every hold expiry, our room <= the bucket level.
    for expiry, _, _ in list(led.holds):
        led.expire(expiry)
        assert 100 - led.hold_tokens <= 100 * expiry / 10.0 + 1e-9
    assert led.hold_tokens == 0


@given(
    charges=st.lists(
        st.tuples(st.floats(0, 9.99), st.integers(0, 200), st.integers(0, 3)), max_size=12
    ),
    holds=st.lists(
        st.tuples(st.floats(0.01, 20.0), st.integers(0, 100), st.integers(0, 3)), max_size=4
    ),
    limit=st.integers(1, 500),
    remaining=st.integers(0, 600),
    server_limit=st.none() | st.integers(1, 600),
    reset=st.none() | st.floats(0, 30),
    unseen=st.integers(0, 200),
    unit=st.sampled_from(["tokens", "requests"]),
)
def test_adopt_skips_the_staircase_only_where_it_would_hold_nothing(
    charges: list[tuple[float, int, int]],
    holds: list[tuple[float, int, int]],
    limit: int,
    remaining: int,
    server_limit: int | None,
    reset: float | None,
    unseen: int,
    unit: str,
) -> None:
    now = 10.0
    led = Ledger(10.0)
    for age, tokens, requests in sorted(charges, reverse=True):
        led.add(now - age, tokens, requests)
    for expiry, tokens, requests in holds:
        led.hold(now + expiry, tokens, requests)
    bucket = _server_bucket(now, led.period, limit, remaining, server_limit, reset, unseen)
    assume(bucket is not None)
    assert bucket is not None
    shortcut, general = led.clone(), led.clone()
    got = shortcut.adopt(
        now,
        limit=limit,
        unit=unit,
        remaining=remaining,
        server_limit=server_limit,
        reset=reset,
        unseen=unseen,
    )
    usage = general._usage_until(now, bucket.until, unit == "tokens")
    want = general._hold_steps(now, limit, unit == "tokens", bucket, usage)
    assert (got, shortcut.holds) == (want, general.holds)


def test_adopt_counts_later_admissions_as_unseen() -> None:
    led = Ledger(10.0)
    led.add(0.0, 30, 1)
    led.add(0.0, 30, 1)
    # The header came with the first response: the server had seen 30, not 60.
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=70, server_limit=100, reset=3.0, unseen=30
        )
        == 0
    )
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=70, server_limit=100, reset=3.0, unseen=0
        )
        == 0
    )
    # Tighter: the server has 20 left while we think 40.
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=20, server_limit=None, reset=None, unseen=0
        )
        == 20
    )
