"""Guarded streams (sync and async, plain, raw and context-manager forms) and many
callers sharing one limit, through the real SDKs against the emulator."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import groq
import openai
import pytest
from emulator_support import client_for
from hypothesis import given
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard._guard._streams import _finishes, _SseTap, _Tally
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"
LIMITS: dict[str, Any] = {"tpm": 100_000, "rpm": 1_000, "window": 1.0}
HELLO: Any = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=MODEL, completion_tokens=12, **LIMITS) as server:
        yield server


def requests(events: list[tg.events.Event]) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == "tokenguard.guard.request"]


def test_a_stream_yields_what_it_did_and_settles_at_the_final_usage(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    bare = openai.OpenAI(base_url=em.base_url, api_key="x")
    expected = [
        c.model_dump()
        for c in bare.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
    ]
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=64, stream=True)
        )
    assert len(chunks) == len(expected)
    assert [c.choices[0].delta.content if c.choices else None for c in chunks] == [
        c["choices"][0]["delta"]["content"] if c["choices"] else None for c in expected
    ]
    usage = tg._adapters.usage_of(chunks[-1])
    assert usage is not None
    assert b.used == usage.total_tokens
    [event] = requests(events)
    assert event["tokenguard.stream"] is True
    assert event["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert "tokenguard.stream_closed_early" not in event


def test_a_stream_closed_early_is_charged_at_its_reservation(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        with client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        ) as stream:
            next(iter(stream))
        [event] = requests(events)
        assert b.used == event["tokenguard.estimated_tokens"]
        assert b.reserved == 0
    assert event["tokenguard.stream_closed_early"] is True
    assert "gen_ai.usage.input_tokens" not in event


def test_an_abandoned_stream_gives_the_budget_its_estimate(em: Emulator) -> None:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        stream = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
        next(iter(stream))
        del stream
        gc.collect()
        assert b.reserved == 0
        assert b.used > 64


def test_a_raw_stream_parses_to_the_guarded_stream(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(groq.Groq(base_url=em.root_url, api_key="x"), **LIMITS)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=64, stream=True
    )
    assert "x-ratelimit-remaining-tokens" in raw.headers
    list(raw.parse())
    [event] = requests(events)
    assert event["gen_ai.usage.input_tokens"] > 0


@pytest.mark.parametrize("kind", ["openai", "groq"])
async def test_async_streams_settle_at_the_end_and_when_closed(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client: Any = (
        openai.AsyncOpenAI(base_url=em.base_url, api_key="x")
        if kind == "openai"
        else groq.AsyncGroq(base_url=em.root_url, api_key="x")
    )
    tg.instrument(client, **LIMITS)
    async with tg.budget(tokens=10_000) as b:
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
        n = 0
        async for _ in stream:
            n += 1
        full = b.used
        async with await client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        ) as early:
            async for _ in early:
                break
    assert n > 2
    first, second = requests(events)
    assert full == first["gen_ai.usage.input_tokens"] + first["gen_ai.usage.output_tokens"]
    assert b.used == full + second["tokenguard.estimated_tokens"]
    assert second["tokenguard.stream_closed_early"] is True


def test_a_decorated_function_returning_a_stream(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard(**LIMITS)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 32, stream: bool = True) -> Any:
        return client.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens, stream=stream
        )

    text = "".join(c.choices[0].delta.content or "" for c in ask(HELLO) if c.choices)
    assert text
    [event] = requests(events)
    assert event["gen_ai.usage.output_tokens"] == 12


# -- many callers, one limit ---------------------------------------------------------------


def test_eight_threads_on_one_limit_cause_no_429_at_the_server(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, tpm=2_000, rpm=1_000, window=1.0, completion_tokens=16) as em:
        client = client_for(em)

        @tg.guard(tpm=2_000, rpm=1_000, window=1.0)
        def ask(messages: Any, model: str = MODEL, max_tokens: int = 16) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        questions = [
            [{"role": "user", "content": f"Question {i}: " + "why " * 40}] for i in range(48)
        ]
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, questions))
        statuses = [r.status for r in em.log if r.endpoint == "chat"]
    assert len(replies) == 48
    assert statuses == [200] * 48
    assert len(requests(events)) == 48


async def test_many_tasks_through_one_async_client_cause_no_429(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, tpm=2_000, rpm=1_000, window=1.0, completion_tokens=16) as em:
        client = tg.instrument(
            openai.AsyncOpenAI(base_url=em.base_url, api_key="x"), tpm=2_000, window=1.0
        )
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Q{i}: " + "why " * 40}],
                    max_tokens=16,
                )
                for i in range(32)
            )
        )
        statuses = [r.status for r in em.log if r.endpoint == "chat"]
    assert len(replies) == 32
    assert statuses == [200] * 32


# -- with_streaming_response read as raw SSE ------------------------------------------------


def sse_chunks(text: str) -> list[Any]:
    """The chunks of an SSE body, without what changes from one request to the next."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data:") and line != "data: [DONE]":
            chunk = json.loads(line[5:])
            for name in ("id", "created", "x_groq"):
                chunk.pop(name, None)
            out.append(chunk)
    return out


