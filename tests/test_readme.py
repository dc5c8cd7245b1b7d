"""The README's Python snippets run as written against the emulator (with the names they
leave to the reader, KEY, history and other_client, given), so what it says stays true."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openai

import tokenguard as tg
from tokenguard.emulator import running

README = Path(__file__).resolve().parent.parent / "README.md"
GROQ = "https://api.groq.com/openai/v1"


def test_every_python_snippet_of_the_readme_runs(events: list[tg.events.Event]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    with running(model="llama-3.1-8b-instant", tpm=100_000, rpm=1_000, window=1.0) as em:
        names: dict[str, Any] = {
            "KEY": "test",
            "history": [{"role": "user", "content": "Hello"}],
            "other_client": openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0),
        }
        for block in blocks:
            assert GROQ in block or "tg." in block
            exec(block.replace(GROQ, em.base_url), names)
        assert [r.status for r in em.log] == [200, 200]  # the instrumented and the guarded call
    calls = [e.fields() for e in events if e.name == "tokenguard.guard.request"]
    assert len(calls) == 2
    assert (
        names["b"].used
        == calls[1]["gen_ai.usage.input_tokens"] + calls[1]["gen_ai.usage.output_tokens"]
    )
    assert names["n"] == calls[0]["gen_ai.usage.input_tokens"]  # counted as the server billed
    assert names["conv"].max_prompt_tokens == 4_000
