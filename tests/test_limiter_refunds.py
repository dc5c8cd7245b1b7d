"""Refunds of unused tokens: given (``refunds=True|False``) or learned (the default).

Tried as a new user would, on every backend (memory with a fake clock, real Redis)
and both faces (sync, asyncio): commits without headers, headers given to
``observe`` right after a commit, and 429s handed to ``observe``.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Any

import openai
import pytest
from emulator_support import HELLO
from fake_clock import FakeClock
from redis_support import RedisServer, redis_srv
from structlog.testing import capture_logs
from test_limiter import Api, Harness, api, h, redis_harness

import tokenguard as tg
from tokenguard.emulator import running

# The fixtures: the backends x algorithms and the sync/async faces of test_limiter.py.
__all__ = ["api", "h", "redis_srv"]

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

KEPT = "tokenguard.limiter.refunds_learned"


def headers(remaining: int, limit: int = 100, /, **extra: str) -> dict[str, str]:
    return {
        "x-ratelimit-remaining-tokens": str(remaining),
        "x-ratelimit-limit-tokens": str(limit),
        **extra,
    }


def learned(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == KEPT]


def test_by_default_a_commit_without_headers_frees_the_unused_tokens_at_once(
    h: Harness, api: Api
) -> None:
    lim = h.limiter(tpm=100)
    assert lim.refunds is None  # learning
    r1 = api.acquire(lim, 60)
    api.acquire(lim, 40)
    api.commit(r1, 10)
    assert api.acquire(lim, 50, max_wait=0).waited <= h.slack
    assert lim.refunds is None


def test_by_default_a_header_showing_the_estimate_kept_teaches_no_refunds(
    h: Harness, api: Api
) -> None:
    # A long window: on Redis (real time) a bucket refills nothing noticeable meanwhile.
    lim = h.limiter(tpm=100, window=600.0)
    r1 = api.acquire(lim, 80)
    api.commit(r1, 30)  # freed 50 at once
    with capture_logs() as logs:
        # The server charged all 80 though only 30 were used: it does not refund.
        api.observe(lim, headers(20))
    assert lim.refunds is False
    [event] = learned(logs)
    assert event["refunds"] is False
    assert event["evidence"] == "headers"
    assert event["server_used"] == 80
    assert event["ledger_used"] == 30
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 21, max_wait=0)
    r2 = api.acquire(lim, 20, max_wait=0)
    # From now on a commit without headers keeps its estimate, as refunds=False does.
    api.commit(r2, 0)
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, h.probe, max_wait=0)


def test_by_default_a_429_after_a_free_teaches_no_refunds(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 60)
    api.commit(r1, 10)  # freed 50 at once: the server may not have
    r2 = api.acquire(lim, 90, max_wait=0)
    # The server kept r1's 60 and refuses r2: the caller hands the 429's headers over.
    api.cancel(r2)
    with capture_logs() as logs:
        api.observe(lim, headers(40, **{"retry-after": "1"}))
    assert lim.refunds is False
    [event] = learned(logs)
    assert event["evidence"] == "429"
    # r1's free is charged again: only 40 fit, as on the server.
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 41, max_wait=0)


def test_by_default_headers_of_a_refunding_server_teach_nothing(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 60)
    with capture_logs() as logs:
        api.commit(r1, 10)
        api.observe(lim, headers(90))  # the server gave back the 50 unused
        r2 = api.acquire(lim, 90, max_wait=0)
        api.commit(r2, 90)
        api.observe(lim, headers(0))
    assert lim.refunds is None
    assert not learned(logs)


def test_a_429_without_a_free_teaches_nothing(h: Harness, api: Api) -> None:
    # Another spender of the same quota, not a kept estimate: headers only hold back.
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 60)
    api.commit(r1, 60)
    api.observe(lim, headers(0, **{"retry-after": "1"}))
    assert lim.refunds is None
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, h.probe, max_wait=0)


@pytest.mark.parametrize("given", [True, False])
def test_refunds_given_are_never_relearned(h: Harness, api: Api, given: bool) -> None:
    lim = h.limiter(tpm=100, refunds=given)
    r1 = api.acquire(lim, 60)
    with capture_logs() as logs:
        api.commit(r1, 10, headers(40))
        api.observe(lim, headers(0, **{"retry-after": "1"}))
    assert lim.refunds is given
    assert not learned(logs)


@pytest.mark.parametrize("refunds", [False, None])
def test_commit_then_observe_frees_what_commit_with_headers_frees(
    h: Harness, api: Api, refunds: bool | None
) -> None:
    def run(together: bool) -> tuple[bool, bool]:
        lim = h.limiter(tpm=100, refunds=refunds, key=f"k-{uuid.uuid4().hex[:8]}")
        r1 = api.acquire(lim, 60)
        api.acquire(lim, 30)  # still in flight: the server may not have seen it
        # r1's answer: the server refunded r1's 50 unused.
        if together:
            api.commit(r1, 10, headers(90))
        else:
            api.commit(r1, 10)
            api.observe(lim, headers(90))
        assert lim.refunds is refunds  # nothing learned: the server did refund
        try:
            api.acquire(lim, 61, max_wait=0)
            over = True
        except tg.RateLimitTimeout:
            over = False
        return over, api.acquire(lim, 60, max_wait=0).waited <= h.slack

    # 90 left, 30 of them promised to the request in flight: 60 are proven (the
    # ledger holds r1's 10 and the 30 in flight).
    assert run(together=True) == run(together=False) == (False, True)


@pytest.mark.redis
def test_a_learned_lesson_is_shared_on_one_redis_key(redis_srv: RedisServer) -> None:
    with redis_harness(redis_srv) as h:
        a = h.limiter(tpm=100)
        b = h.limiter(tpm=100)
        r = a.acquire(80)
        r.commit(30)
        a.observe(headers(20))
        assert a.refunds is False
        assert b.refunds is None  # not told yet: b has not spoken to Redis since
        b.observe(headers(20))
        assert b.refunds is False
        rb = b.acquire(10)
        rb.commit(0)  # b keeps its estimate too: the lesson is the key's
        with pytest.raises(tg.RateLimitTimeout):
            b.acquire(11, max_wait=0)


@pytest.mark.parametrize("feedback", ["headers", "observe", "none"])
@pytest.mark.parametrize("refunding", [True, False])
def test_against_the_emulator_the_lesson_costs_at_most_one_429(
    feedback: str, refunding: bool
) -> None:
    """A new user's loop through the openai SDK, against a server that refunds unused
    tokens and one that keeps them, for each way of giving the answer back."""
    clock = FakeClock()
    lim = tg.Limiter(tpm=600, window=10.0, clock=clock, sleep=clock.sleep)
    with running(
        model="llama3-8b-8192",
        tpm=600,
        rpm=0,
        rpd=0,
        window=10.0,
        completion_tokens=20,
        refund_unused=refunding,
        clock=clock,
    ) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)
        estimate = tg.count_tokens(HELLO, model="llama3-8b-8192") + 60
        done = refused = 0
        while done < 40:
            r = lim.acquire(estimate)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="llama3-8b-8192", messages=HELLO, max_tokens=60
                )
            except openai.RateLimitError as exc:
                r.cancel()
                lim.observe(exc.response.headers)
                refused += 1
                continue
            usage = raw.parse().usage
            assert usage is not None
            if feedback == "headers":
                r.commit(usage.total_tokens, headers=raw.headers)
            else:
                r.commit(usage.total_tokens)
                if feedback == "observe":
                    lim.observe(raw.headers)
            done += 1
        client.close()
    if refunding:
        # Headers on every commit prove the refunds (the server shows less in use than
        # it could if it kept the estimates); without them nothing is proven.
        assert (refused, lim.refunds) == (0, True if feedback == "headers" else None)
    else:
        # With headers on every commit nothing is freed before they prove it, so there
        # is nothing to learn; headers given after the commit teach it at the first
        # one; without headers, the first 429 does.
        expected = {"headers": (0, None), "observe": (0, False), "none": (1, False)}
        assert (refused, lim.refunds) == expected[feedback]


# -- learning that the server refunds (the bucket) ------------------------------------


def _serve(
    lim: tg.Limiter, em: Any, n: int, max_tokens: int = 1024
) -> tuple[list[int | None], int]:
    """``n`` requests one after the other, each committed with its response's headers;
    returns what ``lim.refunds`` was after each, and how many were refused."""
    client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)
    estimate = tg.count_tokens(HELLO, model="llama3-8b-8192") + max_tokens
    seen: list[int | None] = []
    refused = 0
    try:
        for _ in range(n):
            r = lim.acquire(estimate)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="llama3-8b-8192", messages=HELLO, max_tokens=max_tokens
                )
            except openai.RateLimitError as exc:
                r.cancel()
                lim.observe(exc.response.headers)
                refused += 1
                continue
            usage = raw.parse().usage
            assert usage is not None
            r.commit(usage.total_tokens, headers=raw.headers)
            seen.append(lim.refunds)
    finally:
        client.close()
    return seen, refused


@pytest.mark.parametrize("refunding", [True, False])
def test_headers_of_a_slow_server_prove_its_refunds_within_a_few_requests(
    refunding: bool,
) -> None:
    """Tried as a new user would: 1,024 tokens reserved, 16 generated, half a second
    to answer, every response's headers given to commit (memory, fake clock)."""
    clock = FakeClock()
    lim = tg.Limiter(tpm=6000, window=10.0, clock=clock, sleep=clock.sleep)
    with (
        running(
            model="llama3-8b-8192",
            tpm=6000,
            rpm=0,
            rpd=0,
            window=10.0,
            completion_tokens=16,
            latency=0.5,
            refund_unused=refunding,
            clock=clock,
        ) as em,
        capture_logs() as logs,
    ):
        seen, refused = _serve(lim, em, 12)
    assert refused == 0
    if refunding:
        # The second answer shows ~130 in use where a server keeping the first estimate
        # would still hold more than 800 of it.
        assert seen[:2] == [None, True]
        assert seen[-1] is True
        [event] = learned(logs)
        assert event["refunds"] is True
        assert event["evidence"] == "headers"
        assert event["server_used"] < event["ledger_used"]
    else:
        assert set(seen) == {None}
        assert not learned(logs)


