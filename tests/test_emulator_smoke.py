"""First end-to-end check: the real openai SDK against the emulator over HTTP."""

from __future__ import annotations

from emulator_support import client_for

from tokenguard.emulator import running


def test_openai_sdk_gets_a_completion() -> None:
    with running(model="llama3-8b-8192") as em:
        client = client_for(em)
        reply = client.chat.completions.create(
            model="llama3-8b-8192", messages=[{"role": "user", "content": "Hello"}]
        )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 11
    assert reply.usage.completion_tokens == 16
    assert reply.choices[0].message.content
    assert em.log[-1].status == 200
