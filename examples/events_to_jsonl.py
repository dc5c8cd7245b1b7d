"""Ship usage events to a JSONL file (one line per event, what ``tokenguard report``
reads and plots) and to stdlib logging, without configuring logging globally.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/events_to_jsonl.py [usage.jsonl]
    tokenguard report usage.jsonl --plot usage.png
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "usage.jsonl"
    lim = tg.Limiter.from_model(MODEL)
    # The limits line first: the report and its plot take the window and limit from it.
    sink = tg.sinks.JsonlSink(path, limiter=lim)
    tg.events.add_sink(sink)
    # Also to a stdlib logger of the application's, set up here and nowhere else.
    log = logging.getLogger("myapp.tokens")
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)
    log.propagate = False
    tg.events.add_sink(tg.sinks.LoggingSink(log))
    with server() as plain:
        client = tg.instrument(plain, limiter=lim)
        for q in ("Name a prime.", "Name a planet.", "Name a river."):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=16
            )
    sink.close()
    rows: list[dict[str, Any]] = [json.loads(x) for x in path.read_text().splitlines()]
    calls = [r for r in rows if r["event"] == "tokenguard.guard.request"]
    tokens = sum(r["gen_ai.usage.input_tokens"] + r["gen_ai.usage.output_tokens"] for r in calls)
    print(f"wrote {len(rows)} events to {path}: {len(calls)} requests, {tokens} tokens")
    print(f"next: tokenguard report {path} --plot usage.png")


if __name__ == "__main__":
    main()
