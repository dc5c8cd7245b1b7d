"""Many threads, one limit: 8 threads call one decorated function; the guard queues
them in FIFO order so the server never has to refuse one.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator with
the rate "minute" shortened to 2 seconds.

    python examples/threads_sharing_limit.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from openai import OpenAI

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"


@contextmanager
def server() -> Iterator[tuple[OpenAI, float, Any]]:
    """A client, the rate "minute" in seconds, and the emulator (``None`` on Groq)."""
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield OpenAI(base_url="https://api.groq.com/openai/v1", api_key=key), 60.0, None
        return
    from tokenguard.emulator import running

    with running(model=MODEL, window=2.0) as em:
        yield OpenAI(base_url=em.base_url, api_key="emulator"), 2.0, em


def main() -> None:
    with server() as (client, window, em):

        @tg.guard(window=window)
        def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 64) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        questions = [
            [{"role": "user", "content": f"Give one fact about the year {1900 + i}."}]
            for i in range(40)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, questions))
        took = time.monotonic() - started
        used = sum(r.usage.total_tokens for r in replies)
        print(f"{len(replies)} answers from 8 threads in {took:.1f} s, {used} tokens used")
        if em is not None:
            refused = sum(1 for r in em.log if r.endpoint == "chat" and r.status == 429)
            print(f"server refusals (429): {refused}")


if __name__ == "__main__":
    main()
