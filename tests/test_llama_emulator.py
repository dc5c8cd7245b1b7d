"""Llama 3.x with tools and Llama 4, end to end: the client's count against the emulator's
``usage.prompt_tokens`` over real HTTP, through the real openai and groq SDKs.

The emulator renders Groq's Llama templates on its own (``tokenguard.emulator._prompt``
and ``_llama4``), so an equal count here is two independent renderings agreeing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest

import tokenguard as tg
from tokenguard.emulator import Emulator, running

SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
MODELS = ["llama-3.1-8b-instant", "llama-3.3-70b-versatile", SCOUT]

WEATHER: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city (°C & wind <km/h>)",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ROUND_TRIP: Any = [
    {"role": "system", "content": "Use tools when needed."},
    {"role": "user", "content": "Weather in Lisbon and Porto?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{city}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
            }
            for city in ("Lisbon", "Porto")
        ],
    },
    {"role": "tool", "tool_call_id": "call_Lisbon", "content": '{"temp_c": 21}'},
    {"role": "tool", "tool_call_id": "call_Porto", "content": '{"temp_c": 18}'},
    {"role": "system", "content": "Answer in one sentence."},
]
CHOICES: list[Any] = [
    None,
    "auto",
    "none",
    "required",
    {"type": "function", "function": {"name": "get_time"}},
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running(model=MODELS, tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield em


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", CHOICES, ids=str)
@pytest.mark.parametrize("parallel", [None, False])
def test_tool_requests_through_the_openai_sdk(
    emulator: Emulator, model: str, choice: Any, parallel: bool | None
) -> None:
    options: dict[str, Any] = {"tools": WEATHER}
    if choice is not None:
        options["tool_choice"] = choice
    if parallel is not None:
        options["parallel_tool_calls"] = parallel
    rc = tg.count_request(ROUND_TRIP, model=model, max_tokens=8, **options)
    with openai.OpenAI(base_url=emulator.base_url, api_key="test", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=model, messages=ROUND_TRIP, max_tokens=8, **options
        )
    assert reply.usage is not None
    assert rc.prompt_tokens == reply.usage.prompt_tokens
    assert rc.exact


@pytest.mark.parametrize("model", MODELS)
def test_a_conversation_through_the_groq_sdk(emulator: Emulator, model: str) -> None:
    messages: Any = [{"role": "system", "content": "Be brief."}]
    with groq.Groq(base_url=emulator.root_url, api_key="test", max_retries=0) as client:
        for question in ("What is BPE?", "And a merge rule?", "Thanks."):
            messages.append({"role": "user", "content": question})
            expected = tg.count_tokens(messages, model=model, tools=WEATHER)
            reply = client.chat.completions.create(
                model=model, messages=messages, tools=WEATHER, max_tokens=8
            )
            assert reply.usage is not None
            assert reply.usage.prompt_tokens == expected
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})


def test_a_named_tool_the_request_does_not_define_is_refused_by_both(emulator: Emulator) -> None:
    choice: Any = {"type": "function", "function": {"name": "get_news"}}
    with pytest.raises(tg.InvalidMessages, match="not among the tools"):
        tg.count_request(ROUND_TRIP, model=SCOUT, tools=WEATHER, tool_choice=choice)
    client = openai.OpenAI(base_url=emulator.base_url, api_key="test", max_retries=0)
    with client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=SCOUT, messages=ROUND_TRIP, tools=WEATHER, tool_choice=choice
        )
