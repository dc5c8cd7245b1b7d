"""The OpenAI Agents SDK: an instrumented ``AsyncOpenAI`` as the default client.

Needs: pip install openai-agents (or this project's `frameworks` extra). Groq serves
the Chat Completions API (not the Responses API), so the SDK is told to use it; tracing
is turned off as it would send traces to OpenAI. Runs against Groq when GROQ_API_KEY is
set, else the emulator.

    python examples/frameworks/openai_agents_recipe.py
"""

from __future__ import annotations

import asyncio

import openai
from _endpoint import MODEL, Endpoint, endpoint, summary
from agents import (
    Agent,
    ModelSettings,
    Runner,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)

import tokenguard as tg


def use_guarded_default_client(at: Endpoint) -> None:
    """Every agent without a model of its own now sends through the guard."""
    client = tg.instrument(
        openai.AsyncOpenAI(base_url=at.base_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("chat_completions")
    set_tracing_disabled(True)


def agent(max_tokens: int = 1_000) -> Agent[None]:
    return Agent(
        name="assistant",
        instructions="Be brief.",
        model=MODEL,
        model_settings=ModelSettings(max_tokens=max_tokens),
    )


async def hello_then_burst(assistant: Agent[None], n: int) -> list[str]:
    """One run, then ``n`` at once: the limiter holds what the server would refuse.
    (One event loop for all: the default client's connections belong to it.)"""
    first = await Runner.run(assistant, "Say hello in five words.")
    runs = await asyncio.gather(
        *(Runner.run(assistant, f"Question {i}: what is Groq?") for i in range(n))
    )
    return [str(r.final_output) for r in (first, *runs)]


def main() -> None:
    with endpoint() as at, summary("Agents SDK"):
        use_guarded_default_client(at)
        print(asyncio.run(hello_then_burst(agent(), 5))[0])


if __name__ == "__main__":
    main()
