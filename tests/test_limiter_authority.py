"""The server is the authority on limits: headers set them both ways, bounded; the
model table (and ``tier=``) is only where a limiter starts; headers given after a
commit are matched to their own request. In memory and on a real redis-server, and
end to end through the real SDKs against the emulator."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import redis
from redis_support import RedisServer, redis_srv

import tokenguard as tg
from tokenguard._guard._registry import limiter_for, normalize_base_url
from tokenguard.emulator import running
from tokenguard.limiter._headers import MAX_LIMIT

__all__ = ["redis_srv"]

MODEL = "llama-3.1-8b-instant"
FREE = tg.get_model(MODEL).tier_limits("free")
DEV = tg.get_model(MODEL).tier_limits("developer")
HELLO: Any = [{"role": "user", "content": "Hello"}]

Make = Callable[..., tg.Limiter]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The limiter options of each backend (Redis: a fresh key on the real server)."""
    if request.param == "memory":
        yield {}
        return
    srv: RedisServer = request.getfixturevalue("redis_srv")
    client = redis.Redis(host=srv.host, port=srv.port)
    try:
        yield {"redis": client, "key": f"authority-{uuid.uuid4().hex[:8]}"}
    finally:
        client.close()


@pytest.fixture
def make(backend: dict[str, Any]) -> Make:
    return lambda **kw: tg.Limiter(**backend, **kw)


def limit_headers(tokens: int | str, remaining: int | None = None) -> dict[str, str]:
    h = {"x-ratelimit-limit-tokens": str(tokens)}
    if remaining is not None:
        h["x-ratelimit-remaining-tokens"] = str(remaining)
    return h


def changes(events: list[tg.events.Event]) -> list[tuple[Any, ...]]:
    return [(e.limit, e.old, e.new) for e in events if isinstance(e, tg.events.LimiterLimitChanged)]


def test_a_header_raises_the_limit_and_a_large_request_is_admitted_at_once(
    make: Make, events: list[tg.events.Event]
) -> None:
    lim = make(tpm=6_000, rpm=1_000)
    r = lim.acquire(1_000)
    r.commit(1_000, headers=limit_headers(250_000, 249_000))
    assert lim.limits.tpm == 250_000
    assert changes(events) == [("tpm", 6_000, 250_000)]
    # Bigger than the configured limit: no RequestTooLarge, and no wait (the 1,000 in
    # use stay in use; the rest of the server's bucket is free).
    big = lim.acquire(200_000, max_wait=0)
    assert big.waited == 0.0
    big.cancel()
    lim.observe(limit_headers(250_000))
    assert len(changes(events)) == 1  # the same limit again: no event


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", ["bucket", "window"])
def test_on_one_redis_key_every_process_follows_the_limits_one_learned(
    redis_srv: RedisServer, algorithm: str, events: list[tg.events.Event]
) -> None:
    assert DEV is not None
    client = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    key = f"authority-{uuid.uuid4().hex[:8]}"
    try:
        a, b = (
            tg.Limiter.from_model(MODEL, redis=client, key=key, algorithm=algorithm)
            for _ in range(2)
        )
        a.acquire(100).commit(100, headers=limit_headers(DEV.tpm or 0))
        assert (a.limits.tpm, a.limits.rpm) == (DEV.tpm, DEV.rpm)
        # b never saw a header: the bucket's shared capacity reaches it with its next
        # answer; the window's limits are each process's own, from its own headers.
        b.acquire(100).commit(
            100, headers=None if algorithm == "bucket" else limit_headers(DEV.tpm or 0)
        )
        assert (b.limits.tpm, b.limits.rpm) == (DEV.tpm, DEV.rpm)
        b.acquire(100_000, max_wait=0).cancel()  # above the free tier's TPM, admitted
    finally:
        client.close()


def test_a_header_lowers_the_limit_with_one_event(
    make: Make, events: list[tg.events.Event]
) -> None:
    lim = make(tpm=6_000)
    lim.observe(limit_headers(3_000))
    assert lim.limits.tpm == 3_000
    with pytest.raises(tg.RequestTooLarge, match="3000"):
        lim.acquire(3_001)
    lim.acquire(3_000, max_wait=0).commit(3_000)
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(1_000, max_wait=0)  # the smaller bucket is empty
    assert changes(events) == [("tpm", 6_000, 3_000)]


@pytest.mark.parametrize(
    "bad", ["0", "-5", "inf", "nan", str(MAX_LIMIT + 1), "1e30", "x", "5000.5", "5e3"]
)
def test_a_limit_header_that_is_not_believable_is_ignored_and_reported(
    make: Make, events: list[tg.events.Event], bad: str
) -> None:
    lim = make(tpm=6_000)
    lim.observe(limit_headers(bad))
    assert lim.limits.tpm == 6_000
    assert changes(events) == []
    assert [e.header for e in events if isinstance(e, tg.events.LimiterBadHeader)] == [
        "x-ratelimit-limit-tokens"
    ]


