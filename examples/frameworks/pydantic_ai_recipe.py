"""pydantic-ai: a Groq model and an OpenAI-compatible model on instrumented clients.

Needs: pip install 'pydantic-ai-slim[groq,openai]' (or this project's `frameworks` extra).
pydantic-ai's providers take the async SDK client they send with: give them an
instrumented one. Leave ``max_retries`` out of the model settings (pydantic-ai would
send through a copy of the client, which is not instrumented); the guard retries 429s.
Runs against Groq when GROQ_API_KEY is set, else the emulator.

    python examples/frameworks/pydantic_ai_recipe.py
"""

from __future__ import annotations

import asyncio

import groq
import openai
from _endpoint import MODEL, Endpoint, endpoint, summary
from pydantic_ai import Agent
from pydantic_ai.models.groq import GroqModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.groq import GroqProvider
from pydantic_ai.providers.openai import OpenAIProvider

import tokenguard as tg


def groq_agent(at: Endpoint, max_tokens: int = 1_000) -> Agent[None, str]:
    client = tg.instrument(
        groq.AsyncGroq(base_url=at.root_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    model = GroqModel(MODEL, provider=GroqProvider(groq_client=client))
    return Agent(model, instructions="Be brief.", model_settings={"max_tokens": max_tokens})


def openai_agent(at: Endpoint, max_tokens: int = 1_000) -> Agent[None, str]:
    client = tg.instrument(
        openai.AsyncOpenAI(base_url=at.base_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    return Agent(model, instructions="Be brief.", model_settings={"max_tokens": max_tokens})


async def hello_then_burst(agent: Agent[None, str], n: int) -> list[str]:
    """One run, then ``n`` at once: the limiter holds what the server would refuse.
    (One event loop for all: an async client's connections belong to the loop that
    opened them, so mix no ``run_sync`` with ``asyncio.run`` on one client.)"""
    first = await agent.run("Say hello in five words.")
    runs = await asyncio.gather(*(agent.run(f"Question {i}: what is Groq?") for i in range(n)))
    return [first.output, *(r.output for r in runs)]


def main() -> None:
    with endpoint() as at:
        for name, agent in (("GroqModel", groq_agent(at)), ("OpenAIChatModel", openai_agent(at))):
            with summary(name):
                print(asyncio.run(hello_then_burst(agent, 5))[0])


if __name__ == "__main__":
    main()