@pytest.mark.redis
@pytest.mark.parametrize("refunding", [True, False])
def test_headers_of_a_refunding_server_prove_it_on_redis(
    redis_srv: RedisServer, refunding: bool
) -> None:
    # The same on Redis (its time; the emulator's latency is real, so short).
    with (
        redis_harness(redis_srv) as h,
        running(
            model="llama3-8b-8192",
            tpm=6000,
            rpm=0,
            rpd=0,
            window=60.0,
            completion_tokens=16,
            latency=0.02,
            refund_unused=refunding,
        ) as em,
        capture_logs() as logs,
    ):
        lim = h.limiter(tpm=6000, window=60.0)
        seen, refused = _serve(lim, em, 5)
        other = h.limiter(tpm=6000, window=60.0)  # another process on the same key
        other.observe({"x-ratelimit-remaining-tokens": "6000"})
    assert refused == 0
    if refunding:
        assert seen[:2] == [None, True]
        assert other.refunds is True  # the lesson is the key's
        [event] = learned(logs)
        assert (event["refunds"], event["evidence"]) == (True, "headers")
    else:
        assert set(seen) == {None}
        assert other.refunds is None
        assert not learned(logs)


def _learn_refunds(h: Harness, api: Api) -> tg.Limiter:
    """A limiter that learned from headers that the server refunds."""
    if not h.bucket:
        pytest.skip("the window learns only that a server keeps unused tokens")
    # 600 s: on Redis (real time) the floor drains by nothing noticeable meanwhile.
    lim = h.limiter(tpm=1000, window=600.0)
    api.commit(api.acquire(lim, 60), 5, headers(995, 1000))
    with capture_logs() as logs:
        # 10 in use where a server keeping the first 60 would hold them all (the
        # slack is 2% of 1,000).
        api.commit(api.acquire(lim, 60), 5, headers(990, 1000))
    assert lim.refunds is True
    [event] = learned(logs)
    assert (event["refunds"], event["evidence"]) == (True, "headers")
    return lim