def final_usage(text: str) -> dict[str, Any]:
    lines = [json.loads(x[5:]) for x in text.splitlines() if x.startswith("data: {")]
    return dict(lines[-1]["x_groq"]["usage"])


def read_raw(raw: Any, how: str) -> str:
    if how == "iter_lines":
        return "\n".join(raw.iter_lines())
    if how == "iter_text":
        return "".join(raw.iter_text(7))  # cut anywhere, lines and characters too
    if how == "iter_bytes":
        return b"".join(raw.iter_bytes(5)).decode()
    if how == "text":
        return str(raw.text())
    return str(raw.read().decode())


@pytest.mark.parametrize("how", ["iter_lines", "iter_text", "iter_bytes", "read", "text"])
def test_a_streaming_response_read_as_raw_sse_settles_at_its_final_usage(
    em: Emulator, events: list[tg.events.Event], how: str
) -> None:
    body: Any = {"model": MODEL, "messages": HELLO, "max_tokens": 64, "stream": True}
    bare = openai.OpenAI(base_url=em.base_url, api_key="x")
    with bare.chat.completions.with_streaming_response.create(**body) as raw:
        expected = read_raw(raw, how)
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        with client.chat.completions.with_streaming_response.create(**body) as raw:
            assert "x-ratelimit-remaining-tokens" in raw.headers
            got = read_raw(raw, how)
        # What the caller reads is what the server sent.
        assert sse_chunks(got) == sse_chunks(expected)
        usage = final_usage(got)
        assert (b.used, b.reserved) == (usage["total_tokens"], 0)
    [event] = requests(events)
    assert event["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert event["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 12
    assert event["gen_ai.response.model"] == MODEL
    assert "tokenguard.stream_closed_early" not in event


def test_a_streaming_response_with_include_usage_settles_at_the_usage_chunk(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(groq.Groq(base_url=em.root_url, api_key="x"), **LIMITS)
    with (
        tg.budget(tokens=10_000) as b,
        client.chat.completions.with_streaming_response.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=64,
            stream=True,
            extra_body={"stream_options": {"include_usage": True}},
        ) as raw,
    ):
        lines = list(raw.iter_lines())
    last = json.loads(next(x for x in reversed(lines) if x.startswith("data: {"))[5:])
    assert last["choices"] == []
    assert b.used == last["usage"]["total_tokens"]
    [event] = requests(events)
    assert event["gen_ai.usage.output_tokens"] == last["usage"]["completion_tokens"]


def test_a_streaming_response_left_early_is_charged_at_its_reservation(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        ) as raw:
            for _line in raw.iter_lines():
                break
        [event] = requests(events)
        assert (b.used, b.reserved) == (event["tokenguard.estimated_tokens"], 0)
    assert event["tokenguard.stream_closed_early"] is True
    assert "gen_ai.usage.input_tokens" not in event


def test_a_stream_left_after_its_usage_chunk_is_charged_its_usage(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with (
        tg.budget(tokens=10_000) as b,
        client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        ) as raw,
    ):
        for line in raw.iter_lines():
            if '"usage"' in line:
                usage = json.loads(line[5:])["x_groq"]["usage"]
                break  # the caller has what it wanted; [DONE] is never read
    assert (b.used, b.reserved) == (usage["total_tokens"], 0)
    [event] = requests(events)
    assert event["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert "tokenguard.stream_closed_early" not in event


@pytest.mark.parametrize("how", ["iter_lines", "iter_bytes", "read", "early"])
async def test_an_async_streaming_response_read_as_raw_sse_settles(
    em: Emulator, events: list[tg.events.Event], how: str
) -> None:
    client: Any = tg.instrument(groq.AsyncGroq(base_url=em.root_url, api_key="x"), **LIMITS)
    async with tg.budget(tokens=10_000) as b:
        async with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        ) as raw:
            if how == "iter_lines":
                text = "\n".join([line async for line in raw.iter_lines()])
            elif how == "iter_bytes":
                text = b"".join([piece async for piece in raw.iter_bytes(5)]).decode()
            elif how == "read":
                text = (await raw.read()).decode()
            else:
                async for _line in raw.iter_lines():
                    break
        [event] = requests(events)
        if how == "early":
            assert b.used == event["tokenguard.estimated_tokens"]
            assert event["tokenguard.stream_closed_early"] is True
        else:
            usage = final_usage(text)
            assert b.used == usage["total_tokens"]
            assert event["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        assert b.reserved == 0
    await client.close()


@given(
    pieces=st.lists(st.text(max_size=12), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=60),
    crlf=st.booleans(),
)
def test_the_usage_is_read_from_sse_bytes_cut_anywhere(
    pieces: list[str], cuts: list[int], crlf: bool
) -> None:
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": len(pieces),
        "total_tokens": 11 + len(pieces),
    }
    chunks: list[Any] = [{"id": "c1", "model": MODEL, "choices": [{"delta": {"content": ""}}]}]
    chunks += [{"id": "c1", "model": MODEL, "choices": [{"delta": {"content": p}}]} for p in pieces]
    chunks.append({"id": "c1", "model": MODEL, "choices": [], "x_groq": {"usage": usage}})
    end = "\r\n" if crlf else "\n"
    text = "".join(f"data: {json.dumps(c, ensure_ascii=False)}{end}{end}" for c in chunks)
    data = (text + "data: [DONE]").encode()  # the last line without its end
    tally = _Tally(cast(Any, SimpleNamespace(estimate=1_000)))  # reads only the estimate
    tap = _SseTap(tally)
    at = 0
    for n in cuts * (len(data) // sum(cuts) + 1):
        tap.feed(data[at : at + n])
        at += n
        if at >= len(data):
            break
    tap.end()
    assert tally.usage is not None
    assert (tally.usage.prompt_tokens, tally.usage.completion_tokens) == (11, len(pieces))
    assert (tally.model, tally.response_id) == (MODEL, "c1")


@pytest.mark.parametrize(
    ("chunk", "ends"),
    [
        ({"choices": [{"finish_reason": "stop"}]}, True),
        ({"choices": [{"finish_reason": None}, {"finish_reason": "length"}]}, True),
        ({"choices": [{"finish_reason": None}]}, False),
        ({"choices": []}, False),
        # What a broken or hostile server may send: never an error in the caller's loop.
        ({"choices": [1, "x", None]}, False),
        ({"choices": 5}, False),
        ({"choices": {"finish_reason": "stop"}}, False),
        ("data", False),
    ],
)
def test_a_chunk_ends_a_choice_only_with_a_finish_reason(chunk: Any, ends: bool) -> None:
    assert _finishes(chunk) is ends


def test_a_raw_stream_dropped_after_its_usage_gives_the_budget_that_usage(em: Emulator) -> None:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **LIMITS)
    with tg.budget(tokens=10_000) as b:
        manager = client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
        raw = manager.__enter__()  # never left: the caller drops the response
        lines = raw.iter_lines()
        for line in lines:
            if '"usage"' in line:
                usage = json.loads(line[5:])["x_groq"]["usage"]
                break
        del manager, raw, lines
        gc.collect()
        assert (b.used, b.reserved) == (usage["total_tokens"], 0)
