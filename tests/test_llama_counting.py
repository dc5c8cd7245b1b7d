"""Llama 3.x with tools and Llama 4: counted as Groq bills them.

``llama_cases.json`` holds every Llama request of the shared billed cases (real requests
with the ``usage.prompt_tokens`` Groq returned; copied so CI needs no shared folder). The
emulator renders Groq's templates on its own (whole strings, encoded whole), so it is the
reference for everything the cases do not cover: the counter's per-piece sums must equal
its whole-string counts for any conversation, tools and ``tool_choice``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.emulator import count_llama4_tokens, count_prompt_tokens
from tokenguard.models import known_models

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "llama_cases.json").read_text(encoding="utf-8")
)
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
MAVERICK = "meta-llama/llama-4-maverick-17b-128e-instruct"
LLAMA31 = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile")
# The model table may not list Maverick yet: it is the same template and tokenizer.
MAVERICK_INFO = tg.ModelInfo(MAVERICK, 131_072, 8_192, "llama4", "llama4")


def model_of(name: str) -> str | tg.ModelInfo:
    return MAVERICK_INFO if name == MAVERICK and name not in known_models() else name


def body_of(case: dict[str, Any]) -> dict[str, Any]:
    body = dict(case["request"])
    body["model"] = model_of(body["model"])
    return body


def emulated(model: str, messages: Any, tools: Any = None, **options: Any) -> int:
    """What the emulator bills (its own rendering)."""
    if "llama-4" in model:
        return count_llama4_tokens(messages, tools, options.get("tool_choice"))
    template = "llama3" if model.startswith("llama3-") else "llama3.1"
    return count_prompt_tokens(messages, tools, template, **options)


# -- the billed cases -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["source"][-60:] for c in CASES])
def test_every_billed_llama_case(case: dict[str, Any]) -> None:
    body = body_of(case)
    billed = case["prompt_tokens"]
    rc = tg.count_request(**body)
    if "response_format" in body:
        # Groq adds text for response_format that its gateway source does not show.
        assert rc.prompt_tokens >= billed
        assert not rc.exact
        return
    assert rc.prompt_tokens == billed
    assert rc.exact
    request = case["request"]
    options = {k: request[k] for k in ("tool_choice",) if k in request}
    assert emulated(request["model"], request["messages"], request.get("tools"), **options) == (
        billed
    )


def test_llama4_cases_cover_every_tool_choice_and_a_round_trip() -> None:
    seen = {json.dumps(c["request"].get("tool_choice")) for c in CASES}
    assert {"null", '"auto"', '"none"', '"required"'} <= seen
    assert any(isinstance(c["request"].get("tool_choice"), dict) for c in CASES)
    assert any(m["role"] == "tool" for c in CASES for m in c["request"]["messages"])


def test_llama4_none_drops_the_tools_and_required_adds_the_forced_sentence() -> None:
    messages = [{"role": "user", "content": "What's the weather in Berlin?"}]
    tools = next(c["request"]["tools"] for c in CASES if c["request"].get("tool_choice") == "none")
    plain = tg.count_tokens(messages, model=SCOUT)
    assert tg.count_tokens(messages, model=SCOUT, tools=tools, tool_choice="none") == plain
    auto = tg.count_tokens(messages, model=SCOUT, tools=tools)
    required = tg.count_tokens(messages, model=SCOUT, tools=tools, tool_choice="required")
    assert auto > plain + 638  # the fixed guide alone is 638 tokens
    assert required == auto + emulated(SCOUT, messages, tools, tool_choice="required") - emulated(
        SCOUT, messages, tools
    )


# -- against the emulator's whole-string rendering ---------------------------------------------

_EDGES = ["", " ", "\n", "\n\n", " lead", "trail ", "/path", "]", "<|eot|>", "<|eot_id|>", "<&>"]
texts = st.one_of(
    st.sampled_from([*_EDGES, "Hello", "Привет", "日本語", "x = [1, 2]", "\u2028", "{}"]),
    st.text(st.characters(codec="utf-8"), max_size=10),
)
names = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def _tool(name: str, description: str | None, properties: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    function["parameters"] = {"type": "object", "properties": properties}
    return {"type": "function", "function": function}


tool_defs = st.lists(
    st.builds(_tool, names, st.none() | texts, st.dictionaries(names, json_values, max_size=2)),
    min_size=1,
    max_size=3,
    unique_by=lambda t: str(t["function"]["name"]),
)


@st.composite
def turns(draw: st.DrawFn, with_tools: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(
            st.sampled_from(
                ["system", "user", "assistant", "round"]
                if with_tools
                else ["system", "user", "assistant"]
            )
        )
        if kind != "round":
            messages.append({"role": kind, "content": draw(texts)})
            continue
        n = draw(st.integers(1, 2))
        calls = [
            {
                "id": f"c{j}",
                "type": "function",
                "function": {
                    "name": draw(names),
                    "arguments": json.dumps(draw(st.dictionaries(names, json_values, max_size=2))),
                },
            }
            for j in range(n)
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        for j in range(n):
            messages.append({"role": "tool", "tool_call_id": f"c{j}", "content": draw(texts)})
    return messages


@st.composite
def tool_requests(draw: st.DrawFn) -> dict[str, Any]:
    tools: list[dict[str, Any]] = draw(tool_defs)
    choice = draw(
        st.sampled_from([None, "auto", "none", "required"])
        | st.sampled_from([t["function"]["name"] for t in tools]).map(
            lambda n: {"type": "function", "function": {"name": n}}
        )
    )
    request: dict[str, Any] = {"tools": tools, "messages": draw(turns(True))}
    if choice is not None:
        request["tool_choice"] = choice
    parallel = draw(st.none() | st.booleans())
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    return request


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _trim_sure(messages: list[dict[str, Any]], model: str = "") -> bool:
    """Whether no user/assistant/tool body has blanks at an end (whose trimming Groq's
    billing has not shown); for the retired Llama 3 (GenericChat), no system body either."""
    return all(
        (m.get("content") or "") == (m.get("content") or "").strip()
        for m in messages
        if m["role"] != "system" or model == "llama3-8b-8192"
    )


@SETTINGS
@given(request=tool_requests(), model=st.sampled_from([*LLAMA31, SCOUT]))
def test_tools_and_round_trips_equal_the_emulator(request: dict[str, Any], model: str) -> None:
    options = {k: request[k] for k in ("tool_choice", "parallel_tool_calls") if k in request}
    if "llama-4" in model:
        options.pop("parallel_tool_calls", None)  # Llama 4's prompt does not depend on it
    expected = emulated(model, request["messages"], request["tools"], **options)
    rc = tg.count_request(model=model, **request)
    if _trim_sure(request["messages"]):
        assert rc.prompt_tokens == expected
        assert rc.exact
    else:
        assert rc.prompt_tokens >= expected


@SETTINGS
@given(messages=turns(False), model=st.sampled_from([*LLAMA31, SCOUT, "llama3-8b-8192"]))
def test_plain_conversations_equal_the_emulator_warm_and_cold(
    messages: list[dict[str, Any]], model: str
) -> None:
    expected = emulated(model, messages)
    counter = tg.Counter()
    first = counter.count_request(messages, model=model)
    second = counter.count_request(messages, model=model)
    assert first.prompt_tokens == second.prompt_tokens
    if _trim_sure(messages, model):
        assert first.prompt_tokens == expected
        assert first.exact
    else:
        assert first.prompt_tokens >= expected


# -- the per-message decomposition ---------------------------------------------------------------


@st.composite
def kept_subsets(draw: st.DrawFn) -> tuple[dict[str, Any], list[int]]:
    request = draw(tool_requests())
    messages = request["messages"]
    # Keep a tool-call turn and its results together, as fitting does.
    units: list[list[int]] = []
    for i, m in enumerate(messages):
        if m["role"] == "tool" and units:
            units[-1].append(i)
        else:
            units.append([i])
    keep = draw(st.lists(st.booleans(), min_size=len(units), max_size=len(units)))
    kept = [i for unit, k in zip(units, keep, strict=True) if k for i in unit]
    return request, kept


@SETTINGS
@given(subset=kept_subsets(), model=st.sampled_from([LLAMA31[0], SCOUT]))
def test_dropping_messages_lowers_the_count_by_at_least_their_costs(
    subset: tuple[dict[str, Any], list[int]], model: str
) -> None:
    request, kept = subset
    options = {k: v for k, v in request.items() if k != "messages"}
    messages = request["messages"]
    pc = tg.count_prompt(messages, model=model, **options)
    assert pc.total == tg.count_tokens(messages, model=model, **options)
    assert pc.total <= pc.overhead + pc.tools + sum(pc.messages)
    if not kept:
        return
    after = tg.count_tokens([messages[i] for i in kept], model=model, **options)
    bound = pc.overhead + pc.tools + sum(pc.messages[i] for i in kept)
    assert after <= bound
    systems = sum(m["role"] == "system" for m in messages)
    if systems <= 1 and pc.exact and len(kept) == len(messages):
        assert after == pc.total


@SETTINGS
@given(messages=turns(False), data=st.data(), model=st.sampled_from([LLAMA31[1], SCOUT]))
def test_removing_one_plain_message_changes_the_count_by_exactly_its_cost(
    messages: list[dict[str, Any]], data: st.DataObject, model: str
) -> None:
    pc = tg.count_prompt(messages, model=model)
    if not pc.exact or sum(m["role"] == "system" for m in messages) > 1:
        return
    assert pc.total == pc.overhead + pc.tools + sum(pc.messages)
    i = data.draw(st.integers(0, len(messages) - 1))
    rest = messages[:i] + messages[i + 1 :]
    if not rest:
        return
    after = tg.count_tokens(rest, model=model)
    if i == len(messages) - 1 and rest[-1]["role"] == "assistant":
        # The assistant message that becomes last is left open: its end of turn and the
        # generation prompt go, 5 tokens below the sum (the safe side).
        assert after == pc.total - pc.messages[i] - 5
    else:
        assert after == pc.total - pc.messages[i]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [LLAMA31[0], SCOUT])
def test_a_tool_without_a_name_is_refused(model: str) -> None:
    tools = [{"type": "function", "function": {"description": "no name", "parameters": {}}}]
    with pytest.raises(tg.InvalidMessages, match="needs a non-empty str 'name'"):
        tg.count_tokens([{"role": "user", "content": "hi"}], model=model, tools=tools)


@pytest.mark.parametrize("model", [LLAMA31[0], SCOUT])
def test_a_tool_choice_naming_no_tool_is_refused(model: str) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    choice = {"type": "function", "function": {"name": "get_time"}}
    with pytest.raises(tg.InvalidMessages, match="'get_time', which is not among the tools"):
        tg.count_tokens(
            [{"role": "user", "content": "hi"}], model=model, tools=tools, tool_choice=choice
        )


def test_llama4_tool_call_arguments_must_be_a_json_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    with pytest.raises(tg.InvalidMessages, match="needs a JSON object"):
        tg.count_tokens(messages, model=SCOUT)


@pytest.mark.parametrize("model", ["llama-3.1-8b-instant", SCOUT])
@pytest.mark.parametrize("container", [list, tuple])
def test_tool_definitions_changed_in_place_are_counted_anew(model: str, container: type) -> None:
    # The counter finds a tools list seen before by its identity, confirmed equal to a
    # copy of it: a list (or tuple) edited in place between calls must not keep its count.
    tool: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find a word",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
    tools = container([tool])
    messages = [{"role": "user", "content": "What does 'tarn' mean?"}]
    counter = tg.Counter()
    counts = [counter.count(messages, model=model, tools=tools) for _ in range(3)]
    assert (
        counts
        == [tg.Counter().count(messages, model=model, tools=[json.loads(json.dumps(tool))])] * 3
    )
    tool["function"]["description"] = "Find a word in the dictionary and give its meanings"
    changed = counter.count(messages, model=model, tools=tools)
    assert changed == tg.Counter().count(
        messages, model=model, tools=[json.loads(json.dumps(tool))]
    )
    assert changed > counts[0]
    assert counter.count(messages, model=model, tools=tools, tool_choice="none") < changed