def test_learned_refunds_then_a_429_after_a_free_teaches_no_refunds_for_good(
    h: Harness, api: Api
) -> None:
    lim = _learn_refunds(h, api)
    r = api.acquire(lim, 60)
    api.commit(r, 5)  # freed 55 at once, as refunds=True would
    with capture_logs() as logs:
        api.observe(lim, headers(900, 1000, **{"retry-after": "0"}))
    assert lim.refunds is False
    [event] = learned(logs)
    assert (event["refunds"], event["evidence"]) == (False, "429")
    # Final: headers that would prove refunds teach nothing now.
    with capture_logs() as logs:
        api.commit(api.acquire(lim, 60), 0, headers(1000, 1000))
        api.commit(api.acquire(lim, 60), 0, headers(1000, 1000))
    assert lim.refunds is False
    assert not learned(logs)


def test_learned_refunds_then_a_header_showing_a_free_kept_teaches_no_refunds(
    h: Harness, api: Api
) -> None:
    lim = _learn_refunds(h, api)
    r = api.acquire(lim, 60)
    with capture_logs() as logs:
        # We hold 15 in use (5 + 5 + 5); the server shows 65: it kept 50 of what was freed.
        api.commit(r, 5, headers(935, 1000))
    assert lim.refunds is False
    [event] = learned(logs)
    assert (event["refunds"], event["evidence"]) == (False, "headers")
    assert event["server_used"] - event["ledger_used"] == 50
    # The frees are charged again (all 110 of them): less left than the server shows.
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 936, max_wait=0)


