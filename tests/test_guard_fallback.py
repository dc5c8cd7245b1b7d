"""Fallback models (``fallback=[...]``), tried as a new user would: the emulator serving
two models over HTTP, through the real openai and groq SDKs, sync and async, decorated
and instrumented. A call its model would hold past ``max_wait``, or whose day limit is
spent, is counted, fitted and sent for the next model (a model the table does not know,
with a smaller context window), with a ``tokenguard.guard.fallback`` event; a stream
moves only before its first chunk; bad options are refused when the guard is made."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import groq
import openai
import pytest
from emulator_support import Serve
from fake_clock import FakeClock
from reliability_support import Fault, FaultProxy

import tokenguard as tg
from tokenguard._spend._prices import reset_prices
from tokenguard.emulator import Emulator, ModelSpec

#: Known to the model table (with Groq's price); the fallback is a model the table does
#: not know, served with a context window of 4,096 tokens (learned from GET /models).
A = "llama-3.3-70b-versatile"
B = "acme/small-4k"
SMALL = 4_096
WIDE = 100_000  # the emulator's request limits: no test reaches them


def serve_two(serve: Serve, tpm: int, *, tpd: int | None = None, window: float = 60.0) -> Emulator:
    """Both models, each with its own ``tpm`` (as the guard is told: the server's headers
    would correct it), and the first with a day limit of ``tpd`` tokens."""
    return serve(
        models=[
            ModelSpec(A, 131_072, "llama3.1", tpm=tpm, rpm=WIDE, tpd=tpd, rpd=None),
            ModelSpec(B, SMALL, "llama3.1", tpm=tpm, rpm=WIDE, tpd=None, rpd=None),
        ],
        window=window,
    )


def question(i: int, words: int = 5) -> Any:
    return [{"role": "user", "content": f"Question {i}: " + "word " * words}]


def sent(em: Emulator) -> list[tuple[str | None, int]]:
    return [(r.model, r.status) for r in em.log if r.endpoint == "chat"]


def named(events: list[tg.events.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == name]


def sdk_client(sdk: str, aio: bool, base_url: str) -> Any:
    if sdk == "groq":
        root = base_url.removesuffix("/openai/v1")
        cls: Any = groq.AsyncGroq if aio else groq.Groq
        return cls(base_url=root, api_key="x", max_retries=0)
    cls = openai.AsyncOpenAI if aio else openai.OpenAI
    return cls(base_url=base_url, api_key="x", max_retries=0)


def caller(how: str, sdk: str, aio: bool, em: Emulator, **options: Any) -> Callable[..., Any]:
    """A call ``ask(messages=..., model=..., max_tokens=...)`` through an instrumented
    client or a decorated function, as a user would write each."""
    client = sdk_client(sdk, aio, em.base_url)
    if how == "instrument":
        tg.instrument(client, **options)
        return client.chat.completions.create  # type: ignore[no-any-return]
    if aio:

        @tg.guard(base_url=em.base_url, **options)
        async def ask_async(messages: Any, model: str, max_tokens: int, **kw: Any) -> Any:
            return await client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens, **kw
            )

        return ask_async

    @tg.guard(base_url=em.base_url, **options)
    def ask(messages: Any, model: str, max_tokens: int, **kw: Any) -> Any:
        return client.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens, **kw
        )

    return ask


def run(ask: Callable[..., Any], aio: bool, calls: list[dict[str, Any]]) -> list[Any]:
    """Each call in turn (in one event loop when async): its result or its error."""

    async def all_async() -> list[Any]:
        out: list[Any] = []
        for kw in calls:
            try:
                out.append(await ask(**kw))
            except tg.RateLimitTimeout as exc:
                out.append(exc)
        return out

    if aio:
        return asyncio.run(all_async())
    out: list[Any] = []
    for kw in calls:
        try:
            out.append(ask(**kw))
        except tg.RateLimitTimeout as exc:
            out.append(exc)
    return out


FLAVOURS = [
    ("instrument", "openai", False),
    ("instrument", "groq", True),
    ("guard", "openai", True),
    ("guard", "groq", False),
]


@pytest.mark.parametrize(("how", "sdk", "aio"), FLAVOURS)
def test_a_call_that_would_wait_past_max_wait_goes_to_the_fallback_model_and_else_fails_naming_both(
    serve: Serve, events: list[tg.events.Event], how: str, sdk: str, aio: bool
) -> None:
    em = serve_two(serve, 1_000)
    # Each model its own limiter of 1,000 tokens a minute: a second call of ~620 tokens
    # would wait ~14 s for the first model, past max_wait.
    ask = caller(how, sdk, aio, em, tpm=1_000, window=60.0, max_wait=1.0, fallback=[B])
    messages = [question(i) for i in range(3)]
    kept = copy.deepcopy(messages)
    calls = [{"messages": m, "model": A, "max_tokens": 600} for m in messages]
    first, second, third = run(ask, aio, calls)
    assert first.model == A
    assert second.model == B
    assert messages == kept  # the caller's requests are not changed
    # Neither model can take the third call within max_wait: nothing is sent, and the
    # last model's refusal names the models tried.
    assert isinstance(third, tg.RateLimitTimeout)
    assert f"tried {A}, {B}" in str(third)
    if how == "instrument":
        assert sent(em) == [(A, 200), (B, 200)]
    else:
        # A decorated function shows the guard no headers: it learns that the first
        # call spent the minute from the server's 429 (whose wait passes max_wait too).
        assert sent(em) == [(A, 200), (A, 429), (B, 200), (B, 429)]
    moved = named(events, "tokenguard.guard.fallback")
    assert [(e["from_model"], e["to_model"], e["reason"]) for e in moved] == [
        (A, B, "max_wait"),
        (A, B, "max_wait"),
    ]
    assert all(e["needed_wait_s"] > 1.0 for e in moved)
    done = [e for e in named(events, "tokenguard.guard.request") if "error.type" not in e]
    assert [(e["gen_ai.request.model"], e.get("tokenguard.fallback_from")) for e in done] == [
        (A, None),
        (B, A),
    ]
    assert done[1]["gen_ai.response.model"] == B
    assert not any("Question" in repr(e) for e in moved)  # no message content


@pytest.mark.parametrize(("how", "sdk", "aio"), FLAVOURS[:2])
def test_the_fallback_model_gets_the_call_refitted_to_its_own_smaller_context_window(
    serve: Serve, events: list[tg.events.Event], how: str, sdk: str, aio: bool
) -> None:
    em = serve_two(serve, 10_000)
    ask = caller(how, sdk, aio, em, tpm=10_000, window=60.0, max_wait=1.0, fallback=[B])
    # ~6,000 prompt tokens in 12 turns: the first model takes them whole; the second call
    # would wait for its minute, and the fallback's window is 4,096.
    history: list[dict[str, str]] = []
    for i in range(6):
        history += [question(i, 480)[0], {"role": "assistant", "content": "word " * 480}]
    history.append(question(99)[0])
    kept = copy.deepcopy(history)
    calls = [{"messages": history, "model": A, "max_tokens": 256}] * 2
    first, second = run(ask, aio, calls)
    assert (first.model, second.model) == (A, B)
    assert first.usage.prompt_tokens > 5_800
    assert second.usage.prompt_tokens + 256 <= SMALL
    assert history == kept
    done = named(events, "tokenguard.guard.request")
    assert [e["tokenguard.fit"] for e in done] == ["none", "truncate"]
    [fitted] = named(events, "tokenguard.fit.truncated")
    assert fitted["model"] == B
    assert sent(em) == [(A, 200), (B, 200)]


@pytest.mark.parametrize(
    "waits",
    [{"max_wait": 5.0}, {"max_wait": None}, {"retries": 0}],
    ids=["max_wait", "max_day_wait", "no_retries"],
)
@pytest.mark.parametrize(("how", "sdk", "aio"), [FLAVOURS[0], FLAVOURS[2]])
def test_a_spent_day_limit_sends_the_call_to_the_fallback_and_later_calls_straight_there(
    serve: Serve,
    events: list[tg.events.Event],
    how: str,
    sdk: str,
    aio: bool,
    waits: dict[str, Any],
) -> None:
    # The first model's day is 2,000 tokens (a "minute" of 1 s: a day of 24 min); the
    # guard is not told, and learns it from the server's 429 naming TPD, whose wait
    # (minutes) passes max_wait, or without one the limiter's max_day_wait (5 min); with
    # no retries, the SDK's 429 itself moves the call.
    em = serve_two(serve, 2_000, tpd=2_000, window=1.0)
    ask = caller(how, sdk, aio, em, tpm=2_000, window=1.0, fallback=[B], **waits)
    calls = [{"messages": question(i), "model": A, "max_tokens": 900} for i in range(4)]
    results = run(ask, aio, calls)
    assert [r.model for r in results] == [A, A, B, B]
    # The 429 taught the limiter the day limit: the fourth call never reached the first
    # model, it went straight to the fallback.
    assert sent(em) == [(A, 200), (A, 200), (A, 429), (B, 200), (B, 200)]
    moved = named(events, "tokenguard.guard.fallback")
    assert [(e["from_model"], e["to_model"], e["reason"], e["limit"]) for e in moved] == [
        (A, B, "day_limit", "tpd"),
        (A, B, "day_limit", "tpd"),
    ]
    done = named(events, "tokenguard.guard.request")
    assert [(e["gen_ai.request.model"], e.get("error.type")) for e in done] == [
        (A, None),
        (A, None),
        (A, "429"),
        (B, None),
        (B, None),
    ]


@pytest.mark.parametrize("aio", [False, True])
def test_a_stream_goes_to_the_fallback_before_its_first_chunk(
    serve: Serve, events: list[tg.events.Event], aio: bool
) -> None:
    em = serve_two(serve, 1_000)
    ask = caller(
        "instrument", "openai", aio, em, tpm=1_000, window=60.0, max_wait=1.0, fallback=[B]
    )
    call = {"messages": question(1), "model": A, "max_tokens": 600}

    async def stream_async() -> list[Any]:
        await ask(**call)
        return [chunk async for chunk in await ask(**call, stream=True)]

    if aio:
        chunks = asyncio.run(stream_async())
    else:
        ask(**call)
        chunks = list(ask(**call, stream=True))
    assert {c.model for c in chunks} == {B}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sent(em) == [(A, 200), (B, 200)]
    done = named(events, "tokenguard.guard.request")
    assert done[1]["gen_ai.request.model"] == B
    assert done[1]["tokenguard.stream"] is True
    assert done[1]["gen_ai.usage.input_tokens"] > 0


def test_a_stream_that_breaks_after_its_first_chunk_is_the_callers_and_falls_back_to_nothing(
    serve: Serve, events: list[tg.events.Event]
) -> None:
    em = serve_two(serve, 1_000)
    proxy = FaultProxy(em.base_url)
    try:
        client = tg.instrument(
            openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0),
            max_wait=1.0,
            fallback=[B],
        )
        proxy.inject(Fault(cut_after=400))  # a chunk or two, then the connection closes
        stream = client.chat.completions.create(
            model=A, messages=question(1), max_tokens=64, stream=True
        )
        with pytest.raises(Exception):  # noqa: PT011, B017 (whatever the transport raises)
            list(stream)
    finally:
        proxy.close()
    assert sent(em) == [(A, 200)]
    assert named(events, "tokenguard.guard.fallback") == []


def test_a_budget_in_money_charges_the_price_of_the_model_actually_used(
    serve: Serve, events: list[tg.events.Event]
) -> None:
    em = serve_two(serve, 1_000)
    tg.register_price(B, input="0.10", output="0.20")
    try:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0),
            tpm=1_000,
            window=60.0,
            max_wait=1.0,
            fallback=[B],
        )
        client.chat.completions.create(model=A, messages=question(1), max_tokens=600)
        with tg.budget(usd="0.01") as b:
            reply = client.chat.completions.create(model=A, messages=question(2), max_tokens=600)
        price_b, price_a = tg.price_of(B), tg.price_of(A)
    finally:
        reset_prices()
    assert reply.model == B
    assert price_a is not None
    assert price_b is not None
    usage = reply.usage
    assert usage is not None
    cost = price_b.cost(usage.prompt_tokens, usage.completion_tokens)
    assert b.spent_usd == cost != price_a.cost(usage.prompt_tokens, usage.completion_tokens)
    assert b.reserved_usd == 0
    done = named(events, "tokenguard.guard.request")[-1]
    assert Decimal(repr(done["tokenguard.cost_usd"])) == cost


def test_without_fallback_the_refusal_reaches_the_caller_as_before(serve: Serve) -> None:
    em = serve_two(serve, 1_000)
    client = tg.instrument(
        openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0),
        tpm=1_000,
        window=60.0,
        max_wait=1.0,
    )
    client.chat.completions.create(model=A, messages=question(1), max_tokens=600)
    with pytest.raises(tg.RateLimitTimeout) as caught:
        client.chat.completions.create(model=A, messages=question(2), max_tokens=600)
    assert "tried" not in str(caught.value)
    assert sent(em) == [(A, 200)]


def test_a_call_that_names_a_fallback_model_goes_on_to_the_others(
    serve: Serve, events: list[tg.events.Event]
) -> None:
    em = serve_two(serve, 1_000)
    client = tg.instrument(
        openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0),
        tpm=1_000,
        window=60.0,
        max_wait=1.0,
        fallback=[B, A],
    )
    client.chat.completions.create(model=A, messages=question(1), max_tokens=600)
    # Asked of A, whose minute is spent: served by B. Asked of B, now spent too: it goes
    # on to A (the other fallback model), also spent, and fails naming B then A.
    assert client.chat.completions.create(model=A, messages=question(2), max_tokens=600).model == B
    with pytest.raises(tg.RateLimitTimeout, match=f"tried {B}, {A}"):
        client.chat.completions.create(model=B, messages=question(3), max_tokens=600)
    assert sent(em) == [(A, 200), (B, 200)]


BAD: list[tuple[dict[str, Any], str]] = [
    ({"fallback": B}, "must be a list of model names, got str"),
    ({"fallback": [B, B]}, "names \\['acme/small-4k'\\] more than once"),
    ({"fallback": [B, 3]}, "non-empty model names \\(str\\), got 3"),
    ({"fallback": [""]}, "non-empty model names"),
    ({"fallback": [B, A], "model": A}, "names the guard's own model"),
    ({"fallback": [B], "limiter": tg.Limiter(tpm=1_000)}, "needs a limiter per model"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_bad_fallback_options_are_refused_when_the_guard_is_made(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(tg.ConfigurationError, match=message):
        tg.instrument(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x"), **options)
    with pytest.raises(tg.ConfigurationError, match=message):

        @tg.guard(**options)
        def ask(messages: Any, model: str = A) -> Any:
            return None


def test_a_decorated_function_that_cannot_take_a_model_cannot_fall_back() -> None:
    with pytest.raises(tg.ConfigurationError, match=r"no parameter 'model'.*fallback"):

        @tg.guard(model=A, fallback=[B])
        def ask(messages: Any) -> Any:
            return None


def day_limit_429(model: str) -> Fault:
    """A 429 whose body names the day's token limit of ``model`` as spent."""
    message = (
        f"Rate limit reached for model `{model}` on tokens per day (TPD): Limit 500000, "
        "Used 499950, Requested 120. Please try again in 7m12s."
    )
    body = {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}
    return Fault(status=429, body=body, headers={"retry-after": "432"})


