"""Bad input: a clear InvalidMessages naming the message and the problem, never a bare error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenguard as tg

MODELS = ["llama3-8b-8192", "llama-3.1-8b-instant", "qwen/qwen3-32b", "openai/gpt-oss-20b"]
OK = {"role": "user", "content": "fine"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("messages", "index", "fragment"),
    [
        ("hello", None, "must be a list"),
        ({"role": "user", "content": "x"}, None, "must be a list"),
        (None, None, "must be a list"),
        (42, None, "must be a list"),
        ([], None, "empty"),
        ([OK, "just text"], 1, "must be a dict"),
        ([OK, None], 1, "must be a dict"),
        ([{"content": "x"}], 0, "no 'role'"),
        ([OK, {"role": "wizard", "content": "x"}], 1, "unknown role 'wizard'"),
        ([{"role": ["user"], "content": "x"}], 0, "unknown role"),
        ([{"role": "user"}], 0, "needs 'content'"),
        ([{"role": "user", "content": None}], 0, "content is None"),
        ([OK, OK, {"role": "user", "content": 7}], 2, "content has type int"),
        ([{"role": "user", "content": b"bytes"}], 0, "content has type bytes"),
        ([{"role": "user", "content": {"text": "x"}}], 0, "content has type dict"),
        ([{"role": "user", "content": ["x"]}], 0, "content[0] must be a dict"),
        ([{"role": "user", "content": [{"type": "text"}]}], 0, "needs a str 'text'"),
        ([{"role": "user", "content": [{"type": "audio", "x": 1}]}], 0, "content[0] has type"),
        ([{"role": "user", "content": [{"text": "no type"}]}], 0, "content[0] has type None"),
        ([{"role": "user", "content": "a\ud800b"}], 0, "lone surrogate"),
        ([OK, {"role": "user", "content": [{"type": "text", "text": "\udfff"}]}], 1, "surrogate"),
        ([{"role": "user", "content": "x", "name": 5}], 0, "'name' must be a str"),
        ([{"role": "user", "content": "x", "name": "\ud800"}], 0, "surrogate"),
        ([{"role": "user", "content": "x", "tool_calls": [{}]}], 0, "only assistant"),
        ([{"role": "assistant", "content": None, "tool_calls": "x"}], 0, "must be a list"),
        ([{"role": "assistant", "content": None, "tool_calls": [5]}], 0, "tool_calls[0]"),
        ([{"role": "assistant", "tool_calls": [{"function": None}]}], 0, "function"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            0,
            "needs a str 'name'",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}],
            0,
            "'arguments' must be",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f\ud800"}}]}],
            0,
            "surrogate",
        ),
    ],
)
def test_bad_messages_name_index_and_problem(
    messages: Any, index: int | None, fragment: str, model: str
) -> None:
    with pytest.raises(tg.InvalidMessages) as info:
        tg.count_tokens(messages, model=model)
    assert info.value.index == index
    assert fragment in str(info.value)
    if index is not None:
        assert str(info.value).startswith(f"messages[{index}]: ")


@pytest.mark.parametrize("model", MODELS)
def test_bad_tools(model: str) -> None:
    with pytest.raises(tg.InvalidMessages, match="tools must be a list"):
        tg.count_tokens([OK], model=model, tools="f")
    fine = {"type": "function", "function": {"name": "f", "parameters": {}}}
    with pytest.raises(tg.InvalidMessages, match=r"tools\[1\] must be a dict"):
        tg.count_tokens([OK], model=model, tools=[fine, 3])
    odd = {"type": "function", "function": {"name": "f", "parameters": {"x": object()}}}
    with pytest.raises(tg.InvalidRequest, match=r"has type object; expected a JSON value") as e:
        tg.count_tokens([OK], model=model, tools=[odd])
    assert e.value.field == "tools[0].function.parameters.x"


@pytest.mark.parametrize("model", MODELS)
def test_absurdly_large_input_is_refused_before_tokenizing(model: str) -> None:
    counter = tg.Counter(max_new_chars=1_000, max_messages=10)
    big = {"role": "user", "content": "word " * 150}
    other = {"role": "user", "content": "other " * 150}
    with pytest.raises(tg.InvalidMessages) as info:
        counter.count([OK, big, other], model=model)
    assert info.value.index == 2
    assert "1,000" in str(info.value)
    # Text counted before costs nothing new: the same big message again is accepted.
    assert counter.count([OK, big, big], model=model) > 0
    with pytest.raises(tg.InvalidMessages, match="11 messages; at most 10"):
        counter.count([OK] * 11, model=model)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_one_rule_for_max_tokens_everywhere(bad: object) -> None:
    # The server refuses 0: counting, fitting and the guard refuse it alike, naming the field.
    for refuse in (
        lambda: tg.count_request([OK], model="llama3-8b-8192", max_tokens=bad),  # type: ignore[arg-type]
        lambda: tg.count_tokens([OK], model="llama3-8b-8192", max_completion_tokens=bad),
        lambda: tg.fit([OK], model="llama3-8b-8192", max_tokens=bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(tg.InvalidRequest, match=r"must be an int >= 1 or None") as info:
            refuse()
        assert info.value.field in ("max_tokens", "max_completion_tokens")
    assert tg.count_request([OK], model="llama3-8b-8192", max_tokens=1).completion_reserve == 1


def test_bad_model() -> None:
    with pytest.raises(tg.InvalidMessages, match="model must be a non-empty str"):
        tg.count_tokens([OK], model="")


def test_an_openai_object_that_is_not_a_message() -> None:
    from openai.types import CompletionUsage

    usage = CompletionUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    with pytest.raises(tg.InvalidMessages, match="no 'role'") as info:
        tg.count_tokens([OK, usage], model="llama3-8b-8192")
    assert info.value.index == 1


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
maybe_messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "assistant", "tool", "system", "x"]) | junk,
            "content": junk,
            "name": junk,
            "tool_calls": junk,
        },
    )
    | junk,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(messages=maybe_messages | junk, model=st.sampled_from(MODELS))
def test_any_input_either_counts_or_raises_invalid_messages(messages: Any, model: str) -> None:
    result = _outcome(messages, model)
    if isinstance(result, tg.InvalidMessages):
        assert result.problem
    else:
        assert result > 0


def _outcome(messages: Any, model: str) -> int | tg.InvalidMessages:
    try:
        return tg.count_tokens(messages, model=model)
    except tg.InvalidMessages as exc:
        return exc
