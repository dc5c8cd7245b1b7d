"""Needs the 'groq' extra: pip install 'groq-tokenguard[groq]' (from a clone: '.[groq]').

Stream with the ``groq`` SDK and settle the reservation from ``x_groq.usage``.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/stream_with_groq_sdk.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tokenguard as tg

try:
    from groq import Groq
except ImportError:
    raise SystemExit(
        "this example needs the groq SDK, the 'groq' extra: "
        "pip install 'groq-tokenguard[groq]' (from a clone: pip install '.[groq]')"
    ) from None

MODEL = "llama-3.1-8b-instant"


@contextmanager
def client() -> Iterator[Groq]:
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield Groq(api_key=key)
        return
    from tokenguard.emulator import running

    with running(model=MODEL, completion_tokens=24) as em:
        # The groq SDK takes the server root; it adds /openai/v1 itself.
        yield Groq(base_url=em.root_url, api_key="emulator", max_retries=0)


def main() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You answer in one short paragraph."},
        {"role": "user", "content": "Why do rate limits use sliding windows?"},
    ]
    limiter = tg.Limiter(tpm=6000, rpm=30)
    need = tg.count_request(messages, model=MODEL, max_tokens=200)
    reservation = limiter.acquire(need.total)
    with client() as groq:
        try:
            stream = groq.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=200, stream=True
            )
        except BaseException:
            reservation.cancel()
            raise
        text, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
            x_groq = getattr(chunk, "x_groq", None)
            if x_groq is not None and getattr(x_groq, "usage", None) is not None:
                usage = x_groq.usage
    # Streams report usage on the final chunk; without it keep the estimate charged.
    reservation.commit(usage.total_tokens if usage else need.total)
    print("".join(text).strip())
    if usage:
        print(f"counted {need.prompt_tokens} / server {usage.prompt_tokens} prompt tokens")


if __name__ == "__main__":
    main()