def test_a_limit_header_below_the_request_it_answers_is_ignored_and_reported(
    make: Make, events: list[tg.events.Event]
) -> None:
    """A served request of 500 tokens (estimate 800): its server's limit is at least 500,
    so a header saying less is not believed; one saying 500 or more is."""
    lim = make(tpm=6_000)
    lim.acquire(800).commit(500, headers=limit_headers(499, 0))
    assert lim.limits.tpm == 6_000
    assert [e.header for e in events if isinstance(e, tg.events.LimiterBadHeader)] == [
        "x-ratelimit-limit-tokens"
    ]
    lim.acquire(100).commit(1_000, headers=limit_headers(500))  # the estimate bounds it
    assert lim.limits.tpm == 500
    assert changes(events) == [("tpm", 6_000, 500)]


def test_the_request_limit_header_sets_the_day_requests_both_ways(
    make: Make, events: list[tg.events.Event]
) -> None:
    lim = make(tpm=6_000, rpd=14_400)
    lim.observe({"x-ratelimit-limit-requests": "500000"})
    assert lim.limits.rpd == 500_000
    lim.observe({"x-ratelimit-limit-requests": "1000"})
    assert lim.limits.rpd == 1_000
    assert changes(events) == [("rpd", 14_400, 500_000), ("rpd", 500_000, 1_000)]


def test_a_paid_accounts_tpm_brings_its_tiers_rpm_and_day_limits(
    backend: dict[str, Any], events: list[tg.events.Event]
) -> None:
    assert FREE is not None
    assert DEV is not None
    lim = tg.Limiter.from_model(MODEL, window=1.0, **backend)
    lim.observe(limit_headers(DEV.tpm or 0))  # the developer tier's TPM
    assert (lim.limits.tpm, lim.limits.rpm, lim.limits.tpd) == (DEV.tpm, DEV.rpm, DEV.tpd)
    assert changes(events) == [
        ("tpm", FREE.tpm, DEV.tpm),
        ("rpm", FREE.rpm, DEV.rpm),
        ("tpd", FREE.tpd, DEV.tpd),
    ]
    # More than the free tier's tokens of a day, and more than its 30 requests a
    # "minute", without a day's wait (a compressed day is 1,440 s here).
    for _ in range(40):
        lim.acquire(15_000, max_wait=5).commit(15_000)


@pytest.mark.parametrize(
    ("tpm", "expected"),
    [
        (600_000, (None, None)),  # a larger TPM no tier has: the free limits are dropped
        (3_000, ("free", "free")),  # a smaller one: kept
    ],
)
def test_a_tpm_no_tier_has_drops_or_keeps_the_tables_unheard_limits(
    backend: dict[str, Any], tpm: int, expected: tuple[str | None, str | None]
) -> None:
    assert FREE is not None
    lim = tg.Limiter.from_model(MODEL, **backend)
    lim.observe(limit_headers(tpm))
    want = tuple(
        None if e is None else getattr(FREE, n)
        for e, n in zip(expected, ("rpm", "tpd"), strict=True)
    )
    assert (lim.limits.tpm, lim.limits.rpm, lim.limits.tpd) == (tpm, *want)


def test_only_the_tables_own_limits_follow_the_server() -> None:
    assert FREE is not None
    assert DEV is not None
    lim = tg.Limiter.from_model(MODEL, tpd=123_456)
    lim.observe(limit_headers(DEV.tpm or 0))
    assert (lim.limits.rpm, lim.limits.tpd) == (DEV.rpm, 123_456)
    own = tg.Limiter.from_model(MODEL, tg.Limits(tpm=9_000, rpm=45, tpd=90_000))
    own.observe(limit_headers(DEV.tpm or 0))
    assert (own.limits.tpm, own.limits.rpm, own.limits.tpd) == (DEV.tpm, 45, 90_000)
    lim = tg.Limiter.from_model(MODEL)
    lim.observe(limit_headers(7_000))  # the first TPM decides the tier, once
    lim.observe(limit_headers(DEV.tpm or 0))
    assert (lim.limits.rpm, lim.limits.tpd) == (None, None)


def test_explicit_guard_limits_add_no_day_limits_from_the_table() -> None:
    from tokenguard._guard._options import make_options

    lim = limiter_for(make_options(tpm=250_000, rpm=1_000), normalize_base_url(None), MODEL)
    assert lim is not None
    assert (lim.limits.tpm, lim.limits.rpm, lim.limits.tpd, lim.limits.rpd) == (
        250_000,
        1_000,
        None,
        None,
    )


