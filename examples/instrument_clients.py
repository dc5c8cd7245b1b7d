"""Needs the 'groq' extra: pip install 'groq-tokenguard[groq]' (from a clone: '.[groq]').

Instrument an openai client and a groq client (sync and async): every
chat.completions.create goes through the guard, headers included.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/instrument_clients.py
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai

import tokenguard as tg

try:
    import groq
except ImportError:
    raise SystemExit(
        "this example needs the groq SDK, the 'groq' extra: "
        "pip install 'groq-tokenguard[groq]' (from a clone: pip install '.[groq]')"
    ) from None

MODEL = "llama-3.1-8b-instant"
HELLO: Any = [{"role": "user", "content": "Say hello in five words."}]


@contextmanager
def endpoints() -> Iterator[tuple[str, str, str]]:
    """(openai base URL, groq base URL, key)."""
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield "https://api.groq.com/openai/v1", "https://api.groq.com", key
        return
    from tokenguard.emulator import running

    with running(model=MODEL) as em:
        yield em.base_url, em.root_url, "emulator"


def report(event: tg.events.Event) -> None:
    if event.name == "tokenguard.guard.request":
        f = event.fields()
        print(
            f"{f['tokenguard.site']}: {f['gen_ai.usage.input_tokens']} in, "
            f"{f['gen_ai.usage.output_tokens']} out, server has "
            f"{f.get('tokenguard.server_remaining_tokens')} tokens left"
        )


async def use_async(openai_url: str, groq_url: str, key: str) -> None:
    a = tg.instrument(openai.AsyncOpenAI(base_url=openai_url, api_key=key))
    b = tg.instrument(groq.AsyncGroq(base_url=groq_url, api_key=key))
    await a.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    stream = await b.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=32, stream=True
    )
    async with stream:
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    print(f"streamed {len(text)} characters")


def main() -> None:
    tg.events.add_sink(report)
    with endpoints() as (openai_url, groq_url, key):
        client = tg.instrument(openai.OpenAI(base_url=openai_url, api_key=key))
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=32
        )
        usage = raw.parse().usage
        print(
            f"raw response: status {raw.status_code}, {usage.total_tokens if usage else 0} tokens"
        )
        gclient = tg.instrument(groq.Groq(base_url=groq_url, api_key=key))
        gclient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
        asyncio.run(use_async(openai_url, groq_url, key))
        tg.uninstrument(client)  # back to the plain client


if __name__ == "__main__":
    main()
