"""``response_format`` for every family: Groq's billed requests are never under-counted
and, where the rest of the prompt is exact, counted within +25% of what Groq billed.

Groq's gateway does not render ``response_format``; the text it costs is added further
down and nobody has seen it, so every count with one is a bound (``exact`` is false).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tokenguard as tg

_HERE = Path(__file__).parent
CASES: list[dict[str, Any]] = [
    case
    for name in ("gptoss_cases.json", "response_format_cases.json")
    for case in json.loads((_HERE / name).read_text(encoding="utf-8"))
    if "response_format" in case["request"]
]
_SDK_ONLY = ("n", "stream", "service_tier")


def _id(case: dict[str, Any]) -> str:
    return f"{case['request']['model']}-{case['request']['response_format']['type']}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_billed_response_format_is_never_under_counted(case: dict[str, Any]) -> None:
    body = {k: v for k, v in case["request"].items() if k not in _SDK_ONLY}
    rc = tg.count_request(**body)
    assert not rc.exact
    assert rc.prompt_tokens >= case["prompt_tokens"]
    without = dict(body)
    del without["response_format"]
    rest = tg.count_request(**without)
    if rest.exact:
        assert rc.prompt_tokens <= 1.25 * case["prompt_tokens"]


@pytest.mark.parametrize(
    "model", ["qwen/qwen3-32b", "openai/gpt-oss-20b", "llama-3.3-70b-versatile"]
)
def test_a_schema_costs_more_as_it_grows_and_the_rest_stays_exact(model: str) -> None:
    messages = [{"role": "user", "content": "Where is the largest city of Japan?"}]
    small = {"type": "object", "properties": {"city": {"type": "string"}}}
    large = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(20)}}
    plain = tg.count_tokens(messages, model)
    counts = [
        tg.count_tokens(
            messages,
            model,
            response_format={"type": "json_schema", "json_schema": {"name": "P", "schema": s}},
        )
        for s in (small, large)
    ]
    assert plain + 40 < counts[0] < counts[1]
    obj = tg.count_request(messages, model, response_format={"type": "json_object"})
    assert obj.prompt_tokens > plain
    assert not obj.exact
    assert tg.count_tokens(messages, model, response_format={"type": "text"}) == plain


def test_an_unknown_response_format_is_a_clear_error() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(tg.InvalidMessages, match="response_format has type 'xml'"):
        tg.count_tokens(messages, "qwen/qwen3-32b", response_format={"type": "xml"})
