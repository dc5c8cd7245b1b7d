"""Redis dies while a request is at the server, tried as a new user would: a limiter
without ``fail_open`` cannot settle the request, yet a served (and billed) response
still reaches its caller, budgets are charged with its usage and the request event is
sent; a failed request's own exception reaches its caller unchanged. Either way a
``tokenguard.guard.settle_failed`` warning says what could not be settled. Real SDKs,
the emulator, and a real redis-server killed (SIGKILL) at the chosen moment."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import groq
import openai
import pytest
from reliability_support import PLANTED_CONTENT, PLANTED_KEY, RestartableRedis, secret_trap

import tokenguard as tg
from tokenguard.emulator import running

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

MODEL = "llama-3.1-8b-instant"
LIMITS: dict[str, Any] = {"tpm": 100_000, "rpm": 10_000, "window": 1.0}
ASK: Any = [{"role": "user", "content": f"What is {PLANTED_CONTENT}?"}]


@pytest.fixture
def redis_box() -> Iterator[RestartableRedis]:
    box = RestartableRedis()
    yield box
    box.close()


class KillDuringRequest:
    """The emulator's latency hook: Redis is killed while the server holds the request
    (after the guard's limiter admitted it, before the answer goes back)."""

    def __init__(self, box: RestartableRedis) -> None:
        self.box = box
        self.killed = False

    def __call__(self, seconds: float) -> None:
        if not self.killed:
            self.killed = True
            self.box.kill()


def limiter(box: RestartableRedis, key: str) -> tg.Limiter:
    return tg.Limiter(**LIMITS, redis=box.client(), key=key)


def named(trap: Any, name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in trap.events if e.name == name]


def check_served(trap: Any, usage: Any) -> None:
    [failed] = named(trap, "tokenguard.guard.settle_failed")
    assert (failed["during"], failed["served"], failed["model"]) == ("commit", True, MODEL)
    assert failed["tokens"] > 0
    [done] = named(trap, "tokenguard.guard.request")
    assert "error.type" not in done
    assert done["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert done["gen_ai.usage.output_tokens"] == usage.completion_tokens


# -- a served response is the caller's ----------------------------------------------------


@pytest.mark.parametrize("entry", ["decorator", "instrument"])
def test_a_response_served_while_redis_died_reaches_the_caller(
    redis_box: RestartableRedis, entry: str
) -> None:
    lim = limiter(redis_box, f"settle-{entry}")
    kill = KillDuringRequest(redis_box)
    with running(model=MODEL, **LIMITS, latency=0.001, sleep=kill) as em:
        sdk = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
        call: Callable[[], Any]
        if entry == "instrument":
            client = tg.instrument(sdk, limiter=lim)
            call = functools.partial(
                client.chat.completions.create, model=MODEL, messages=ASK, max_tokens=64
            )
        else:

            @tg.guard(limiter=lim)
            def ask(messages: Any = ASK, model: str = MODEL, max_tokens: int = 64) -> Any:
                return sdk.chat.completions.create(
                    messages=messages, model=model, max_tokens=max_tokens
                )

            call = ask

        with secret_trap() as trap, tg.budget(tokens=10_000) as b:
            reply: Any = call()  # LimiterUnavailable before: a billed answer lost
        statuses = [r.status for r in em.log if r.endpoint == "chat"]
    assert kill.killed
    assert statuses == [200]
    assert reply.usage.completion_tokens > 0
    assert (b.used, b.reserved) == (reply.usage.total_tokens, 0)
    check_served(trap, reply.usage)


async def test_an_async_response_served_while_redis_died_reaches_the_caller(
    redis_box: RestartableRedis,
) -> None:
    lim = limiter(redis_box, "settle-async")
    kill = KillDuringRequest(redis_box)
    with running(model=MODEL, **LIMITS, latency=0.001, sleep=kill) as em:
        client = tg.instrument(
            groq.AsyncGroq(base_url=em.root_url, api_key=PLANTED_KEY, max_retries=0), limiter=lim
        )
        with secret_trap() as trap:
            async with tg.budget(tokens=10_000) as b:
                reply: Any = await client.chat.completions.create(
                    model=MODEL, messages=ASK, max_tokens=64
                )
        await client.close()
    await lim.aclose()
    assert (b.used, b.reserved) == (reply.usage.total_tokens, 0)
    check_served(trap, reply.usage)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_stream_served_while_redis_died_is_read_to_its_end(
    redis_box: RestartableRedis, kind: str
) -> None:
    lim = limiter(redis_box, f"settle-stream-{kind}")
    kill = KillDuringRequest(redis_box)
    with running(model=MODEL, **LIMITS, latency=0.001, sleep=kill, completion_tokens=12) as em:
        chunks: list[Any] = []
        with secret_trap() as trap:
            if kind == "sync":
                sync = tg.instrument(
                    openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
                    limiter=lim,
                )
                with tg.budget(tokens=10_000) as b:
                    chunks.extend(
                        sync.chat.completions.create(
                            model=MODEL, messages=ASK, max_tokens=64, stream=True
                        )
                    )
            else:
                client = tg.instrument(
                    openai.AsyncOpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
                    limiter=lim,
                )
                async with tg.budget(tokens=10_000) as b:
                    stream = await client.chat.completions.create(
                        model=MODEL, messages=ASK, max_tokens=64, stream=True
                    )
                    chunks.extend([c async for c in stream])
                await client.close()
                await lim.aclose()
    usage = tg._adapters.usage_of(chunks[-1])
    assert usage is not None
    assert usage.completion_tokens == 12
    assert (b.used, b.reserved) == (usage.total_tokens, 0)
    check_served(trap, usage)


# -- a failed request's own exception is the caller's ---------------------------------------


def test_the_callers_own_exception_survives_a_limiter_that_cannot_refund(
    redis_box: RestartableRedis,
) -> None:
    lim = limiter(redis_box, "settle-own")
    mistake = ValueError("the wrapped code failed")

    @tg.guard(limiter=lim)
    def call(messages: Any = ASK, model: str = MODEL, max_tokens: int = 64) -> Any:
        redis_box.kill()  # admitted; then the limiter's Redis is gone
        raise mistake

    with (
        secret_trap() as trap,
        tg.budget(tokens=10_000) as b,
        pytest.raises(ValueError, match="the wrapped code failed") as caught,
    ):
        call()
    assert caught.value is mistake  # LimiterUnavailable before
    assert (b.used, b.reserved) == (0, 0)
    [failed] = named(trap, "tokenguard.guard.settle_failed")
    assert (failed["during"], failed["served"]) == ("cancel", False)
    [done] = named(trap, "tokenguard.guard.request")
    assert done["error.type"]  # reported as a failed call


def test_a_5xx_reaches_the_caller_unchanged_when_the_limiter_cannot_keep_its_charge(
    redis_box: RestartableRedis,
) -> None:
    lim = limiter(redis_box, "settle-5xx")
    with running(model=MODEL, **LIMITS) as em:
        sdk = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)

        @tg.guard(limiter=lim)
        def call(messages: Any = ASK, model: str = MODEL, max_tokens: int = 64) -> Any:
            redis_box.kill()
            return sdk.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        em.fail_next(503)
        with (
            secret_trap() as trap,
            tg.budget(tokens=10_000) as b,
            pytest.raises(openai.InternalServerError) as caught,
        ):
            call()
    assert caught.value.status_code == 503
    assert (b.used, b.reserved) == (0, 0)
    [failed] = named(trap, "tokenguard.guard.settle_failed")
    # A 5xx may have been charged by the server: the limiter was to keep the estimate.
    assert (failed["during"], failed["served"]) == ("commit", False)


async def test_an_async_429_reaches_the_caller_unchanged_when_the_limiter_is_gone(
    redis_box: RestartableRedis,
) -> None:
    lim = limiter(redis_box, "settle-429")
    with running(model=MODEL, tpm=1_000, rpm=1_000, window=60.0) as em:
        other = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
        other.chat.completions.create(model=MODEL, messages=ASK, max_tokens=900)
        sdk = openai.AsyncOpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)

        @tg.guard(limiter=lim, retries=0)
        async def call(messages: Any = ASK, model: str = MODEL, max_tokens: int = 500) -> Any:
            redis_box.kill()
            return await sdk.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        with secret_trap() as trap:
            async with tg.budget(tokens=10_000) as b:
                with pytest.raises(openai.RateLimitError) as caught:
                    await call()
        await sdk.close()
    await lim.aclose()
    assert caught.value.status_code == 429
    assert (b.used, b.reserved) == (0, 0)
    failed = named(trap, "tokenguard.guard.settle_failed")
    assert failed
    assert failed[0]["during"] == "cancel"
    assert {f["served"] for f in failed} == {False}
    [done] = named(trap, "tokenguard.guard.request")
    assert done["error.type"] == "429"
