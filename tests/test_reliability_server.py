"""What the server sends is checked before it is believed, tried as a new user would:
through the real openai and groq SDKs, against the emulator behind a fault-injecting
proxy. A wait no limit can justify is a clear error, a ``retry-after`` on a served
response holds nobody, a 429 without a usable wait backs off, and one strange refusal
does not teach a context window or a TPM below what the server already served."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
import redis
from fake_clock import FakeClock
from redis_support import RedisServer, redis_srv
from reliability_support import CONTEXT_EXCEEDED, Fault, FaultProxy, rate_limited, too_large

import tokenguard as tg
from tokenguard._guard._registry import LESSON_TTL_S
from tokenguard.emulator import running

__all__ = ["redis_srv"]

pytestmark = pytest.mark.reliability

MODEL = "llama-3.1-8b-instant"
HELLO: Any = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """The emulator (limits no test reaches) behind a fault-injecting proxy."""
    with running(model=MODEL, tpm=100_000, rpm=10_000, window=60.0) as em:
        proxy = FaultProxy(em.base_url)
        try:
            yield proxy
        finally:
            proxy.close()


def named(events: list[tg.events.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == name]


def sdk_client(sdk: str, base_url: str) -> Any:
    if sdk == "groq":
        return groq.Groq(base_url=base_url.removesuffix("/openai/v1"), api_key="x")
    return openai.OpenAI(base_url=base_url, api_key="x")


class Sleeps:
    """A guard's ``sleep`` that keeps every wait asked and moves a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.sleep(seconds)


