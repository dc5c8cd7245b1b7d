"""Calibration never brings a Kimi K2 estimate below the server, whatever it learned on.

Each test teaches a fresh counter the billed counts of one shape of request (as the guard
does after every response), then counts every shape, the taught one included, against
the emulator's ``usage.prompt_tokens``, through the real openai SDK. The emulator's Kimi
is a stand-in: Kimi's template rendered whole, counted with o200k_base (no Kimi
tokenizer is at hand), a tokenizer the estimate (cl100k_base) does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

import tokenguard as tg
from tokenguard.emulator import running

KIMI = "moonshotai/kimi-k2-instruct-0905"
ENGLISH = "The quick brown fox jumps over the lazy dog and keeps running through the field. "
CJK = "你好世界，今天天气很好。我们去公园散步吧。"
CODE = "def f(x):\n    return {'a': [x, x**2, x**3]}\n"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]

Request = dict[str, Any]


def _many_short(k: int) -> Request:
    turns = 33 * k + 1  # 34 .. 199 messages of one word
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": "ok"} for i in range(turns)]}


def _few_long(k: int) -> Request:
    return {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": ENGLISH * (3 * k - 2)},
        ]
    }


def _tools(k: int) -> Request:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    for j in range(k):
        call = {
            "id": f"call_{j}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{j}", "content": '{"temp_c": 4}'},
        ]
    return {"messages": messages, "tools": TOOLS}


def _cjk(k: int) -> Request:
    return {"messages": [{"role": "user", "content": CJK * (4 * k)}]}


def _code(k: int) -> Request:
    return {"messages": [{"role": "user", "content": CODE * (4 * k)}]}


SHAPES: dict[str, Callable[[int], Request]] = {
    "many_short": _many_short,
    "few_long": _few_long,
    "tools": _tools,
    "cjk": _cjk,
    "code": _code,
}
SIZES = range(1, 7)


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    with running(model=KIMI, tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)


@pytest.fixture(scope="module")
def billed(client: openai.OpenAI) -> dict[tuple[str, int], int]:
    """The emulator's ``prompt_tokens`` of every shape at every size."""
    out = {}
    for name, shape in SHAPES.items():
        for k in SIZES:
            reply = client.chat.completions.create(model=KIMI, max_tokens=4, **shape(k))
            assert reply.usage is not None
            out[name, k] = reply.usage.prompt_tokens
    return out


@pytest.mark.parametrize("taught", sorted(SHAPES))
def test_no_shape_falls_below_the_server_after_calibration_on_another(
    billed: dict[tuple[str, int], int], taught: str
) -> None:
    counter = tg.Counter()
    for k in SIZES:
        request = SHAPES[taught](k)
        counter.observe(counter.count_request(model=KIMI, **request), billed[taught, k])
    under = [
        (name, k, counted, billed[name, k])
        for name, shape in SHAPES.items()
        for k in SIZES
        if (counted := counter.count_request(model=KIMI, **shape(k)).prompt_tokens)
        < billed[name, k]
    ]
    assert not under, under  # (shape, size, counted, billed)
