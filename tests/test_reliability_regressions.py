"""Regression tests for faults the reliability suite found, one per bug."""

from __future__ import annotations

import threading
import time
from typing import Any

import openai
import pytest
from reliability_support import RestartableRedis
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard.emulator import running

MODEL = "llama-3.1-8b-instant"
HELLO: Any = [{"role": "user", "content": "Hello"}]

pytestmark = [pytest.mark.reliability, pytest.mark.redis]


async def test_asyncio_callers_keep_the_clients_retry_policy_when_redis_dies() -> None:
    """The asyncio Redis client is built from the sync one's settings, its retry policy
    included: with no retries, a dead Redis is LimiterUnavailable at once for tasks as for
    threads (redis.asyncio's default policy retried for ~3.6 s, past max_wait)."""
    box = RestartableRedis()
    try:
        client = box.client()
        assert client.get_retry() is not None
        lim = tg.Limiter(tpm=1_000, window=1.0, redis=client, key="retry-policy")
        r = await lim.acquire_async(10)
        await r.commit_async(10)
        box.kill()
        t0 = time.monotonic()
        with pytest.raises(tg.LimiterUnavailable):
            await lim.acquire_async(10, max_wait=1.0)
        assert time.monotonic() - t0 < 1.0
        await lim.aclose()
    finally:
        box.close()


def test_a_served_call_whose_commit_cannot_reach_redis_still_settles_its_budget() -> None:
    """Redis dies while the request is at the server: the caller gets the served (and
    billed) response, not LimiterUnavailable; the budget is charged the usage the server
    reported instead of holding the estimate for ever, the call's usage event is still
    sent, and a settle_failed warning says the limiter could not be settled."""
    box = RestartableRedis()
    seen: list[tg.events.Event] = []
    undo = tg.events.add_sink(seen.append)
    try:
        lim = tg.Limiter(tpm=3_000, window=1.0, redis=box.client(), key="budget-settle")
        with running(model=MODEL, tpm=3_000, window=1.0, latency=0.5) as em:
            client = tg.instrument(
                openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0), limiter=lim
            )
            with tg.budget(tokens=10_000) as b:
                killer = threading.Timer(0.2, box.kill)
                killer.start()
                reply: Any = client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=20
                )
                killer.join()
                assert reply.usage.total_tokens > 0
                billed = (em.log[-1].prompt_tokens or 0) + (em.log[-1].completion_tokens or 0)
                assert em.log[-1].status == 200
                assert b.used == billed
                assert b.remaining == 10_000 - billed  # nothing left reserved
    finally:
        undo()
        box.close()
    (event,) = [e.fields() for e in seen if e.name == "tokenguard.guard.request"]
    assert event["gen_ai.usage.input_tokens"] + event["gen_ai.usage.output_tokens"] == billed
    (failed,) = [e.fields() for e in seen if e.name == "tokenguard.guard.settle_failed"]
    assert (failed["during"], failed["served"]) == ("commit", True)


HEADERS_429 = {
    "retry-after": "1",
    "x-ratelimit-limit-tokens": "3000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "1s",
}


@pytest.mark.parametrize("fail_open", [False, True])
async def test_server_headers_while_redis_is_down_follow_fail_open(fail_open: bool) -> None:
    """A 429's headers given to ``observe`` while Redis is down: with fail_open the local
    window takes them (and a fail_open event says so) instead of LimiterUnavailable
    reaching a guarded caller whose request had just been refused."""
    box = RestartableRedis()
    try:
        lim = tg.Limiter(
            tpm=3_000, window=1.0, redis=box.client(), key="observe", fail_open=fail_open
        )
        lim.acquire(10).commit(10)
        box.kill()
        with capture_logs() as logs:
            if fail_open:
                lim.observe(HEADERS_429)
                await lim.observe_async(HEADERS_429)
                # The local window learned the server's view: nothing fits now.
                with pytest.raises(tg.RateLimitTimeout):
                    lim.acquire(100, max_wait=0)
            else:
                with pytest.raises(tg.LimiterUnavailable):
                    lim.observe(HEADERS_429)
                with pytest.raises(tg.LimiterUnavailable):
                    await lim.observe_async(HEADERS_429)
        events = [(e["event"], e.get("during")) for e in logs]
        if fail_open:
            assert events[0] == ("tokenguard.limiter.fail_open", "observe")
        else:
            assert events == []
        await lim.aclose()
    finally:
        box.close()
