"""tg.instrument, tried as a new user would: the real openai and groq clients (sync and
async) against the emulator, with raw responses, streams and the server's headers."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from functools import partial
from typing import Any

import groq
import openai
import pytest

import tokenguard as tg
from tokenguard import is_instrumented
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"
LIMITS: dict[str, Any] = {"tpm": 100_000, "rpm": 1_000, "window": 1.0}


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=MODEL, **LIMITS) as server:
        yield server


def requests(events: list[tg.events.Event]) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == "tokenguard.guard.request"]


HELLO: Any = [{"role": "user", "content": "Hello"}]

CLIENTS = ["openai", "groq"]


def make(kind: str, em: Emulator, *, is_async: bool = False, **kw: Any) -> Any:
    if kind == "openai":
        cls: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(base_url=em.base_url, api_key="x", **kw)
    cls = groq.AsyncGroq if is_async else groq.Groq
    return cls(base_url=em.root_url, api_key="x", **kw)


@pytest.mark.parametrize("kind", CLIENTS)
def test_create_goes_through_the_guard_with_the_server_headers(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = make(kind, em)
    assert tg.instrument(client, **LIMITS) is client
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    assert reply.usage.prompt_tokens > 0  # the parsed completion, as without the guard
    [event] = requests(events)
    assert event["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert event["tokenguard.site"] == f"{type(client).__name__}.chat.completions.create"
    remaining = em.available("TPM")
    # The header of the response reached the event (and the limiter).
    assert abs(event["tokenguard.server_remaining_tokens"] - remaining) <= 100_000 * 0.2


@pytest.mark.parametrize("kind", CLIENTS)
def test_with_raw_response_is_guarded_and_keeps_its_shape(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make(kind, em), **LIMITS)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=16
    )
    assert "x-ratelimit-remaining-tokens" in raw.headers
    assert raw.parse().usage.completion_tokens > 0
    assert len(requests(events)) == 1


@pytest.mark.parametrize("kind", CLIENTS)
async def test_async_clients_are_guarded(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make(kind, em, is_async=True), **LIMITS)
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
            for _ in range(5)
        )
    )
    assert all(r.usage.prompt_tokens > 0 for r in replies)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=8
    )
    parsed = raw.parse()  # the openai SDK's raw parse is sync, the groq SDK's async
    if inspect.isawaitable(parsed):
        parsed = await parsed
    assert parsed.usage.total_tokens > 0
    assert len(requests(events)) == 6


def test_instrumenting_twice_is_harmless_and_uninstrument_undoes_it(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = make("openai", em)
    tg.instrument(client, **LIMITS)
    tg.instrument(client, **LIMITS)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert len(requests(events)) == 1
    assert is_instrumented(client)
    tg.uninstrument(client)
    tg.uninstrument(client)
    assert not is_instrumented(client)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert len(requests(events)) == 1
    # Everything else of the client passes through unchanged.
    assert client.models.list().data[0].id == MODEL


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_the_clients_copy_and_with_options_make_are_guarded_alike(
    kind: str, is_async: bool, em: Emulator, events: list[tg.events.Event]
) -> None:
    limiter = tg.Limiter(tpm=100_000, window=1.0)
    client = tg.instrument(make(kind, em, is_async=is_async), limiter=limiter)
    copies = [client.with_options(timeout=30), client.copy(max_retries=0).with_options()]
    for other in copies:
        assert is_instrumented(other)
        with tg.budget(tokens=10), pytest.raises(tg.BudgetExceeded):
            await _maybe(other.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8))
        reply = await _maybe(
            other.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        )
        assert reply.usage.prompt_tokens > 0
    assert len(em.log) == 2  # nothing sent past the budget
    assert [e["tokenguard.site"].split(".")[0] for e in requests(events)] == [
        type(client).__name__
    ] * 2
    tg.uninstrument(client)
    assert not is_instrumented(client.with_options(timeout=30))


async def _maybe(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("via", ["openai", "groq", "decorated"])
@pytest.mark.parametrize("cap", ["max_tokens", "max_completion_tokens"])
def test_a_cap_given_in_extra_body_is_the_one_fitted_and_sent(
    via: str, cap: str, events: list[tg.events.Event]
) -> None:
    # The SDKs merge extra_body over the body: its cap is what the server holds, so it
    # is the one the budget reserves, and the one lowered to fit it.
    long_essay: Any = [{"role": "user", "content": "Write a long essay."}]
    with running(model=MODEL, tpm=10**6, rpm=10**4, completion_tokens=2500) as server:
        if via == "decorated":
            client = make("openai", server)

            @tg.guard
            def ask(messages: Any, model: str, extra_body: Any = None) -> Any:
                return client.chat.completions.create(
                    model=model, messages=messages, extra_body=extra_body
                )

            create: Any = ask
        else:
            create = tg.instrument(make(via, server)).chat.completions.create
        with tg.budget(tokens=1200) as budget:
            reply = create(model=MODEL, messages=long_essay, extra_body={cap: 3000})
        [sent] = [r for r in server.log if r.endpoint == "chat"]
    [call] = requests(events)
    assert call["gen_ai.request.max_tokens"] == 1200 - call["gen_ai.usage.input_tokens"]
    assert sent.requested_tokens == 1200  # the lowered cap reached the server
    assert budget.used == reply.usage.total_tokens <= 1200


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_key_or_endpoint_set_after_instrumenting_is_the_one_used(
    kind: str, is_async: bool, events: list[tg.events.Event]
) -> None:
    with running(model=MODEL, **LIMITS) as first, running(model=MODEL, **LIMITS) as second:
        client = tg.instrument(make(kind, first, is_async=is_async), **LIMITS)
        raw = client.chat.completions.with_raw_response  # held across the change
        await _maybe(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8))
        client.base_url = second.base_url if kind == "openai" else second.root_url
        client.api_key = "rotated"
        await _maybe(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8))
        await _maybe(raw.create(model=MODEL, messages=HELLO, max_tokens=8))
        chats = [[r for r in em.log if r.endpoint == "chat"] for em in (first, second)]
    assert [len(c) for c in chats] == [1, 2]
    assert len(requests(events)) == 3  # each still guarded
    assert is_instrumented(client)


def test_a_key_set_after_another_layer_wrapped_create_keeps_the_layer(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, **LIMITS) as first, running(model=MODEL, **LIMITS) as second:
        client = tg.instrument(make("openai", first), **LIMITS)
        guarded, through = client.chat.completions.create, []

        def logged(**kwargs: Any) -> Any:  # as a tracing library patches create in place
            through.append(kwargs["model"])
            return guarded(**kwargs)

        client.chat.completions.create = logged
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        client.base_url = second.base_url
        client.api_key = "rotated"
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        chats = [[r for r in em.log if r.endpoint == "chat"] for em in (first, second)]
    assert [len(c) for c in chats] == [1, 1]
    assert through == [MODEL, MODEL]  # the layer kept, each call through it once
    assert len(requests(events)) == 2


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_structured_outputs_parse_is_guarded_as_create_is(
    is_async: bool, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make("openai", em, is_async=is_async), **LIMITS)
    with tg.budget(tokens=10), pytest.raises(tg.BudgetExceeded):
        await _maybe(client.chat.completions.parse(model=MODEL, messages=HELLO, max_tokens=64))
    reply = await _maybe(client.chat.completions.parse(model=MODEL, messages=HELLO, max_tokens=64))
    raw = await _maybe(
        client.chat.completions.with_raw_response.parse(model=MODEL, messages=HELLO, max_tokens=64)
    )
    assert type(reply).__name__.startswith("ParsedChatCompletion")
    assert reply.choices[0].message.parsed is None  # no response_format: nothing to parse
    assert raw.headers.get("x-ratelimit-remaining-tokens") is not None
    done = requests(events)
    assert [e["gen_ai.usage.input_tokens"] for e in done] == [reply.usage.prompt_tokens] * 2
    assert len([r for r in em.log if r.endpoint == "chat"]) == 2  # nothing past the budget


@pytest.mark.parametrize("via", ["instrumented", "decorated"])
def test_a_parse_response_format_is_counted_as_the_schema_it_sends(
    via: str, events: list[tg.events.Event]
) -> None:
    from openai.lib._parsing._completions import type_to_response_format_param
    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        population: int

    gpt_oss = "openai/gpt-oss-20b"  # a model whose prompt the response format changes
    sent = type_to_response_format_param(Answer)
    with running(model=gpt_oss, **LIMITS) as server:
        client = make("openai", server)
        if via == "decorated":

            @tg.guard(base_url=server.base_url, **LIMITS)
            def ask(messages: Any, model: str, response_format: Any, max_tokens: int = 64) -> Any:
                return client.chat.completions.parse(
                    model=model,
                    messages=messages,
                    max_tokens=max_tokens,
                    response_format=response_format,
                )

            parse: Any = ask
        else:
            tg.instrument(client, **LIMITS)
            parse = partial(client.chat.completions.parse, max_tokens=64)
        with pytest.raises(Exception):  # noqa: B017, PT011 (the emulator's text is not JSON)
            parse(model=gpt_oss, messages=HELLO, response_format=Answer)
        [billed] = [r.prompt_tokens for r in server.log if r.endpoint == "chat"]
    [call] = requests(events)
    expected = tg.count_request(HELLO, gpt_oss, max_tokens=64, response_format=sent)
    assert call["tokenguard.estimated_tokens"] == expected.total
    assert expected.prompt_tokens >= billed  # counted as sent, never below the bill


def test_one_client_instrumented_leaves_others_alone(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    tg.instrument(make("openai", em), **LIMITS)
    make("openai", em).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert requests(events) == []


def test_a_client_that_is_not_one_is_refused() -> None:
    with pytest.raises(tg.ConfigurationError, match="openai or groq client"):
        tg.instrument(object())


def test_bad_bodies_get_a_clear_error_with_nothing_sent(em: Emulator) -> None:
    client = tg.instrument(make("openai", em), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        with pytest.raises(tg.InvalidMessages, match="messages must be a list"):
            client.chat.completions.create(model=MODEL, messages="Hello", max_tokens=8)
        with pytest.raises(tg.InvalidRequest, match="max_tokens") as bad:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=-1)
        assert bad.value.field == "max_tokens"
        assert not isinstance(bad.value, tg.InvalidMessages)
        with pytest.raises(tg.InvalidRequest, match="extra_body must be a dict") as bad:
            client.chat.completions.create(model=MODEL, messages=HELLO, extra_body=[1])
        assert bad.value.field == "extra_body"
        with pytest.raises(tg.ConfigurationError, match="no model"):
            client.chat.completions.create(messages=HELLO, max_tokens=8)
    assert [r for r in em.log if r.endpoint == "chat"] == []
    assert (b.used, b.reserved) == (0, 0)


def test_calls_share_one_default_limiter_per_base_url_and_model(em: Emulator) -> None:
    from tokenguard._guard._instrument import _account
    from tokenguard._guard._options import make_options
    from tokenguard._guard._registry import limiter_for, normalize_base_url

    a = tg.instrument(make("openai", em))
    b = tg.instrument(make("groq", em))
    a.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    b.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert _account(a) == _account(b)  # the same key: one account
    opts = make_options()
    shared = limiter_for(opts, normalize_base_url(em.base_url), MODEL, _account(a))
    assert shared is not None
    # The server's TPM, taken from the first answer's headers (the table's was the start).
    assert shared.limits.tpm == LIMITS["tpm"]
    assert limiter_for(opts, normalize_base_url(em.base_url + "/"), MODEL, _account(b)) is shared


def test_the_summarizer_of_an_instrumented_client_is_itself_guarded(
    events: list[tg.events.Event],
) -> None:
    small = "llama3-8b-8192"
    with running(model=small, tpm=100_000, rpm=1_000, window=1.0) as em:
        client = tg.instrument(
            make("openai", em), on_overflow="summarize", tpm=100_000, rpm=1_000, window=1.0
        )
        history: Any = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "fact " * 400}
            for i in range(40)
        ]
        history.append({"role": "user", "content": "So?"})
        reply = client.chat.completions.create(model=small, messages=history, max_tokens=64)
    assert reply.usage.prompt_tokens < 8192
    done = requests(events)
    # The summary call(s) first, each through the guard, then the call itself.
    assert len(done) >= 2
    assert done[-1]["tokenguard.fit"] == "summarize"
    assert all(e["tokenguard.fit"] == "none" for e in done[:-1])