def test_when_the_server_refuses_every_model_for_the_day_the_sdks_429_names_the_models_tried(
    serve: Serve, events: list[tg.events.Event]
) -> None:
    em = serve_two(serve, 1_000)
    proxy = FaultProxy(em.base_url)
    try:
        client = tg.instrument(
            openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0),
            retries=0,
            fallback=[B],
        )
        # (the unknown model's GET /models passes through between the two refusals)
        proxy.inject(day_limit_429(A), Fault(), day_limit_429(B))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=A, messages=question(1), max_tokens=64)
    finally:
        proxy.close()
    assert getattr(caught.value, "__notes__", None) == [
        f"tokenguard: no model could serve the call in time (tried {A}, {B})"
    ]
    assert proxy.statuses() == [429, 200, 429]
    assert sent(em) == []
    moved = named(events, "tokenguard.guard.fallback")
    assert [(e["from_model"], e["to_model"], e["reason"], e["limit"]) for e in moved] == [
        (A, B, "day_limit", "tpd")
    ]


def test_without_max_wait_a_day_limit_429_is_waited_for_no_longer_than_max_day_wait(
    serve: Serve, clock: FakeClock
) -> None:
    """Not fallback itself, but what it relies on: the server's 429 naming a spent day
    limit, with a wait of 7 minutes, is refused at once (as the limiter refuses a day
    limit's wait past its max_day_wait, 5 minutes), not slept through."""
    em = serve_two(serve, 1_000)
    proxy = FaultProxy(em.base_url)
    try:
        client = tg.instrument(
            openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0),
            clock=clock,
            sleep=clock.sleep,
        )
        proxy.inject(day_limit_429(A))
        start = clock()
        with pytest.raises(tg.RateLimitTimeout, match="max_day_wait=300") as caught:
            client.chat.completions.create(model=A, messages=question(1), max_tokens=64)
    finally:
        proxy.close()
    assert caught.value.limit_name == "tpd"
    assert clock() == start  # refused without sleeping
    assert proxy.statuses() == [429]


def test_a_stream_refused_by_the_server_for_the_day_is_streamed_by_the_fallback(
    serve: Serve, events: list[tg.events.Event]
) -> None:
    """The groq SDK this time: the server's 429 comes before any chunk, so the stream is
    asked of the next model (its discovery passing between)."""
    em = serve_two(serve, 1_000)
    proxy = FaultProxy(em.base_url)
    try:
        client = tg.instrument(sdk_client("groq", False, proxy.base_url), fallback=[B])
        proxy.inject(day_limit_429(A))
        stream = client.chat.completions.create(
            model=A, messages=question(1), max_tokens=64, stream=True
        )
        chunks = list(stream)
    finally:
        proxy.close()
    assert {c.model for c in chunks} == {B}
    assert proxy.statuses() == [429, 200, 200]
    assert sent(em) == [(B, 200)]
    [moved] = named(events, "tokenguard.guard.fallback")
    assert (moved["reason"], moved["limit"]) == ("day_limit", "tpd")
