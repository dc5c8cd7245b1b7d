"""A long conversation that never outgrows its window: ``tg.Conversation`` summarizes
the oldest turns, and the summary requests go through the same guarded client (counted,
rate-limited and logged like every other call).

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/summarizing_conversation.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from openai import OpenAI

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"


@contextmanager
def server() -> Iterator[tuple[OpenAI, float]]:
    """A client and the length of the rate "minute" (shortened on the emulator)."""
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield OpenAI(base_url="https://api.groq.com/openai/v1", api_key=key), 60.0
        return
    from tokenguard.emulator import running

    with running(model=MODEL, completion_tokens=120, window=2.0) as em:
        yield OpenAI(base_url=em.base_url, api_key="emulator"), 2.0


def main() -> None:
    calls: list[str] = []
    tg.events.add_sink(
        lambda e: (
            calls.append(str(e.fields()["tokenguard.fit"]))
            if e.name == "tokenguard.guard.request"
            else None
        )
    )
    with server() as (plain, window):
        client = tg.instrument(plain, max_wait=300, window=window)
        conv = tg.Conversation(
            system="You are a patient tutor. Answer in two sentences.",
            model=MODEL,
            max_prompt_tokens=1_500,  # a small ceiling so the summarizing shows quickly
            on_overflow="summarize",
            summarizer=tg.ClientSummarizer(client),
        )
        for turn in range(12):
            conv.add_user(f"Lesson {turn}: explain topic number {turn} of linear algebra. " * 6)
            reply = client.chat.completions.create(
                model=MODEL, messages=conv.messages, max_tokens=120
            )
            conv.add_assistant(reply.choices[0].message.content or "")
            print(
                f"turn {turn:2d}: {len(conv.history):2d} messages in history, "
                f"{len(conv.messages):2d} sent, {conv.tokens:4d} tokens, "
                f"{conv.summarized:2d} summarized, {conv.summary_calls} summary calls"
            )
        print(f"guarded calls: {len(calls)} (chat turns and summaries together)")


if __name__ == "__main__":
    main()
