"""LangChain: ChatGroq and ChatOpenAI on instrumented clients.

Needs: pip install langchain-groq langchain-openai (or this project's `frameworks` extra).
Both chat models take the SDK resource they send with (``client=``/``async_client=``):
give them an instrumented client's ``chat.completions`` and every call, sync or async,
goes through the guard. Runs against Groq when GROQ_API_KEY is set, else the emulator.

    python examples/frameworks/langchain_recipe.py
"""

from __future__ import annotations

import asyncio

import groq
import openai
from _endpoint import MODEL, Endpoint, endpoint, summary
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

import tokenguard as tg


def chat_groq(at: Endpoint, max_tokens: int = 1_000) -> ChatGroq:
    # max_retries=0: the guard waits out 429s as the server says, the SDK would not.
    sync = tg.instrument(
        groq.Groq(base_url=at.root_url, api_key=at.api_key, max_retries=0), limiter=at.limiter
    )
    asynchronous = tg.instrument(
        groq.AsyncGroq(base_url=at.root_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    return ChatGroq(
        model=MODEL,
        max_tokens=max_tokens,
        client=sync.chat.completions,
        async_client=asynchronous.chat.completions,
    )


def chat_openai(at: Endpoint, max_tokens: int = 1_000) -> ChatOpenAI:
    sync = tg.instrument(
        openai.OpenAI(base_url=at.base_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    asynchronous = tg.instrument(
        openai.AsyncOpenAI(base_url=at.base_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    # root_client too: structured output (response_format) goes through it.
    return ChatOpenAI(
        model=MODEL,
        max_completion_tokens=max_tokens,
        client=sync.chat.completions,
        async_client=asynchronous.chat.completions,
        root_client=sync,
        root_async_client=asynchronous,
    )


async def burst(llm: ChatGroq | ChatOpenAI, n: int) -> list[str]:
    """``n`` questions at once: the limiter holds what the server would refuse."""
    replies = await asyncio.gather(*(llm.ainvoke(f"Question {i}: what is Groq?") for i in range(n)))
    return [str(r.content) for r in replies]


def main() -> None:
    with endpoint() as at:
        for name, llm in (("ChatGroq", chat_groq(at)), ("ChatOpenAI", chat_openai(at))):
            with summary(name):
                print(llm.invoke("Say hello in five words.").content)
                asyncio.run(burst(llm, 5))


if __name__ == "__main__":
    main()
