"""Ship usage events to a JSONL file (one line per event, what ``tokenguard report``
reads) and to stdlib logging, without configuring logging globally.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator.

    python examples/events_to_jsonl.py [usage.jsonl]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openai import OpenAI

import tokenguard as tg

MODEL = "llama-3.1-8b-instant"


class JsonlSink:
    """Append each event as one JSON line: ``{"event": name, "level": ..., **fields}``."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()  # events come from any thread

    def __call__(self, event: tg.events.Event) -> None:
        line = json.dumps(
            {"event": event.name, "level": event.level, **event.fields()}, default=str
        )
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


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
    sink = JsonlSink(path)
    tg.events.add_sink(sink)
    # Also to stdlib logging: the application decides where that goes.
    log = logging.getLogger("myapp.tokens")
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)
    log.propagate = False
    tg.events.add_sink(tg.events.to_logging(log))
    tg.events.use_structlog(False)
    with server() as plain:
        client = tg.instrument(plain)
        for q in ("Name a prime.", "Name a planet.", "Name a river."):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=16
            )
    sink.close()
    rows: list[dict[str, Any]] = [json.loads(x) for x in path.read_text().splitlines()]
    calls = [r for r in rows if r["event"] == "tokenguard.guard.request"]
    tokens = sum(r["gen_ai.usage.input_tokens"] + r["gen_ai.usage.output_tokens"] for r in calls)
    print(f"wrote {len(rows)} events to {path}: {len(calls)} requests, {tokens} tokens")


if __name__ == "__main__":
    main()
