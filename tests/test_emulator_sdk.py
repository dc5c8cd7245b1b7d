"""The real openai and groq SDKs against the emulator over HTTP: shapes, headers, streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
from emulator_support import HELLO, Serve, client_for
from fake_clock import FakeClock

from tokenguard.emulator import Emulator, ModelSpec

MODEL = "llama3-8b-8192"


@pytest.fixture
def em(serve: Serve, clock: FakeClock) -> Emulator:
    return serve(model=MODEL, clock=clock)


@pytest.fixture
def client(em: Emulator) -> Iterator[openai.OpenAI]:
    with client_for(em) as c:
        yield c


def test_urls(em: Emulator) -> None:
    assert em.root_url == f"http://127.0.0.1:{em.port}"
    assert em.base_url == em.root_url + "/openai/v1"


def test_completion_shape(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    data = reply.model_dump()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == MODEL
    assert data["system_fingerprint"].startswith("fp_")
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        11,
        16,
        27,
    )
    for key in ("queue_time", "prompt_time", "completion_time", "total_time"):
        assert isinstance(usage[key], float)
    assert data["x_groq"]["id"].startswith("req_")


def test_headers_on_success(em: Emulator, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    reply = raw.parse()
    h = raw.headers
    # No max_tokens: 11 prompt + the default 1024 reservation = 1035 taken from TPM.
    assert h["x-ratelimit-limit-requests"] == "14400"
    assert h["x-ratelimit-remaining-requests"] == "14399"
    assert h["x-ratelimit-reset-requests"] == "6s"
    assert h["x-ratelimit-limit-tokens"] == "6000"
    assert h["x-ratelimit-remaining-tokens"] == "4965"
    assert h["x-ratelimit-reset-tokens"] == "10.35s"
    assert h["x-request-id"] == reply.x_groq["id"]  # type: ignore[attr-defined]
    assert h["content-type"] == "application/json"
    record = em.log[-1]
    assert (record.status, record.prompt_tokens, record.requested_tokens) == (200, 11, 1035)
    assert record.completion_tokens == 16


def test_max_tokens_cuts_the_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    reply = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=16,
        temperature=0.2,
        top_p=0.9,
        n=1,
        seed=3,
    )
    assert reply.choices[0].finish_reason == "stop"


def test_latency_is_slept_with_the_injected_sleep(serve: Serve, clock: FakeClock) -> None:
    # No sleep given: the clock's own sleep is used, so no real time passes.
    em = serve(model=MODEL, latency=2.5, clock=clock)
    client = client_for(em)
    before = clock.now
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert clock.now == before + 2.5
    assert reply.usage is not None
    assert reply.usage.completion_time == 2.5  # type: ignore[attr-defined]


def test_models_endpoints(em: Emulator, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL
    assert model.model_dump()["context_window"] == 8192
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream(client: openai.OpenAI, include_usage: bool) -> None:
    options: Any = {"include_usage": True} if include_usage else None
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        max_tokens=7,
        stream_options=options,
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " hello world the quick brown fox jumps"
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.choices[0].finish_reason == "length"
    x_groq = final.model_dump()["x_groq"]
    assert x_groq["usage"]["prompt_tokens"] == 11
    assert x_groq["usage"]["completion_tokens"] == 7
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 18
    else:
        assert chunks[-1] is final


def test_stream_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        max_tokens=3,
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-ratelimit-remaining-tokens"] == str(6000 - 14)
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize("include_usage", [False, True])
async def test_async_openai(em: Emulator, include_usage: bool) -> None:
    async with openai.AsyncOpenAI(base_url=em.base_url, api_key="x", max_retries=0) as client:
        reply = await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == 11
        options: Any = {"include_usage": True} if include_usage else None
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            stream=True,
            stream_options=options,
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 16
    assert (chunks[-1].usage is not None) is include_usage


# One URL for both SDKs: the groq SDK appends /openai/v1 to what it is given, and the
# emulator takes the doubled prefix, so em.base_url serves it as the root does.
@pytest.mark.parametrize("url", ["root_url", "base_url"])
def test_groq_sdk(em: Emulator, url: str) -> None:
    with groq.Groq(base_url=getattr(em, url), api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        reply = raw.parse()
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == 11
        assert reply.x_groq is not None
        assert reply.x_groq.id == raw.headers["x-request-id"]
        assert raw.headers["x-ratelimit-limit-tokens"] == "6000"
        stream = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            stream=True,
            max_tokens=4,
            extra_body={"stream_options": {"include_usage": True}},
        )
        chunks = list(stream)
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert final.x_groq is not None
        assert final.x_groq.usage is not None
        assert final.x_groq.usage.completion_tokens == 4
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == 11
        assert [m.id for m in client.models.list().data] == [MODEL]
        assert client.models.retrieve(MODEL).id == MODEL


async def test_async_groq_sdk(em: Emulator) -> None:
    async with groq.AsyncGroq(base_url=em.root_url, api_key="x", max_retries=0) as client:
        reply = await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.usage is not None
        assert reply.usage.total_tokens == 27
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        chunks = [c async for c in stream]
    assert chunks[-1].x_groq is not None
    assert chunks[-1].x_groq.usage is not None


def test_multiple_models_have_their_own_buckets_and_templates(
    serve: Serve, clock: FakeClock
) -> None:
    models = [
        ModelSpec("small", context_window=8192, template="llama3", tpm=100, rpm=0, tpd=0, rpd=0),
        ModelSpec("big", context_window=131072, template="llama3.1", tpm=1000, rpm=0, tpd=0, rpd=0),
    ]
    em = serve(models=models, clock=clock)
    client = client_for(em)
    small = client.chat.completions.create(model="small", messages=HELLO, max_tokens=80)
    assert small.usage is not None
    assert small.usage.prompt_tokens == 11
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="small", messages=HELLO, max_tokens=80)
    raw = client.chat.completions.with_raw_response.create(
        model="big",
        messages=HELLO,
        max_tokens=64,
    )
    assert raw.parse().usage.prompt_tokens == 36  # type: ignore[union-attr]
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "900"
    assert sorted(m.id for m in client.models.list().data) == ["big", "small"]
    assert [(r.model, r.status) for r in em.log if r.endpoint == "chat"] == [
        ("small", 200),
        ("small", 429),
        ("big", 200),
    ]


def test_running_overrides_apply_to_the_chosen_model(serve: Serve) -> None:
    models = [ModelSpec("a", tpm=100), ModelSpec("b", tpm=200)]
    em = serve(model="b", tpm=999, context_window=4096, models=models)
    assert [(m.name, m.tpm, m.context_window) for m in em.models] == [
        ("a", 100, 8192),
        ("b", 999, 4096),
    ]
    em = serve(model="llama-3.3-70b-versatile", tpd=0)
    (spec,) = em.models
    assert (spec.tpm, spec.rpm, spec.tpd, spec.rpd) == (12_000, 30, 0, 1_000)
    assert spec.max_completion_tokens == 32_768


def test_emulator_start_stop_without_context_manager() -> None:
    em = Emulator()
    em.start()
    try:
        client = client_for(em)
        assert client.chat.completions.create(model=MODEL, messages=HELLO).usage is not None
    finally:
        em.stop()
        em.stop()
    client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0, timeout=2)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=HELLO)


def test_tool_requests_are_counted_with_the_tool_template(serve: Serve) -> None:
    from test_emulator_prompt import TOOL_MESSAGES, TOOLS

    from tokenguard.emulator import count_prompt_tokens

    em = serve(model="llama-3.1-8b-instant")
    client = client_for(em)
    messages: Any = TOOL_MESSAGES
    tools: Any = TOOLS
    reply = client.chat.completions.create(
        model="llama-3.1-8b-instant", messages=messages, tools=tools, max_tokens=10
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_prompt_tokens(TOOL_MESSAGES, TOOLS, "llama3.1")
    assert reply.usage.prompt_tokens == em.log[-1].prompt_tokens


def test_completion_is_cut_by_the_room_left_in_the_context(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, context_window=20, tpm=0, clock=clock)
    client = client_for(em)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 9  # 20 - 11 prompt tokens
    assert reply.choices[0].finish_reason == "length"


def test_log_records_stream_flag_and_clock_time(em: Emulator, clock: FakeClock) -> None:
    client = client_for(em)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    clock.advance(5)
    list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1, stream=True))
    first, second = em.log
    assert (first.t, first.stream, second.t, second.stream) == (1000.0, False, 1005.0, True)
    assert first.request_id is not None
    assert first.request_id.startswith("req_")
    assert first.admitted


def test_model_ids_with_slashes(serve: Serve) -> None:
    em = serve(model=["openai/gpt-oss-20b", "qwen/qwen3-32b"])
    client = client_for(em)
    assert client.models.retrieve("openai/gpt-oss-20b").id == "openai/gpt-oss-20b"
    reply = client.chat.completions.create(model="qwen/qwen3-32b", messages=HELLO)
    assert reply.model == "qwen/qwen3-32b"
