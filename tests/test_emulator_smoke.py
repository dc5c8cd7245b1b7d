"""First end-to-end check: the real openai SDK against the emulator over HTTP."""

from __future__ import annotations

import openai

from tokenguard.emulator import running


def test_openai_sdk_gets_a_completion() -> None:
    with running(model="llama3-8b-8192") as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="llama3-8b-8192", messages=[{"role": "user", "content": "Hello"}]
        )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 11
    assert reply.usage.completion_tokens == 16
    assert reply.choices[0].message.content
    assert em.log[-1].status == 200
