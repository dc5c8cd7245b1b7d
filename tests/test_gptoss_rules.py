"""gpt-oss prompt counts: the harmony rules and the emulator against what Groq billed.

``gptoss_cases.json`` holds real requests with the ``usage.prompt_tokens`` Groq returned
(shared GROQ.md). The client's rules (``counting._harmony``, per-message sums) and the
emulator (``emulator._harmony``, whole prompt rendered and encoded) are written apart;
both must reproduce every case, and agree with each other on arbitrary conversations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenguard import InvalidMessages
from tokenguard._tokenizer_data import get_encoding
from tokenguard.counting._harmony import (
    HarmonyRules,
    read_tools,
    render_tools_section,
    schema_to_typescript,
)
from tokenguard.emulator import count_harmony_tokens

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "gptoss_cases.json").read_text(encoding="utf-8")
)
EXACT_CASES = [c for c in CASES if "response_format" not in c["request"]]
BOUND_CASES = [c for c in CASES if "response_format" in c["request"]]

_enc = get_encoding("o200k_base")
RULES = HarmonyRules(lambda text: len(_enc.encode_ordinary(text)))


def _kwargs(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k not in ("model", "messages")}


def _case_id(case: dict[str, Any]) -> str:
    return str(case["source"]).split("/")[-1][:60]


@pytest.mark.parametrize("case", EXACT_CASES, ids=_case_id)
def test_rules_count_exactly_what_groq_billed(case: dict[str, Any]) -> None:
    request = case["request"]
    counted = RULES.count(request["messages"], **_kwargs(request))
    assert counted.total == case["prompt_tokens"]
    assert counted.exact
    assert counted.total == counted.overhead + counted.tools + sum(counted.messages)


@pytest.mark.parametrize("case", BOUND_CASES, ids=_case_id)
def test_rules_bound_response_format_from_above_within_a_quarter(case: dict[str, Any]) -> None:
    request = case["request"]
    counted = RULES.count(request["messages"], **_kwargs(request))
    assert case["prompt_tokens"] <= counted.total <= case["prompt_tokens"] * 1.25
    assert not counted.exact


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_emulator_bills_what_groq_billed(case: dict[str, Any]) -> None:
    request = case["request"]
    billed = count_harmony_tokens(
        request["messages"],
        request.get("tools"),
        reasoning_effort=request.get("reasoning_effort"),
        response_format=request.get("response_format"),
    )
    assert billed == case["prompt_tokens"]


def test_reasoning_effort_and_date_do_not_change_the_count() -> None:
    msgs = [{"role": "user", "content": "hello"}]
    counts = {RULES.count(msgs, reasoning_effort=e).total for e in (None, "low", "medium", "high")}
    assert counts == {72}


def test_tool_schema_renders_as_harmony_writes_typescript() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            "days": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    }
    assert schema_to_typescript(schema) == (
        "{\n"
        "// City name\n"
        "city: string,\n"
        'unit?: "c" | "f", // default: c\n'
        "days?: number | null,\n"
        "tags?: string[],\n"
        "}"
    )
    tools = read_tools(
        [{"type": "function", "function": {"name": "weather", "description": "Get it.\n"}}], None
    )
    assert render_tools_section(tools) == (
        "# Tools\n\n## functions\n\nnamespace functions {\n\n// Get it.\n"
        "type weather = () => any;\n\n} // namespace functions"
    )


def test_unexplained_schema_keywords_are_bounded_not_exact() -> None:
    plain = {"type": "object", "properties": {"n": {"type": "integer"}}}
    constrained = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
    }
    msgs = [{"role": "user", "content": "pick"}]

    def tool(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": "pick", "parameters": params}}]

    exact = RULES.count(msgs, tools=tool(plain))
    bounded = RULES.count(msgs, tools=tool(constrained))
    assert exact.exact
    assert not bounded.exact
    assert bounded.tools > exact.tools
    billed = count_harmony_tokens(msgs, tool(constrained))
    assert bounded.total >= billed


def test_additional_properties_false_bills_six_more_per_tool() -> None:
    msgs = [{"role": "user", "content": "go"}]
    open_ = {"type": "object", "properties": {"a": {"type": "string"}}}
    closed = {**open_, "additionalProperties": False}

    def tools(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": f"f{i}", "parameters": params}}
            for i in range(3)
        ]

    a = RULES.count(msgs, tools=tools(open_))
    b = RULES.count(msgs, tools=tools(closed))
    assert b.total - a.total == 18
    assert a.exact
    assert b.exact


# -- bad and odd input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "match"),
    [
        ([{"type": "function", "function": {"description": "no name"}}], "tools\\[0\\].function"),
        ([{"type": "function", "function": {"name": ""}}], "non-empty str 'name'"),
        ([{"type": "function", "function": {"name": 3}}], "non-empty str 'name'"),
        ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "JSON schema"),
        ([{"type": "function", "function": {"name": "f", "description": 7}}], "'description'"),
        ([{"type": "retrieval"}], "expected 'function'"),
        ("not a list", "list of definitions"),
    ],
)
def test_bad_tools_raise_invalid_messages(tools: Any, match: str) -> None:
    with pytest.raises(InvalidMessages, match=match):
        RULES.count([{"role": "user", "content": "x"}], tools=tools)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"role": "user", "content": 42}, "content has type int"),
        ({"role": "user", "content": {"text": "x"}}, "content has type dict"),
        ({"role": "user"}, "needs 'content'"),
        ({"role": "wizard", "content": "x"}, "unknown role"),
        ({"role": "tool", "content": "x", "tool_call_id": 5}, "'tool_call_id' must be a str"),
        (
            {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]},
            "needs a str 'name'",
        ),
    ],
)
def test_bad_messages_raise_invalid_messages_naming_the_index(
    message: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidMessages, match=match) as info:
        RULES.count([{"role": "user", "content": "ok"}, message])
    assert info.value.index == 1


def test_bad_request_options_raise_invalid_messages() -> None:
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(InvalidMessages, match="reasoning_effort"):
        RULES.count(msgs, reasoning_effort=3)
    with pytest.raises(InvalidMessages, match="response_format has type 'xml'"):
        RULES.count(msgs, response_format={"type": "xml"})
    with pytest.raises(InvalidMessages, match="empty"):
        RULES.count([])


def test_tool_result_matching_no_call_is_counted_conservatively() -> None:
    tools = [{"type": "function", "function": {"name": "lookup_weather"}}]
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "tool", "tool_call_id": "nobody", "content": "sunny"},
    ]
    counted = RULES.count(msgs, tools=tools)
    assert not counted.exact
    assert counted.total >= count_harmony_tokens(msgs, tools)


# -- the two implementations agree -----------------------------------------------------

_PIECES = [*"abc XYZ 019.,!?'\"{}[]:\n\t-_#/", "Привет", "日本語", "नमस्ते", "😀", "é", "<|end|>"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_NAMES = st.sampled_from(["get_weather", "search", "f", "lookup_order_status"])


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    names = draw(st.lists(_NAMES, min_size=0, max_size=3, unique=True))
    tools = [
        {
            "type": "function",
            "function": {
                "name": n,
                "description": draw(_TEXT),
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string", "description": draw(_TEXT)}},
                    "required": ["q"],
                    **({"additionalProperties": False} if draw(st.booleans()) else {}),
                },
            },
        }
        for n in names
    ]
    msgs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(_TEXT)})
    for turn in range(draw(st.integers(1, 4))):
        msgs.append({"role": "user", "content": draw(_TEXT)})
        wants_calls: bool = draw(st.booleans())
        if names and wants_calls:
            calls = [
                {
                    "id": f"call_{turn}_{j}",
                    "type": "function",
                    "function": {"name": draw(st.sampled_from(names)), "arguments": draw(_TEXT)},
                }
                for j in range(draw(st.integers(1, 2)))
            ]
            msgs.append({"role": "assistant", "content": draw(_TEXT), "tool_calls": calls})
            for call in calls:
                msgs.append({"role": "tool", "tool_call_id": call["id"], "content": draw(_TEXT)})
        if draw(st.booleans()):
            msgs.append({"role": "assistant", "content": draw(_TEXT)})
    return msgs, tools or None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.sampled_from([None, "low", "high"]))
def test_rules_equal_the_emulator_on_arbitrary_conversations(
    conv: tuple[list[dict[str, Any]], list[dict[str, Any]] | None], effort: str | None
) -> None:
    msgs, tools = conv
    counted = RULES.count(msgs, tools=tools, reasoning_effort=effort)
    billed = count_harmony_tokens(msgs, tools, reasoning_effort=effort)
    if counted.exact:
        assert counted.total == billed
    else:
        # Special-token lookalikes or an empty system message: a bound, never below.
        assert counted.total >= billed
        assert "<|" in json.dumps([msgs, tools]) or msgs[0]["content"] == ""
