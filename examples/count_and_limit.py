"""Count exactly before sending and let the limiter hold requests: a batch of questions.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator with the
rate "minute" shortened to 3 seconds so the waiting is visible.

    python examples/count_and_limit.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from openai import OpenAI

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"
QUESTIONS = [f"In one sentence, what is prime number {n} known for?" for n in (2, 3, 5, 7, 11)]


@contextmanager
def server() -> Iterator[tuple[OpenAI, float]]:
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield OpenAI(base_url="https://api.groq.com/openai/v1", api_key=key), 60.0
        return
    from tokenguard.emulator import running

    with running(model=MODEL, tpm=6000, rpm=30, window=3.0) as em:
        yield OpenAI(base_url=em.base_url, api_key="emulator", max_retries=0), 3.0


def main() -> None:
    with server() as (client, window):
        limiter = tg.Limiter(tpm=6000, rpm=30, window=window)
        for question in QUESTIONS:
            messages = [{"role": "user", "content": question}]
            need = tg.count_request(messages, model=MODEL, max_tokens=2000)
            reservation = limiter.acquire(need.total)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=2000,
                )
            except BaseException:
                reservation.cancel()
                raise
            usage = raw.parse().usage
            assert usage is not None
            reservation.commit(usage.total_tokens, headers=raw.headers)
            print(
                f"counted {need.prompt_tokens} / server {usage.prompt_tokens} prompt tokens, "
                f"held {reservation.waited:.2f} s"
            )


if __name__ == "__main__":
    main()