def test_tier_picks_the_tables_starting_point_also_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tokenguard._guard._options import make_options

    assert DEV is not None
    base = normalize_base_url(None)
    lim = limiter_for(make_options(tier="developer"), base, MODEL)
    assert lim is not None
    assert (lim.limits.tpm, lim.limits.rpm) == (DEV.tpm, DEV.rpm)
    monkeypatch.setenv("TOKENGUARD_TIER", "developer")
    assert make_options().tier == "developer"
    assert make_options(tier="free").tier == "free"  # given wins over the environment
    own = tg.Limits(tpm=42_000, rpm=420)
    lim = limiter_for(make_options(tier=own), base, MODEL)
    assert lim is not None
    assert (lim.limits.tpm, lim.limits.rpm, lim.limits.tpd) == (
        42_000,
        420,
        None,
    )
    monkeypatch.setenv("TOKENGUARD_TIER", "enterprise")
    with pytest.raises(tg.ConfigurationError) as env_error:
        make_options()
    # The variable's values only: an environment variable cannot hold a tg.Limits.
    assert str(env_error.value) == (
        "$TOKENGUARD_TIER must be one of ['free', 'developer'] (unset: 'free'), got 'enterprise'"
    )
    with pytest.raises(tg.ConfigurationError, match=r"tier must be one of .* or a tg\.Limits"):
        make_options(tier="gold")


def test_a_developer_tier_the_table_lacks_starts_from_the_free_tier() -> None:
    scout = "meta-llama/llama-4-scout-17b-16e-instruct"
    info = tg.get_model(scout)
    assert info.tier_limits("developer") is None
    lim = tg.Limiter.from_model(scout, "developer")
    free = info.tier_limits("free")
    assert free is not None
    assert lim.limits.tpm == free.tpm


def test_an_instrumented_client_learns_a_paid_accounts_limits_from_its_first_answer(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, tpm=250_000, rpm=1_000, window=2.0) as em:
        # The limiter's window is the emulator's (2 s): its limits still start from the
        # table and are learnt from the first answer.
        client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="paid"), window=2.0)
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        assert ("tpm", FREE.tpm if FREE else 0, 250_000) in changes(events)
        # 20 calls of 20,000 tokens each: 400,000 on a 250,000 bucket refilled in 2 s,
        # far above the free tier's 6,000 and its 500,000 a day.
        big = "word " * 19_000
        for _ in range(20):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": big}], max_tokens=16
            )
        assert [r for r in em.log if r.status == 429] == []
        assert sum(1 for r in em.log if r.status == 200) == 21


def test_clients_with_different_keys_learn_their_own_limits() -> None:
    with running(model=MODEL, tpm=250_000, rpm=1_000, window=2.0) as em:
        a = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="org-a"))
        a.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        from tokenguard._guard._instrument import _account
        from tokenguard._guard._options import make_options

        opts, base = make_options(), normalize_base_url(em.base_url)
        lim_a = limiter_for(opts, base, MODEL, _account(a))
        lim_b = limiter_for(opts, base, MODEL, _account(openai.OpenAI(api_key="org-b")))
        assert lim_a is not None
        assert lim_b is not None
        assert lim_a is not lim_b
        assert (lim_a.limits.tpm, lim_b.limits.tpm) == (250_000, FREE.tpm if FREE else 0)


# -- headers given after the commit are matched to their request --------------------


def _two_in_flight(lim: tg.Limiter) -> tuple[Any, Any]:
    r1 = lim.acquire(50)
    r2 = lim.acquire(30)
    return r1, r2


@pytest.mark.parametrize("matched", [True, False])
def test_commit_then_observe_is_matched_to_its_request_under_contention(
    make: Make, matched: bool
) -> None:
    """r1 and r2 in flight; the server keeps unused tokens. r1's answer is written
    before r2 reaches the server (remaining 50), r2 is committed by another thread
    after r1's commit and before r1's headers are observed. Taken as current, those
    headers would free 30 tokens the server does not have (the bug); matched to r1
    they free none."""
    from tokenguard.limiter import _limiter

    lim = make(tpm=100, window=600.0, refunds=False)
    r1, r2 = _two_in_flight(lim)
    r1.commit(10)
    other = threading.Thread(target=r2.commit, args=(30,))
    other.start()
    other.join()
    if not matched:
        _limiter._ANSWERED.set(None)  # what the limiter did before: headers as current
    lim.observe(limit_headers(100, 50))
    # The server has 100 - 50 - 30 = 20 left.
    if matched:
        with pytest.raises(tg.RateLimitTimeout):
            lim.acquire(21, max_wait=0)
    else:
        lim.acquire(21, max_wait=0).cancel()  # over-admitted: the server would say 429
    lim.acquire(19, max_wait=0).cancel()


def test_reservation_observe_and_async_tasks_are_matched_too(make: Make) -> None:
    lim = make(tpm=100, window=600.0, refunds=False)

    async def main() -> None:
        r1, r2 = _two_in_flight(lim)
        await r1.commit_async(10)

        async def commit_r2() -> None:
            await r2.commit_async(30)
            # This task's own observe is matched to r2 (headers written after both).
            await lim.observe_async(limit_headers(100, 20))

        await asyncio.create_task(commit_r2())
        await lim.observe_async(limit_headers(100, 50))  # r1's, in r1's task
        with pytest.raises(tg.RateLimitTimeout):
            await lim.acquire_async(21, max_wait=0)
        r3 = await lim.acquire_async(19, max_wait=0)
        await r3.commit_async(1)
        r3.observe(limit_headers(100, 1))  # r3's own headers, on the reservation
        with pytest.raises(tg.RateLimitTimeout):
            await lim.acquire_async(2, max_wait=0)

    asyncio.run(main())