def test_a_remaining_above_its_limit_teaches_nothing(h: Harness, api: Api) -> None:
    """Headers that contradict themselves (more room left than the bucket holds) are no
    evidence of refunds: the remaining is a bad header, not a server using -999,999,994,000."""
    lim = h.limiter(tpm=6000, window=600.0)
    with capture_logs() as logs:
        api.commit(api.acquire(lim, 1100), 150, headers(10**12, 6000))
    assert lim.refunds is None
    assert not learned(logs)
    assert [e["header"] for e in logs if "header" in e] == ["x-ratelimit-remaining-tokens"]


@pytest.mark.parametrize("refunds", [None, False])
def test_after_a_commit_with_headers_a_call_that_cannot_fit_in_max_wait_is_refused_at_once(
    h: Harness, api: Api, refunds: bool | None
) -> None:
    # The commit's own headers show the server kept the whole estimate. Nothing is in
    # flight or queued after it, so no answer is left whose headers could free the
    # unused tokens: the refill of what was charged is the only course.
    lim = h.limiter(tpm=100, refunds=refunds)
    api.commit(api.acquire(lim, 80), 2, headers(20))
    # Bucket: the 40 missing tokens refill in 0.4 window; window: the 80 charged leave
    # a window after the commit.
    wait = 0.4 * h.window if h.bucket else h.window
    started = lim._clock()
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 60, max_wait=wait / 2)
    if h.name == "memory":
        assert lim._clock() == started  # at once: the fake clock did not move
    message = str(info.value)
    assert "cannot be admitted within" in message  # decided before any wait
    assert "in flight" not in message
    assert "TPM limit (100 tokens per" in message
    assert info.value.limit_name == "tpm"
    assert info.value.needed_wait == pytest.approx(wait, abs=h.slack)
    # Within a bound that the refill meets, it goes when the refill allows.
    r = api.acquire(lim, 60, max_wait=1.5 * wait)
    assert r.waited == pytest.approx(wait, abs=h.slack)
