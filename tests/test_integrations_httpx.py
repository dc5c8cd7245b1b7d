"""tokenguard.integrations.httpx: any client built on httpx (the groq SDK) or httpx2 (the
openai SDK) guarded by its transport, against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import groq
import httpx
import httpx2
import openai
import pytest
from framework_support import MODEL, check_guarded, tight_endpoint

import tokenguard as tg
from tokenguard.integrations.httpx import AsyncGuardTransport, GuardTransport

HELLO: Any = [{"role": "user", "content": "Hello"}]


def test_an_openai_client_on_httpx2_is_guarded_streams_included(
    events: list[tg.events.Event],
) -> None:
    # A stream's headers reach the limiter as a plain response's do: it learns from both.
    with tight_endpoint() as (at, em):
        http = httpx2.Client(transport=GuardTransport(limiter=at.limiter))
        client = openai.OpenAI(base_url=at.base_url, api_key="x", max_retries=0, http_client=http)
        texts = []
        for _ in range(3):
            reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1_000)
            texts.append(reply.choices[0].message.content)
            stream = client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=1_000, stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert streamed == texts[-1]  # passed through byte for byte
        seen = check_guarded(events, em, 6)
        assert [f["tokenguard.stream"] for f in seen] == [False, True] * 3
        assert all(isinstance(f.get("tokenguard.server_remaining_tokens"), int) for f in seen)
        assert client.models.list().data  # not a chat request: passed through unguarded
        assert len(seen) == len([e for e in events if e.name == "tokenguard.guard.request"])


def test_an_async_groq_client_on_httpx_is_guarded_in_a_burst(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):

        async def burst() -> list[Any]:
            http = httpx.AsyncClient(transport=AsyncGuardTransport(limiter=at.limiter))
            client = groq.AsyncGroq(
                base_url=at.root_url, api_key="x", max_retries=0, http_client=http
            )
            return await asyncio.gather(
                *(
                    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1_000)
                    for _ in range(5)
                )
            )

        replies = asyncio.run(burst())
        assert all(r.usage.prompt_tokens for r in replies)
        check_guarded(events, em, 5)


def test_a_conversation_too_long_is_fitted_before_it_is_sent(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):
        http = httpx.Client(transport=GuardTransport(limiter=at.limiter))
        client = groq.Groq(base_url=at.root_url, api_key="x", max_retries=0, http_client=http)
        history: Any = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 300}
            for i in range(21)
        ]
        reply = client.chat.completions.create(model=MODEL, messages=history, max_tokens=500)
        [record] = em.log
        assert record.status == 200
        [event] = [e.fields() for e in events if e.name == "tokenguard.guard.request"]
        assert event["tokenguard.fit"] == "truncate"
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == record.prompt_tokens <= 3_000 - 500


def test_a_refusal_the_guard_cannot_absorb_reaches_the_caller_as_the_servers(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):
        http = httpx.Client(transport=GuardTransport(limiter=at.limiter))
        client = groq.Groq(base_url=at.root_url, api_key="x", max_retries=0, http_client=http)
        with pytest.raises(groq.NotFoundError) as refused:
            client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=10)
        assert refused.value.status_code == 404
        assert [r.status for r in em.log] == [404]
