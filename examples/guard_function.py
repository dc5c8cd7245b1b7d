"""Decorate a function you already have: every call is counted, fitted, rate-limited,
retried and logged, and the function itself does not change.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/guard_function.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
    seen: list[tg.events.Event] = []
    tg.events.add_sink(seen.append)
    with server() as client:
        # The function as it was, plus one line. No max_tokens: the guard reserves its
        # documented default (1,024) and reconciles to the real usage afterwards.
        @tg.guard(max_wait=120)
        def ask(messages: list[Any], model: str = MODEL, **kwargs: Any) -> Any:
            return client.chat.completions.create(messages=messages, model=model, **kwargs)

        history: list[Any] = [{"role": "system", "content": "Answer in one sentence."}]
        for question in ("What is a token?", "And a context window?", "And a rate limit?"):
            history.append({"role": "user", "content": question})
            reply = ask(history)
            history.append({"role": "assistant", "content": reply.choices[0].message.content})
        for event in seen:
            if event.name == "tokenguard.guard.request":
                f = event.fields()
                print(
                    f"call: estimated {f['tokenguard.estimated_tokens']} tokens, "
                    f"used {f['gen_ai.usage.input_tokens']} in + "
                    f"{f['gen_ai.usage.output_tokens']} out, waited {f['tokenguard.wait_s']:.2f} s"
                )


if __name__ == "__main__":
    main()
