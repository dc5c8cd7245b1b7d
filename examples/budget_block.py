"""Cap what a block of code may spend: ``with tg.budget(tokens=...)``.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/budget_block.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from openai import OpenAI

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"


@contextmanager
def server() -> Iterator[OpenAI]:
    key = os.environ.get("GROQ_API_KEY")
    if key:
        yield OpenAI(base_url="https://api.groq.com/openai/v1", api_key=key)
        return
    from tokenguard.emulator import running

    with running(model=MODEL) as em:
        yield OpenAI(base_url=em.base_url, api_key="emulator")


def main() -> None:
    with server() as plain:
        client = tg.instrument(plain)
        asked = 0
        with tg.budget(tokens=1_200, name="daily digest") as b:
            try:
                for n in range(1, 100):
                    client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"One fact about the number {n}."}],
                        max_tokens=200,
                    )
                    asked += 1
                    print(f"asked {asked}: used {b.used} tokens, {b.remaining} remaining")
            except tg.BudgetExceeded as exc:
                print(f"stopped before sending: needed {exc.needed}, {exc.remaining} remaining")
        print(f"budget: {b.used} of {b.tokens} tokens in {b.requests_used} requests")


if __name__ == "__main__":
    main()
