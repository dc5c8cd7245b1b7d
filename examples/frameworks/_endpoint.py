"""Where the framework recipes send: Groq when GROQ_API_KEY is set, else the embedded
emulator with a small limit (3,000 tokens per 1-second "minute") so that a burst of
requests must wait for the limiter; and a summary of what the guard saw."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"


@dataclass(frozen=True)
class Endpoint:
    """``base_url`` for the openai SDK (ends in /openai/v1), ``root_url`` for the groq
    SDK (the host), the key, and the limiter every recipe's client shares."""

    base_url: str
    root_url: str
    api_key: str
    limiter: tg.Limiter


@contextmanager
def endpoint() -> Iterator[Endpoint]:
    key = os.environ.get("GROQ_API_KEY")
    if key:
        groq = "https://api.groq.com"
        yield Endpoint(f"{groq}/openai/v1", groq, key, tg.Limiter.from_model(MODEL))
        return
    from tokenguard.emulator import running

    with running(model=MODEL, tpm=3_000, rpm=1_000, window=1.0) as em:
        limiter = tg.Limiter(tpm=3_000, rpm=1_000, window=1.0)
        yield Endpoint(em.base_url, em.root_url, "emulator", limiter)


@contextmanager
def summary(title: str) -> Iterator[None]:
    """Print one line per guarded request seen inside the block, then the totals."""
    seen: list[tg.events.Event] = []
    undo = tg.events.add_sink(seen.append)
    try:
        yield
    finally:
        undo()
    calls = [e.fields() for e in seen if e.name == "tokenguard.guard.request"]
    exact = sum(
        f["tokenguard.estimated_tokens"] - f["tokenguard.completion_reserve"]
        == f["gen_ai.usage.input_tokens"]
        for f in calls
    )
    waited = sum(f["tokenguard.wait_s"] for f in calls)
    print(f"{title}: {len(calls)} guarded calls, {exact} counted exactly, {waited:.1f} s held")
