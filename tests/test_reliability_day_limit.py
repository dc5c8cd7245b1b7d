"""A refusal whose body names the limit that bound it teaches the limiter that limit,
tried as a new user would: the emulator with a small day limit, over HTTP, through the
real openai and groq SDKs, with the limiter in memory and on a real redis-server. The
limiter was not told the day limit and no header reports one: after the first 429 that
names it, callers wait for the day's bucket (or get ``RateLimitTimeout`` naming it)
and the server sees nothing it refuses. A body that cannot be true teaches nothing."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from typing import Any

import groq
import openai
import pytest
import redis
from redis_support import RedisServer, redis_srv
from reliability_support import Fault, FaultProxy

import tokenguard as tg
from tokenguard._adapters import NamedLimit, _named_limit
from tokenguard.emulator import running

pytestmark = pytest.mark.reliability
__all__ = ["redis_srv"]  # the session fixture, imported so that pytest finds it here

MODEL = "llama-3.1-8b-instant"
# A "minute" of 20 ms makes the day 28.8 s: a day limit of 2,000 tokens refills about
# 69 tokens a second, one request of ~86 tokens in about 1.3 s. (A day limit is never
# believed below the minute's: TPD = TPM here.)
WINDOW = 0.02
TPM, TPD = 2_000, 2_000
_prompts = itertools.count()


def ask(client: Any, max_tokens: int = 50) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Question {next(_prompts)}: say hi."}],
        max_tokens=max_tokens,
    )


def sdk_client(sdk: str, base_url: str) -> Any:
    if sdk == "groq":
        return groq.Groq(base_url=base_url.removesuffix("/openai/v1"), api_key="x", max_retries=0)
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def named(events: list[tg.events.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == name]


class Limiters:
    """Limiters as separate processes would have them: in memory one (a process), on
    Redis a new ``tg.Limiter`` on the same key each time (another process)."""

    def __init__(self, backend: str, server: RedisServer | None, **limits: Any) -> None:
        self.backend, self.server, self.limits = backend, server, limits
        self.key = f"day-{uuid.uuid4().hex}"
        self.first: tg.Limiter | None = None

    def __call__(self) -> tg.Limiter:
        if self.backend == "memory":
            if self.first is None:
                self.first = tg.Limiter(**self.limits)
            return self.first
        assert self.server is not None
        client = redis.Redis(host=self.server.host, port=self.server.port)
        return tg.Limiter(**self.limits, redis=client, key=self.key)


@pytest.fixture(params=["memory", "redis"])
def limiters(request: pytest.FixtureRequest) -> Limiters:
    server = request.getfixturevalue("redis_srv") if request.param == "redis" else None
    return Limiters(request.param, server, tpm=TPM, window=WINDOW)


@pytest.mark.slow
@pytest.mark.parametrize("sdk", ["openai", "groq"])
def test_after_the_first_day_limit_429_nothing_reaches_the_server_until_the_day_allows_it(
    limiters: Limiters, sdk: str, events: list[tg.events.Event]
) -> None:
    with running(model=MODEL, tpm=TPM, rpm=10**6, tpd=TPD, window=WINDOW) as em:
        chat = [r for r in em.log if r.endpoint == "chat"]
        patient = tg.instrument(sdk_client(sdk, em.base_url), limiter=limiters(), max_wait=30)
        for _ in range(60):  # ~23 requests spend the day's 2,000 tokens
            ask(patient)
            chat = [r for r in em.log if r.endpoint == "chat"]
            if any(r.status == 429 for r in chat):
                break
        refused = [r for r in chat if r.status == 429]
        assert len(refused) == 1, "the day limit was never reached"
        seen = len(chat)
        # Another process on the key (in memory: the same limiter) that cannot wait for
        # the day (~1,540 tokens: 20 s of its refill): refused at once, naming the
        # limit, and the server sees nothing.
        impatient = tg.instrument(sdk_client(sdk, em.base_url), limiter=limiters(), max_wait=0.2)
        with pytest.raises(tg.RateLimitTimeout) as caught:
            ask(impatient, max_tokens=1_500)
        assert caught.value.limit_name == "tpd"
        assert (caught.value.resets_in or 0) > 0
        assert "TPD limit" in str(caught.value)
        assert len([r for r in em.log if r.endpoint == "chat"]) == seen
        # Callers who can wait are held for the day's refill and all served.
        again_limiter = limiters()
        again = tg.instrument(sdk_client(sdk, em.base_url), limiter=again_limiter, max_wait=30)
        for _ in range(3):
            ask(again)
        chat = [r for r in em.log if r.endpoint == "chat"]
    assert [r.status for r in chat[seen:]] == [200, 200, 200]
    assert sum(r.status == 429 for r in chat) == 1
    assert again_limiter.limits.tpd == TPD  # heard from the key at its first settle
    changed = named(events, "tokenguard.limiter.limit_changed")
    assert {"limit": "tpd", "old": None, "new": TPD} in [
        {k: e[k] for k in ("limit", "old", "new")} for e in changed
    ]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_minute_limit_named_in_a_429_is_learned_the_same_way(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """No header reports RPM either: the first 429 naming it teaches it (async here)."""
    server = request.getfixturevalue("redis_srv") if backend == "redis" else None
    lim = Limiters(backend, server, tpm=100_000, window=1.0)()

    async def run(base_url: str) -> None:
        client = tg.instrument(
            openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0),
            limiter=lim,
            max_wait=10,
        )
        for _ in range(16):
            await ask(client)

    with running(model=MODEL, tpm=100_000, rpm=4, window=1.0) as em:
        asyncio.run(run(em.base_url))
        statuses = [r.status for r in em.log if r.endpoint == "chat"]
    assert statuses.count(200) == 16
    assert statuses.count(429) == 1
    assert lim.limits.rpm == 4


def test_a_limiter_without_max_wait_raises_at_once_for_a_learned_day_limit(
    limiters: Limiters,
) -> None:
    """``max_day_wait`` bounds a day limit the limiter learned, as one it was given (on
    Redis: one another process learned)."""
    limiters.limits["max_day_wait"] = 2.0
    lim = limiters()
    assert lim.limits.tpd is None
    lim.observe_limit("tpd", TPD, used=TPD - 10)
    with pytest.raises(tg.RateLimitTimeout) as caught:
        limiters().acquire(1_500)  # no max_wait: ~21 s of the day's refill passes 2 s
    assert caught.value.limit_name == "tpd"
    assert "max_day_wait" in str(caught.value)


def test_a_caller_already_waiting_when_a_day_limit_is_learned_is_told_of_it(
    limiters: Limiters,
) -> None:
    """A wait that began before the lesson (its limits then had no TPD) ends in a
    ``RateLimitTimeout`` naming the day limit (before: a ``TypeError`` formatting it)."""
    limiters.limits["window"] = 2.0  # the minute's refill: 1,000 tokens a second
    lim = limiters()
    lim.acquire(TPM).commit(TPM)  # drained: the next 1,900 tokens wait ~1.9 s
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            lim.acquire(1_900, max_wait=5.0)
        except BaseException as exc:  # kept for the assertion below
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)  # queued, waiting for the minute's refill
    limiters().observe_limit("tpd", TPD, used=TPD - 10)
    waiter.join(10)
    [exc] = outcome
    assert isinstance(exc, tg.RateLimitTimeout)
    assert exc.limit_name == "tpd"
    assert "TPD limit" in str(exc)


def test_a_body_never_raises_the_room_left(limiters: Limiters) -> None:
    lim = limiters()
    lim.observe_limit("tpd", TPD, used=TPD - 100)
    lim.observe_limit("tpd", TPD, used=0)  # stale, or hostile: nothing is freed
    with pytest.raises(tg.RateLimitTimeout) as caught:
        limiters().acquire(1_000, max_wait=0.5)  # ~13 s of the day's refill
    assert caught.value.limit_name == "tpd"


def test_the_window_algorithm_takes_a_named_limit_in_memory() -> None:
    lim = tg.Limiter(tpm=TPM, window=WINDOW, algorithm="window")
    lim.observe_limit("tpd", TPD, used=TPD - 10)
    assert lim.limits.tpd == TPD
    with pytest.raises(tg.RateLimitTimeout) as caught:
        lim.acquire(1_000, max_wait=0.5)
    assert caught.value.limit_name == "tpd"
    lim.acquire(5).commit(5)  # what is left still goes


@pytest.mark.parametrize(
    ("name", "limit", "used"),
    [
        ("tpd", 0, None),
        ("tpd", 10**12, 5),
        ("tpd", TPD, TPD + 1),
        ("tpd", TPD, -1),
        ("rpd", -5, None),
        ("tpx", TPD, 1),
        ("tpd", True, None),
    ],
)
def test_a_limit_that_cannot_be_true_is_reported_and_teaches_nothing(
    limiters: Limiters, events: list[tg.events.Event], name: str, limit: Any, used: Any
) -> None:
    lim = limiters()
    lim.observe_limit(name, limit, used=used)
    assert lim.limits == tg.limiter.WindowLimits(tpm=TPM, window=WINDOW)
    assert len(named(events, "tokenguard.limiter.bad_body")) == 1
    assert not named(events, "tokenguard.limiter.limit_changed")
    lim.acquire(1_900, max_wait=0.5).commit(1_900)  # nothing holds the limiter back


def _body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}


def _day_429(clause: str) -> str:
    return (
        f"Rate limit reached for model `{MODEL}` in organization `org_x` service tier "
        f"`on_demand` on {clause}. Need more tokens? Upgrade to Dev Tier today."
    )


HOSTILE = {
    "limit 0": "tokens per day (TPD): Limit 0, Used 0, Requested 86. Please try again in 1s",
    "limit 1e12 spelled out": "tokens per day (TPD): Limit 1000000000000, Used 5, "
    "Requested 86. Please try again in 1s",
    "limit 1e12": "tokens per day (TPD): Limit 1e12, Used 5, Requested 86. Please try again in 1s",
    "used above the limit": "tokens per day (TPD): Limit 500000, Used 600000, Requested 86. "
    "Please try again in 1s",
    "garbage numbers": "tokens per day (TPD): Limit lots, Used some, Requested 86",
    "words and name disagree": "tokens per day (RPM): Limit 500000, Used 499990, Requested 86",
    "requested fits the room": "tokens per day (TPD): Limit 500000, Used 1000, Requested 86. "
    "Please try again in 1s",
    "a wait past a day": "tokens per day (TPD): Limit 500000, Used 499990, Requested 86. "
    "Please try again in 100000h0m0s",
    "a day limit below the minute's": "tokens per day (TPD): Limit 500, Used 490, "
    "Requested 86. Please try again in 1s",
    "a 429 larger than the limit": "tokens per day (TPD): Limit 5000, Used 4990, "
    "Requested 6000. Please try again in 1s",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_429_body_teaches_nothing_and_breaks_nothing(
    case: str, events: list[tg.events.Event]
) -> None:
    with running(model=MODEL, tpm=100_000, rpm=10**6, window=60.0) as em:
        proxy = FaultProxy(em.base_url)
        try:
            lim = tg.Limiter(tpm=100_000, window=60.0)
            client = tg.instrument(
                openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0),
                limiter=lim,
                max_wait=10,
            )
            body = _body(_day_429(HOSTILE[case]))
            proxy.inject(Fault(status=429, body=body, headers={"retry-after": "0.05"}))
            ask(client)  # the 429, then served after its wait
            for _ in range(3):
                ask(client)
        finally:
            proxy.close()
    assert proxy.statuses() == [429, 200, 200, 200, 200]
    assert lim.limits == tg.limiter.WindowLimits(tpm=100_000, window=60.0)
    assert not named(events, "tokenguard.limiter.limit_changed")
    [bad] = named(events, "tokenguard.limiter.bad_body")
    assert bad["limit"] == "tpd"
    assert "org_x" not in bad["reason"]  # the body is not logged


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "on tokens per day (TPD): Limit 100000, Used 97050, Requested 3619. "
            "Please try again in 9m38.016s. Need more tokens?",
            NamedLimit("tpd", 100_000, 97_050, 3_619, 578.016),
        ),
        (
            "on requests per minute (RPM): Limit 30, Used 30, Requested 1. "
            "Please try again in 2s. Need more",
            NamedLimit("rpm", 30, 30, 1, 2.0),
        ),
        (
            "Request too large for model `m` in organization `o` service tier `on_demand` on "
            "tokens per minute (TPM): Limit 6000, Requested 7950, please reduce your message",
            NamedLimit("tpm", 6_000, None, 7_950, None),
        ),
        ("on tokens per day (TPD): Limit 100000, Used 97050.", None),  # no Requested
        ("on tokens per day (TPM): Limit 6000, Used 1, Requested 2.", None),
        ("on tokens per day (TPD): Limit 12345678901234567890, Used 1, Requested 2.", None),
        ("on tokens per day (TPD): Limit 100, Used -5, Requested 2.", None),
    ],
)
def test_the_limit_clause_is_read_strictly(message: str, expected: NamedLimit | None) -> None:
    assert _named_limit(message) == expected
