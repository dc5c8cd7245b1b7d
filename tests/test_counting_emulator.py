"""End to end: the client-side count equals the emulator's ``usage.prompt_tokens``.

Conversations go through the real openai SDK over HTTP to the local Groq emulator,
whose server-side counting is written independently of ``tokenguard.counting``.
Non-Llama models are counted by the emulator with the Llama 3 tokenizer, a tokenizer
the estimator does not use: their estimates must stay above and calibrate toward it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from counting_samples import SAMPLES, conversation_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.emulator import Emulator, running

EXACT = ["llama3-8b-8192", "llama-3.1-8b-instant", "llama-3.3-70b-versatile"]
ESTIMATED = ["openai/gpt-oss-20b", "qwen/qwen3-32b"]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # No limits: these tests are about counting, not waiting.
    with running(model=[*EXACT, *ESTIMATED], tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield em


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.base_url, api_key="test", max_retries=0)


def _prompt_tokens(client: openai.OpenAI, model: str, messages: Any, **kw: Any) -> int:
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=4, **kw)
    assert reply.usage is not None
    return int(reply.usage.prompt_tokens)


text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    [" padded ", "\n\nlines\n", "<|eot_id|>", "Привет, мир", "日本語のテキスト", "x = [1, 2, 3]"]
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": text}
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(message, min_size=1, max_size=6), model=st.sampled_from(EXACT))
def test_plain_conversations_are_exact(
    client: openai.OpenAI, messages: list[dict[str, str]], model: str
) -> None:
    rc = tg.count_request(messages, model=model)
    billed = _prompt_tokens(client, model, messages)
    # Blanks at a message's ends: whether Groq trims them is not confirmed, so the count
    # is the larger reading, reported as a bound; exact otherwise.
    assert rc.prompt_tokens >= billed
    if rc.exact:
        assert rc.prompt_tokens == billed
    if all(m["content"] == m["content"].strip() for m in messages):
        assert rc.exact


@pytest.mark.parametrize("model", EXACT)
def test_a_growing_conversation_with_the_sdks_own_objects(
    client: openai.OpenAI, model: str
) -> None:
    messages: list[Any] = [{"role": "system", "content": "You answer in one short sentence."}]
    for question in SAMPLES["english"][:4]:
        messages.append({"role": "user", "content": question})
        expected = tg.count_tokens(messages, model=model)
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16)
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == expected
        # The reply's ChatCompletionMessage goes back into the history as it is.
        messages.append(reply.choices[0].message)
        assert tg.count_tokens(messages, model=model) > expected


@pytest.mark.parametrize("model", EXACT)
def test_tool_forms_match_the_server_rule(client: openai.OpenAI, model: str) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: Any = [
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "Weather in Lisbon?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    rc = tg.count_request(messages, model=model, tools=tools)
    billed = _prompt_tokens(client, model, messages, tools=tools)
    # Llama 3.1/3.3 tools follow Groq's own prompt exactly; the retired Llama 3 is a bound.
    assert rc.exact == (model != "llama3-8b-8192")
    assert rc.prompt_tokens == billed if rc.exact else rc.prompt_tokens >= billed


@pytest.mark.parametrize("model", ESTIMATED)
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_estimates_stay_above_and_calibrate(client: openai.OpenAI, model: str, kind: str) -> None:
    counter = tg.Counter()
    ratios = []
    for size in range(1, 11):
        messages: Any = conversation_of(SAMPLES[kind], 0, size)
        rc = counter.count_request(messages, model=model)
        actual = _prompt_tokens(client, model, messages)
        assert rc.prompt_tokens >= actual
        ratios.append(rc.prompt_tokens / actual)
        counter.observe(rc, actual)
    assert ratios[-1] <= 1.07, ratios