def guarded(
    base_url: str, sdk: str = "openai", window: float = 60.0, **options: Any
) -> tuple[Any, Sleeps]:
    """An instrumented client whose waits, the limiter's too, are on one fake clock."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    options.setdefault("limiter", tg.Limiter(tpm=100_000, window=window, clock=clock, sleep=sleeps))
    client = tg.instrument(sdk_client(sdk, base_url), clock=clock, sleep=sleeps, **options)
    return client, sleeps


@pytest.mark.parametrize("sdk", ["openai", "groq"])
@pytest.mark.parametrize("retry_after", ["inf", "1e400", "100000000", "-inf"])
def test_a_429_asking_for_a_wait_no_limit_justifies_is_a_clear_error_not_a_sleep(
    proxy: FaultProxy, sdk: str, retry_after: str
) -> None:
    client, sleeps = guarded(proxy.base_url, sdk)
    proxy.inject(Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": retry_after}))
    if retry_after == "-inf":  # not a wait at all: backed off once, then served
        reply: Any = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        assert reply.usage.completion_tokens > 0
        [wait] = sleeps.waits
        assert 0.75 <= wait <= 1.0
        return
    with pytest.raises(tg.RateLimitTimeout, match="longer than a minute's limits") as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert caught.value.max_wait == 60.0
    assert sleeps.waits == []
    assert proxy.statuses() == [429]
    # The refusal holds the next call for the window at most, then it is served.
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert sum(sleeps.waits) <= 60.0
    assert proxy.statuses() == [429, 200]


@pytest.mark.parametrize("named_limit", [True, False], ids=["tpd-named", "no-limit-named"])
def test_a_429_wait_only_a_day_limit_justifies_is_bounded_by_max_day_wait(
    proxy: FaultProxy, named_limit: bool
) -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    lim = tg.Limiter(tpm=100_000, tpd=10**7, clock=clock, sleep=sleeps, max_day_wait=300.0)
    client = tg.instrument(
        sdk_client("openai", proxy.base_url), limiter=lim, clock=clock, sleep=sleeps
    )
    tpd = (
        f"Rate limit reached for model `{MODEL}` on tokens per day (TPD): "
        "Limit 10000000, Used 9999990, Requested 40. Please try again in 1h0m0s."
    )
    body = {"error": {"message": tpd if named_limit else "Slow down.", "type": "tokens"}}
    proxy.inject(Fault(status=429, body=body, headers={"retry-after": "3600"}))
    with pytest.raises(tg.RateLimitTimeout, match="max_day_wait=300"):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert sleeps.waits == []  # refused at once, not after an hour


@pytest.mark.parametrize("retry_after", [None, "0", "-3", "nan", "soon"])
def test_a_429_without_a_usable_wait_backs_off_exponentially_and_is_bounded_by_default(
    proxy: FaultProxy, retry_after: str | None
) -> None:
    client, sleeps = guarded(proxy.base_url)
    headers = {} if retry_after is None else {"retry-after": retry_after}
    proxy.inject(*[Fault(status=429, body=rate_limited(MODEL), headers=headers)] * 10)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    # The default: six retries, then the server's 429 reaches the caller.
    assert proxy.statuses() == [429] * 7
    assert len(sleeps.waits) == 6
    for n, wait in enumerate(sleeps.waits):
        assert 0.75 * 2**n <= wait <= 2**n  # a floor, doubling, less up to a quarter
    assert len(set(sleeps.waits)) == 6


def test_the_backoff_never_passes_the_window_and_retries_none_still_waits(
    proxy: FaultProxy,
) -> None:
    client, sleeps = guarded(proxy.base_url, window=10.0, retries=None)
    proxy.inject(*[Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": "0"})] * 8)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert proxy.statuses() == [429] * 8 + [200]
    assert min(sleeps.waits) >= 0.75
    assert max(sleeps.waits) <= 10.0


def test_an_http_date_retry_after_is_read(proxy: FaultProxy) -> None:
    client, sleeps = guarded(proxy.base_url)
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    proxy.inject(Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": when}))
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    [wait] = sleeps.waits
    assert 3.0 <= wait <= 6.0  # whole seconds on both sides, read against the reply's date


def test_a_try_again_in_body_is_read_when_the_header_is_garbage(
    proxy: FaultProxy,
) -> None:
    client, sleeps = guarded(proxy.base_url)
    body = rate_limited(MODEL, "Please try again in 2.5s.")
    proxy.inject(Fault(status=429, body=body, headers={"retry-after": "nan"}))
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert sleeps.waits == [2.5]


@pytest.mark.parametrize("sdk", ["openai", "groq"])
def test_a_retry_after_on_a_served_response_holds_nobody(proxy: FaultProxy, sdk: str) -> None:
    client, sleeps = guarded(proxy.base_url, sdk)
    proxy.inject(Fault(headers={"retry-after": "100000000"}))
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert proxy.statuses() == [200]
    # The next call goes at once.
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert sleeps.waits == []
    assert sleeps.clock.now == 1000.0


def completion(usage: dict[str, int]) -> dict[str, Any]:
    """A served chat completion (as a server would send it) with ``usage``."""
    message = {"role": "assistant", "content": "Hi"}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


@pytest.mark.parametrize("sdk", ["openai", "groq"])
@pytest.mark.parametrize(
    ("prompt", "completion_tokens", "total", "reason"),
    [
        (10**15, 5, 10**15 + 5, "more than one request"),
        (5, 10**12, 10**12 + 5, "more than one request"),
        (20, 5, 10**9, "is not prompt_tokens + completion_tokens"),
    ],
    ids=["prompt-of-a-petabyte", "completion-of-a-terabyte", "total-of-its-own"],
)
def test_a_usage_no_request_could_be_billed_is_charged_at_the_estimate(
    proxy: FaultProxy,
    events: list[tg.events.Event],
    sdk: str,
    prompt: int,
    completion_tokens: int,
    total: int,
    reason: str,
) -> None:
    client, sleeps = guarded(proxy.base_url, sdk, max_wait=1.0)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}
    proxy.inject(Fault(status=200, body=completion(usage)))
    with tg.budget(tokens=100_000) as budget:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        [call] = named(events, "tokenguard.guard.request")
        assert budget.used == call["tokenguard.estimated_tokens"] < 100
        # Neither the limiter nor the budget is wedged: the next calls go at once.
        for _ in range(3):
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert proxy.statuses() == [200] * 4
    assert sleeps.waits == []
    [bad] = named(events, "tokenguard.guard.bad_usage")
    assert (bad["prompt_tokens"], bad["total_tokens"]) == (prompt, total)
    assert reason in bad["reason"]
    assert "gen_ai.usage.input_tokens" not in call  # not reported as the server's count


def test_a_usage_above_the_estimate_within_the_window_is_believed(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    client, _ = guarded(proxy.base_url)
    usage = {"prompt_tokens": 100_000, "completion_tokens": 8, "total_tokens": 100_008}
    proxy.inject(Fault(status=200, body=completion(usage)))
    with tg.budget(tokens=10**6) as budget:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert budget.used == 100_008
    assert not named(events, "tokenguard.guard.bad_usage")


def test_a_call_whose_answer_was_lost_after_it_was_sent_keeps_its_charge() -> None:
    # The server charged the first call, but its answer never arrived (the proxy closed
    # the connection before the body): the guard keeps the estimate, so the second
    # call waits in the limiter instead of being sent into the server's 429.
    with running(model=MODEL, tpm=300, rpm=1000, completion_tokens=5, window=60.0) as em:
        proxy = FaultProxy(em.base_url)
        try:
            client = tg.instrument(
                openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0),
                tpm=300,
                max_wait=1.0,
            )
            proxy.inject(Fault(cut_after=0))
            with pytest.raises(openai.APIConnectionError):
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200)
            with pytest.raises(tg.RateLimitTimeout):
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200)
            assert [r.status for r in em.log] == [200]  # the second was never sent
        finally:
            proxy.close()


def _without_usage(body: bytes) -> bytes:
    """An SSE body with every usage taken out (a server that sends none)."""
    lines = []
    for line in body.decode().split("\n"):
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            chunk.pop("usage", None)
            chunk.get("x_groq", {}).pop("usage", None)
            line = "data: " + json.dumps(chunk)
        lines.append(line)
    return "\n".join(lines).encode()


@pytest.mark.parametrize("read", ["iterated", "lines", "bytes"])
def test_a_whole_stream_without_usage_is_not_closed_early_however_it_is_read(
    proxy: FaultProxy, events: list[tg.events.Event], read: str
) -> None:
    client, _ = guarded(proxy.base_url)
    proxy.inject(Fault(rewrite=_without_usage))
    if read == "iterated":
        list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    else:
        with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, stream=True
        ) as raw:
            list(raw.iter_lines() if read == "lines" else raw.iter_bytes(7))
    [call] = named(events, "tokenguard.guard.request")
    assert not call.get("tokenguard.stream_closed_early")  # it ran to its finish_reason
    assert "gen_ai.usage.input_tokens" not in call


def test_a_bad_usage_a_stream_sends_twice_is_reported_once(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    client, _ = guarded(proxy.base_url)
    # With include_usage the emulator, as Groq, sends the usage twice (x_groq and usage).
    proxy.inject(
        Fault(
            rewrite=lambda body: re.sub(rb'"total_tokens": ?(\d+)', rb'"total_tokens": 9\1', body)
        )
    )
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    list(stream)
    assert len(named(events, "tokenguard.guard.bad_usage")) == 1


def test_a_stream_that_ends_before_any_finish_reason_is_reported_closed_early(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    client, _ = guarded(proxy.base_url)
    # The server (or a proxy) ends the stream after its first chunk, content-length and
    # all: no finish_reason, no usage, no [DONE]. The SDK ends the stream quietly.
    proxy.inject(Fault(rewrite=lambda body: body.split(b"\n\n")[0] + b"\n\n"))
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=64, stream=True)
    assert len(list(stream)) == 1
    list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=64, stream=True))
    cut, whole = named(events, "tokenguard.guard.request")
    assert cut["tokenguard.stream_closed_early"] is True
    assert "gen_ai.usage.input_tokens" not in cut
    assert not whole.get("tokenguard.stream_closed_early")


def test_the_limiter_believes_no_hold_longer_than_its_limits_justify(
    events: list[tg.events.Event],
) -> None:
    clock = FakeClock()
    lim = tg.Limiter(tpm=6_000, rpm=30, clock=clock, sleep=clock.sleep)
    lim.acquire(100).commit(80, headers={"retry-after": "100000000"})
    assert lim.acquire(10, max_wait=5).waited == 0.0
    lim.observe({"retry-after": "100000000"})  # a 429's: held for one window at most
    assert lim.acquire(10).waited == pytest.approx(60.0)
    assert named(events, "tokenguard.limiter.bad_header")
    lim.observe({"retry-after": "7"})  # a 429's within the window: held
    assert lim.acquire(10).waited == pytest.approx(7.0)
    day = tg.Limiter(tpm=6_000, tpd=500_000, clock=clock, sleep=clock.sleep)
    day.observe({"retry-after": "3600"})  # a day's limits justify an hour
    with pytest.raises(tg.RateLimitTimeout):
        day.acquire(10, max_wait=5)


@pytest.mark.parametrize("algorithm", ["bucket", "window"])
def test_a_reset_longer_than_the_window_is_not_believed(
    algorithm: str, events: list[tg.events.Event]
) -> None:
    clock = FakeClock()
    lim = tg.Limiter(tpm=6_000, algorithm=algorithm, clock=clock, sleep=clock.sleep)
    lim.acquire(100).commit(
        100,
        headers={
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-reset-tokens": "100000000s",
        },
    )
    # The server's bucket is empty; it refills within a window, whatever the reset said.
    assert lim.acquire(3_000, max_wait=60).waited <= 60.0
    [bad] = named(events, "tokenguard.limiter.bad_header")
    assert bad["header"] == "x-ratelimit-reset-tokens"


def test_a_context_refusal_the_models_endpoint_contradicts_teaches_nothing(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    client, _ = guarded(proxy.base_url)
    proxy.inject(Fault(status=400, body=CONTEXT_EXCEEDED))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    assert named(events, "tokenguard.guard.limit_learned") == []
    # The next calls are sent as they are: no window of 33 tokens was learned.
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    assert proxy.statuses()[-3:] == [200, 200, 200]


def test_a_decorated_function_learns_no_window_below_what_was_served(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    raw = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)

    @tg.guard(tpm=100_000)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 32) -> Any:
        return raw.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    first: Any = ask(HELLO)
    admitted = first.usage.prompt_tokens + 32
    proxy.inject(Fault(status=400, body=CONTEXT_EXCEEDED))
    with pytest.raises(openai.BadRequestError):
        ask(HELLO)  # the same request was served: the refusal is passed on, not learned
    assert named(events, "tokenguard.guard.limit_learned") == []
    long: Any = [{"role": "user", "content": "word " * 200}]
    proxy.inject(Fault(status=400, body=CONTEXT_EXCEEDED))
    ask(long)  # a larger one: half of it is learned, never below what was served
    [learned] = named(events, "tokenguard.guard.limit_learned")
    assert learned["learned"] >= admitted
    assert proxy.statuses() == [200, 400, 400, 200]


def test_a_413_saying_limit_0_teaches_nothing_and_later_calls_are_served(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    client, _ = guarded(proxy.base_url)
    proxy.inject(Fault(status=413, body=too_large(MODEL, 0)))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    assert caught.value.status_code == 413
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    assert named(events, "tokenguard.guard.limit_learned") == []
    assert proxy.statuses() == [413, 200]


@pytest.mark.parametrize("sdk", ["openai", "groq"])
@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_limit_header_below_the_request_it_served_is_not_believed(
    proxy: FaultProxy,
    events: list[tg.events.Event],
    request: pytest.FixtureRequest,
    sdk: str,
    backend: str,
) -> None:
    """A served response saying the TPM is 1 token: the server has just let the request
    through, so its limit is at least that; believed, every later call was refused here
    (ContextOverflow, nothing sent, so no later header could correct it)."""
    options: dict[str, Any] = {}
    if backend == "redis":
        srv: RedisServer = request.getfixturevalue("redis_srv")
        client = redis.Redis(host=srv.host, port=srv.port)
        request.addfinalizer(client.close)
        options["limiter"] = tg.Limiter(tpm=100_000, redis=client, key=f"below-{sdk}")
    guard, _ = guarded(proxy.base_url, sdk, **options)
    lie = {"x-ratelimit-limit-tokens": "1", "x-ratelimit-remaining-tokens": "0"}
    proxy.inject(Fault(headers=lie))
    for _ in range(4):
        guard.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert proxy.statuses() == [200] * 4
    assert [e["header"] for e in named(events, "tokenguard.limiter.bad_header")] == [
        "x-ratelimit-limit-tokens"
    ]
    assert named(events, "tokenguard.limiter.limit_changed") == []


def test_a_learned_window_lapses_and_is_learned_again(
    proxy: FaultProxy, events: list[tg.events.Event]
) -> None:
    raw = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    clock = FakeClock()

    @tg.guard(tpm=100_000, clock=clock, sleep=clock.sleep)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 32) -> Any:
        return raw.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    long: Any = [{"role": "user", "content": "word " * 400}]
    proxy.inject(Fault(status=400, body=CONTEXT_EXCEEDED))
    ask(long)  # half of what was refused is learned: the call is truncated to fit
    [learned] = named(events, "tokenguard.guard.limit_learned")
    fits = [e["tokenguard.fit"] for e in named(events, "tokenguard.guard.request")]
    assert fits == ["truncate"]
    clock.advance(LESSON_TTL_S)
    ask(long)  # the lesson lapsed: sent whole again, and the server serves it
    fits = [e["tokenguard.fit"] for e in named(events, "tokenguard.guard.request")]
    assert fits == ["truncate", "none"]
    assert proxy.statuses() == [400, 200, 200]
    assert learned["learned"] < 400


@pytest.mark.parametrize("cut_after", [40, 400])
def test_a_stream_cut_midway_is_reported_with_its_error_type(
    proxy: FaultProxy, events: list[tg.events.Event], cut_after: int
) -> None:
    client, _ = guarded(proxy.base_url)
    proxy.inject(Fault(cut_after=cut_after))
    # Whatever the SDK's transport raises for a body cut short reaches the caller.
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=64, stream=True)
    with pytest.raises(Exception) as caught:  # noqa: PT011
        list(stream)
    [done] = named(events, "tokenguard.guard.request")
    assert done["tokenguard.stream_closed_early"] is True
    assert done["error.type"] in (type(caught.value).__name__, "connection")


def test_no_system_messages_are_named_when_there_are_none() -> None:
    with pytest.raises(tg.ContextOverflow) as caught:
        tg.fit(HELLO, model=MODEL, context_window=4, on_overflow="truncate")
    assert "system messages" not in str(caught.value)
    assert math.isfinite(caught.value.needed)
