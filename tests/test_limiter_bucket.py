"""The bucket model (``limiter/_bucket.py``) and its in-memory queue, with a fake clock.

The interleaving property of ``limiter_property.py`` runs against the bucket model
as it does against the sliding window: against a server bucket that refunds or
not, with requests arriving at the server any time between admission and commit
and stale headers, the server's bucket never goes below zero (except the bounded
429s of learning refunds stated there) and the queue is served in order.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from limiter_property import (
    KEPT_DRAINED,
    KEPT_LATE_ARRIVAL,
    KEPT_SLOW_ANSWER,
    LEARNING,
    LIMIT,
    OPS,
    REFUNDS_PROVEN,
    SERVER_LIMITS,
    SERVERS,
    SMALLER_SERVER,
    TEACHING_OPS,
    FakeClock,
    Model,
    memory,
    run_interleaving,
)

import tokenguard as tg
from tokenguard.emulator import running
from tokenguard.limiter._backend import Soonest
from tokenguard.limiter._bucket import Buckets
from tokenguard.limiter._headers import ServerView
from tokenguard.limiter._window import WindowLimits

MODEL = "llama-3.1-8b-instant"


def _buckets(refunds: bool | None = True) -> Buckets:
    b = Buckets(WindowLimits(tpm=100, window=10.0), refunds=refunds)
    b.expire(0.0)
    return b


def test_a_full_bucket_admits_its_capacity_then_its_refill() -> None:
    b = _buckets()
    c = b.admit(100, 0.0)
    b.settle(c, 100, 0.0)
    # Refilled at 10 tokens/s: 30 tokens take 3 s, not a whole window.
    assert b.earliest(30, 0.0) == pytest.approx(3.0)
    b.expire(3.0)
    assert b.earliest(30, 3.0) == 3.0


def test_an_estimate_in_flight_does_not_refill() -> None:
    # The naive mirror's drift: charged at admission, the client's bucket would refill
    # while the request travels, though the server's, at its cap, does not.
    b = _buckets()
    b.admit(60, 0.0)
    b.expire(5.0)
    assert b.earliest(41, 5.0) > 5.0  # still 40 of room, not 40 + 50 refilled
    assert b.earliest(40, 5.0) == 5.0


def test_an_unsettled_charge_ages_after_a_window_and_then_refills() -> None:
    b = _buckets()
    b.admit(100, 0.0)
    assert b.earliest(50, 0.0) == pytest.approx(15.0)  # ages at 10, refills 50 by 15
    b.expire(12.0)
    assert b.open_tokens == 0
    assert b.earliest(50, 12.0) == pytest.approx(15.0)


def test_commit_for_less_frees_only_when_refunds_are_known() -> None:
    kept = _buckets(refunds=False)
    c = kept.admit(80, 0.0)
    kept.settle(c, 20, 0.0)
    assert kept.earliest(30, 0.0) == pytest.approx(1.0)  # 20 of room, 10 short
    freed = _buckets(refunds=True)
    c = freed.admit(80, 0.0)
    freed.settle(c, 20, 0.0)
    assert freed.earliest(80, 0.0) == 0.0


def test_a_header_frees_deferred_tokens_as_far_as_it_proves() -> None:
    b = _buckets(refunds=False)
    c = b.admit(80, 0.0)
    b.settle(c, 20, 0.0, headers=True)
    assert b.tpm is not None
    assert b.tpm.deferred == 60
    b.adopt(0.0, ServerView(remaining_tokens=80, limit_tokens=100), (80, 1))
    assert b.tpm.level == 80
    # Never more than was deferred, never above what the header shows.
    d = b.admit(50, 0.0)
    b.settle(d, 10, 0.0, headers=True)
    b.adopt(0.0, ServerView(remaining_tokens=100, limit_tokens=100), (130, 2))
    assert b.tpm.level == 70
    assert b.tpm.deferred == 0
    e = b.admit(30, 0.0)
    b.settle(e, 0, 0.0, headers=True)
    b.admit(20, 0.0)  # in flight: maybe not seen by the server yet
    b.adopt(0.0, ServerView(remaining_tokens=50, limit_tokens=100))
    assert b.tpm.level == 50


def test_a_tighter_header_lowers_the_level_counting_seen_flight() -> None:
    b = _buckets()
    b.admit(30, 0.0)
    c = b.admit(20, 0.0)
    b.settle(c, 20, 0.0)
    # The server has seen both (30 still in flight) and holds 40 left: we thought 50.
    b.adopt(0.0, ServerView(remaining_tokens=40, limit_tokens=100))
    assert b.tpm is not None
    assert b.tpm.level == 70
    assert b.earliest(40, 0.0) == 0.0
    assert b.earliest(41, 0.0) > 0.0


def test_learning_refunds_from_a_429_charges_the_frees_again() -> None:
    b = _buckets(refunds=None)
    c = b.admit(80, 0.0)
    b.settle(c, 10, 0.0)  # freed 70 while learning
    assert b.policy is None
    b.adopt(0.0, ServerView(remaining_tokens=20, limit_tokens=100, retry_after=1.0))
    assert b.policy is False
    assert b.pop_lesson() is not None
    assert b.tpm is not None
    assert b.tpm.level <= 20


def _answer(b: Buckets, tokens: int, actual: int, remaining: int, now: float) -> None:
    """One request admitted at ``now``, answered at once with these headers."""
    c = b.admit(tokens, now)
    view = ServerView(remaining_tokens=remaining, limit_tokens=100)
    b.answer(c, actual, view, now)
    b.settle(c, actual, now, headers=True)
    b.adopt(now, view, (c.mark_tokens, c.mark_requests), c.settled_mark, c.at)


def test_learning_proves_refunds_from_a_header_below_any_kept_estimate() -> None:
    b = _buckets(refunds=None)
    # 60 admitted and answered: a server keeping it holds 60 for a while (refilled at
    # 10/s); this one shows 95 left, refunded.
    _answer(b, 60, 5, 95, 0.0)
    assert b.policy is None
    assert b.floor == 60
    # Half a second later the next answer shows 5 + 5 in use, where a server keeping
    # the first estimate would hold at least 55: it refunds.
    _answer(b, 60, 5, 90, 0.5)
    assert b.policy is True
    assert b.pop_lesson() == ("headers", 10, 55)
    # Commits for less free the difference at once from now on, headers or not.
    assert b.tpm is not None
    level = b.tpm.level
    _answer(b, 60, 5, 85, 0.5)
    assert b.tpm.level == pytest.approx(level - 5)


def test_learning_proves_nothing_from_a_header_a_keeping_server_could_send() -> None:
    b = _buckets(refunds=None)
    _answer(b, 60, 5, 40, 0.0)
    # 3 s later a keeping server holds at least 60 - 30 = 30 of the first estimate.
    _answer(b, 60, 5, 10, 3.0)  # 90 in use: kept
    assert b.policy is None
    assert b.pop_lesson() is None
    # Admitted with the floor at 90 (30 left of the first, 60 of the second), answered
    # 8 s later: the answer may have been written as late as that, when a keeping
    # server held at least 10 of them; 5 in use proves nothing (the slack is 16).
    c = b.admit(10, 3.0)
    assert c.floor == 90
    b.expire(11.0)
    view = ServerView(remaining_tokens=95, limit_tokens=100)
    b.answer(c, 0, view, 11.0)
    assert b.policy is None


def test_a_larger_limit_in_the_headers_starts_the_floor_again() -> None:
    b = _buckets(refunds=None)
    _answer(b, 60, 5, 95, 0.0)
    assert b.floor == 60
    # The server's bucket is twice the configured one: it refills twice as fast, so
    # the floor drained too slowly; the admissions before this header prove nothing.
    c = b.admit(60, 0.0)
    view = ServerView(remaining_tokens=190, limit_tokens=200)
    b.answer(c, 5, view, 0.0)
    assert b.policy is None
    assert b.floor == 60  # this request's charge alone
    assert b.floor_limit == 200


def test_learned_refunds_then_a_kept_free_learns_no_refunds_for_good() -> None:
    b = _buckets(refunds=None)
    _answer(b, 60, 5, 95, 0.0)
    _answer(b, 60, 5, 90, 0.0)
    assert b.policy is True
    b.pop_lesson()
    # A commit for less now frees at once; the server then shows it kept all 60.
    _answer(b, 60, 5, 30, 0.0)
    assert b.policy is False
    lesson = b.pop_lesson()
    assert lesson is not None
    assert lesson[0] == "headers"
    # Final: headers that look like refunds teach nothing more.
    _answer(b, 10, 0, 100, 0.0)
    assert b.policy is False


def test_soonest_takes_requests_in_flight_as_refunded_and_names_the_binding_limit() -> None:
    b = Buckets(WindowLimits(tpm=100, rpm=10, tpd=1_000, window=10.0), refunds=False)
    b.expire(0.0)
    c = b.admit(100, 0.0)
    # In flight: a cancel or a short commit could give it all back.
    assert b.earliest(60, 0.0) == pytest.approx(16.0)  # the head's own time: it ages at 10
    assert b.soonest(60, 0.0) == Soonest(0.0, "", 0.0)
    b.settle(c, 100, 0.0)  # charged for good: 60 refill at 10 a second
    best = b.soonest(60, 0.0)
    assert best.limit == "tpm"
    assert (best.at, best.resets) == pytest.approx((6.0, 10.0))
    # The unused 60 of a commit for 40, kept (deferred) for a server that may not refund:
    # only a header can free them, and with nothing in flight no answer is left to
    # bring one: they are charged for good.
    b.expire(20.0)
    c = b.admit(100, 20.0)
    b.settle(c, 40, 20.0)
    assert b.earliest(60, 20.0) == pytest.approx(26.0)
    best = b.soonest(60, 20.0)
    assert best.limit == "tpm"
    assert (best.at, best.resets) == pytest.approx((26.0, 30.0))
    # A request in flight: its answer's header may still free them.
    b.expire(21.0)
    c = b.admit(1, 21.0)
    assert b.soonest(60, 21.0).at == 21.0
    b.settle(c, 1, 21.0)
    assert b.soonest(60, 21.0).at == pytest.approx(26.1)
    # A retry-after binds when nothing else does.
    b.blocked_until = 25.0
    assert b.soonest(1, 20.0) == Soonest(25.0, "retry-after", 25.0)


# -- the property (tests/limiter_property.py) ---------------------------------------------


_memory = memory("bucket")


def _run(
    steps: list[tuple[object, ...]], lag: float, server: tuple[str, bool | None], **checks: Any
) -> Model:
    """The property against the bucket (answers may be written before later arrivals)."""
    return run_interleaving(
        steps, lag, server, _memory, FakeClock(0.0), sliding=False, late_answers=True, **checks
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
@example(steps=SMALLER_SERVER, lag=0.0, server=("refunds", True))
def test_a_smaller_server_bucket_refills_at_the_server_rate(
    steps: list[tuple[object, ...]], lag: float, server: tuple[str, bool | None]
) -> None:
    # The server holds 60 and refills 60 per period where the limiter was told 100;
    # its headers say so (x-ratelimit-limit-tokens), and the mirror takes both.
    _run(steps, lag, server, server_limit=60)


def test_a_smaller_limit_in_the_headers_sets_capacity_and_refill() -> None:
    b = _buckets()
    b.adopt(0.0, ServerView(remaining_tokens=0, limit_tokens=60))
    assert b.tpm is not None
    assert (b.tpm.cap, b.tpm.rate) == (60.0, 6.0)
    # 30 tokens at the server's 6/s, not the configured 10/s; never more than 60.
    assert b.earliest(30, 0.0) == pytest.approx(5.0)
    b.expire(100.0)
    assert b.tpm.level == 60.0
    # More than the server's bucket but within ours: it waits for a full bucket (the
    # server answers 413, charging nothing), never for ever.
    assert b.earliest(80, 100.0) == 100.0
    # A later header with the configured limit (or more) restores it.
    b.adopt(100.0, ServerView(remaining_tokens=60, limit_tokens=100))
    assert (b.tpm.cap, b.tpm.rate) == (100.0, 10.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=TEACHING_OPS,
    lag=st.sampled_from([0.0, 3.0]),
    server_limit=SERVER_LIMITS,
    any_order=st.booleans(),
)
@example(steps=KEPT_SLOW_ANSWER, lag=0.0, server_limit=LIMIT, any_order=False)
@example(steps=KEPT_DRAINED, lag=0.0, server_limit=LIMIT, any_order=False)
@example(steps=KEPT_LATE_ARRIVAL, lag=0.0, server_limit=LIMIT, any_order=True)
def test_learning_never_proves_refunds_from_a_server_that_keeps(
    steps: list[tuple[object, ...]], lag: float, server_limit: int, any_order: bool
) -> None:
    # The property asserts it after every step (arrivals in the order of commits, or in
    # any order: see limiter_property.Model.refuse).
    _run(steps, lag, ("keeps", None), server_limit=server_limit, any_order=any_order)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=TEACHING_OPS, lag=st.sampled_from([0.0, 3.0]), server=LEARNING, limit=SERVER_LIMITS)
@example(steps=REFUNDS_PROVEN, lag=0.0, server=("refunds", None), limit=LIMIT)
def test_learning_keeps_the_server_bucket_before_and_after_a_lesson(
    steps: list[tuple[object, ...]], lag: float, server: tuple[str, bool | None], limit: int
) -> None:
    _run(steps, lag, server, server_limit=limit)


def test_the_property_sees_refunds_proven() -> None:
    m = _run(REFUNDS_PROVEN, 0.0, ("refunds", None))
    assert m.backend.refunds is True


# -- through the public API ---------------------------------------------------------------


def test_after_a_burst_the_next_request_waits_only_for_its_refill() -> None:
    clock = FakeClock(0.0)
    lim = tg.Limiter(tpm=6000, window=60.0, algorithm="bucket", clock=clock, sleep=clock.sleep)
    lim.acquire(6000).commit(6000)  # the burst empties the bucket
    r = lim.acquire(500)
    # 500 tokens at 100 tokens/s: 5 s, where a sliding window holds it for 60 s.
    assert r.waited == pytest.approx(5.0)
    window = tg.Limiter(tpm=6000, window=60.0, algorithm="window", clock=clock, sleep=clock.sleep)
    window.acquire(6000).commit(6000)
    assert window.acquire(500).waited == pytest.approx(60.0)


@pytest.mark.parametrize("algorithm", ["bucket", "window"])
def test_a_server_holding_less_than_configured_refuses_nothing(algorithm: str) -> None:
    # Tried as a new user would: told 6,000 TPM, the server holds 3,000 (refilled at
    # 50 tokens/s); its headers say so, and the limiter waits as long as it needs.
    clock = FakeClock()
    with running(model=MODEL, tpm=3000, window=60.0, clock=clock) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)
        lim = tg.Limiter(tpm=6000, window=60.0, clock=clock, sleep=clock.sleep, algorithm=algorithm)
        for i in range(8):
            messages: Any = [{"role": "user", "content": f"Question {i}?"}]
            r = lim.acquire(tg.count_tokens(messages, model=MODEL) + 1000)
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, max_tokens=1000
            )
            usage = raw.parse().usage
            assert usage is not None
            r.commit(usage.total_tokens, headers=raw.headers)
        chats = [r for r in em.log if r.endpoint == "chat"]
    assert [r.status for r in chats] == [200] * 8
    # The last admission needs the server's bucket (3,000, refilled at 50/s) to have
    # held every charge: no sooner than that. The bucket waits no longer either (the
    # window holds charges for a whole minute, so it takes longer).
    needed = (sum(r.charged_tokens for r in chats) - 3000) / 50
    last = chats[-1].t - 1000.0
    assert needed - 1e-6 <= last
    if algorithm == "bucket":
        assert last <= needed + 1.0


def test_an_unknown_algorithm_is_named() -> None:
    with pytest.raises(tg.ConfigurationError, match="algorithm"):
        tg.Limiter(tpm=100, algorithm="leaky")
    assert "algorithm=bucket" in repr(tg.Limiter(tpm=100, algorithm="bucket"))
