"""Exact counts for the Llama 3 family against an independent reference.

The reference is the emulator's server-side counting: Groq's Llama templates rendered
whole and encoded whole (``tokenguard.emulator._prompt``, written apart from the
counter). The counter sums cached per-message counts; these tests check that the sum
equals the whole encoding, including the corners where BPE pre-tokenization could merge
across pieces. Content is generated without blanks at its ends where the count must be
exact (whether Groq trims them is not confirmed; such text is counted as a bound, see
tests/test_llama_counting.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.emulator import count_prompt_tokens


def reference_count(
    messages: list[dict[str, Any]], template: str, tools: list[Any] | None = None
) -> int:
    return count_prompt_tokens(messages, tools, template)


LLAMA3 = ("llama3-8b-8192", "llama3-70b-8192")
LLAMA31 = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile")
MODELS = {m: "llama3" for m in LLAMA3} | {m: "llama3.1" for m in LLAMA31}

# Text that stresses the piece boundaries: blanks and newlines at either end, lone
# "\r", special-token lookalikes, digits, apostrophes, punctuation runs, non-Latin.
_TRICKY = [
    "",
    " ",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "\u00a0",
    "\u3000",
    "\x1c",  # str.isspace() but not a regex \s: stripped by the template, kept by regex
    "\x85",
    "\u2028",
    "\u180e",  # neither
    "\ufeff",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|begin_of_text|>",
    "<|",
    "|>",
    "'s",
    "'ll",
    "123456",
    "!!!",
    "}\n\n",
    "```python\n",
    "    ",
    "Привет",
    "日本語",
    "नमस्ते",
    "😀",
    "e\u0301",
]
texts = st.lists(
    st.one_of(
        st.sampled_from(_TRICKY),
        st.text(st.characters(codec="utf-8"), max_size=12),
    ),
    max_size=6,
).map(lambda parts: "".join(parts).strip())

roles = st.sampled_from(["system", "user", "assistant"])


@st.composite
def plain_messages(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(roles)
    text = draw(texts)
    if draw(st.booleans()):
        return {"role": role, "content": text}
    cut = draw(st.integers(0, len(text)))
    parts = [{"type": "text", "text": text[:cut]}, {"type": "text", "text": text[cut:]}]
    return {"role": role, "content": parts}


@st.composite
def tool_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    args = draw(
        st.one_of(
            st.dictionaries(
                st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
            ).map(json.dumps),
            texts,
        )
    )
    name = draw(st.from_regex(r"[a-z_]{1,10}", fullmatch=True))
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call] * draw(st.integers(1, 2))},
        {"role": "tool", "tool_call_id": "c1", "content": draw(texts)},
    ]


conversations = st.lists(plain_messages(), min_size=1, max_size=8)
tool_defs = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {
                    "name": st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
                    "description": texts,
                    "parameters": st.just({"type": "object", "properties": {}}),
                }
            ),
        }
    ),
    min_size=1,
    max_size=3,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("model", "template"), sorted(MODELS.items()))
def test_hello(model: str, template: str) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    expected = 11 if template == "llama3" else 36
    assert tg.count_tokens(messages, model=model) == expected
    assert reference_count(messages, template) == expected


@SETTINGS
@given(messages=conversations, model=st.sampled_from(sorted(MODELS)))
def test_plain_text_equals_the_jinja_reference_and_the_emulator(
    messages: list[dict[str, Any]], model: str
) -> None:
    template = MODELS[model]
    expected = reference_count(messages, template)
    assert count_prompt_tokens(messages, None, template) == expected
    counter = tg.Counter()
    assert counter.count(messages, model=model) == expected
    # Second time through the warm path (all counts cached), same answer.
    assert counter.count(messages, model=model) == expected
    rc = counter.count_request(messages, model=model)
    assert rc.exact
    assert rc.prompt_tokens == expected


@SETTINGS
@given(
    head=conversations,
    tools=tool_messages(),
    defs=st.none() | tool_defs,
    model=st.sampled_from(LLAMA31),
)
def test_tool_forms_equal_the_server_rule(
    head: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    defs: list[dict[str, Any]] | None,
    model: str,
) -> None:
    messages = [*head, *tools]
    expected = reference_count(messages, "llama3.1", defs)
    rc = tg.count_request(messages, model=model, tools=defs)
    assert rc.prompt_tokens == expected
    assert rc.exact


@SETTINGS
@given(messages=conversations, extra=plain_messages(), model=st.sampled_from(sorted(MODELS)))
def test_adding_a_message_never_lowers_the_count(
    messages: list[dict[str, Any]], extra: dict[str, Any], model: str
) -> None:
    before = tg.count_tokens(messages, model=model)
    after = tg.count_tokens([*messages, extra], model=model)
    # Not always more: an empty system message joins the system block as nothing, and an
    # empty last assistant message is the generation prompt itself.
    assert after >= before
    assert tg.count_tokens([extra, *messages], model=model) >= before


@SETTINGS
@given(messages=conversations, model=st.sampled_from(sorted(MODELS)))
def test_valid_input_never_raises_with_names_and_sdk_objects(
    messages: list[dict[str, Any]], model: str
) -> None:
    named = [{**m, "name": "someone"} for m in messages]
    # `name` is not rendered by the templates, so it costs nothing in an exact count.
    assert tg.count_tokens(named, model=model) == tg.count_tokens(messages, model=model)
    assert tg.count_tokens(tuple(messages), model=model) == reference_count(messages, MODELS[model])


def test_per_message_sums_hold_across_piece_boundaries() -> None:
    # Content whose edges would merge with the "\n\n" or the preamble if the pieces were
    # not separated: leading punctuation, digits after "2024\n\n", lookalike specials.
    bodies = ["!x", "}", "4", "\n\n\n", " \t lead", "trail \n", "<|eot_id|>x", "x<|eot_id|>"]
    for model, template in MODELS.items():
        for body in bodies:
            for role in ("system", "user"):
                messages = [{"role": role, "content": body}, {"role": "user", "content": body}]
                rc = tg.count_request(messages, model=model)
                expected = reference_count(messages, template)
                if body == body.strip():
                    assert (rc.prompt_tokens, rc.exact) == (expected, True), (model, body, role)
                else:  # trimmed or not: the larger count (a bound unless both agree)
                    assert rc.prompt_tokens >= expected, (model, body, role)


def test_special_token_lookalikes_count_as_the_server_counts_them() -> None:
    # The server encodes the rendered prompt with special tokens recognised, so
    # "<|eot_id|>" typed by a user is one token there, and here.
    plain = tg.count_tokens([{"role": "user", "content": "a b"}], model="llama3-8b-8192")
    tricky = tg.count_tokens([{"role": "user", "content": "a<|eot_id|>b"}], model="llama3-8b-8192")
    assert tricky == plain + 1  # "a" "<|eot_id|>" "b" against "a" " b"
    assert tricky == count_prompt_tokens(
        [{"role": "user", "content": "a<|eot_id|>b"}], None, "llama3"
    )


def test_openai_sdk_typed_messages_count_like_dicts() -> None:
    from openai.types.chat import (
        ChatCompletionMessage,
        ChatCompletionMessageParam,
    )
    from openai.types.chat.chat_completion_message_tool_call import (
        ChatCompletionMessageToolCall,
        Function,
    )

    params: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
    ]
    reply = ChatCompletionMessage(role="assistant", content="4")
    call = ChatCompletionMessage(
        role="assistant",
        content=None,
        tool_calls=[
            ChatCompletionMessageToolCall(
                id="c1", type="function", function=Function(name="add", arguments='{"a": 2}')
            )
        ],
    )
    as_dicts: list[dict[str, Any]] = [
        *params,  # type: ignore[list-item]
        {"role": "assistant", "content": "4"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2}'},
                }
            ],
        },
    ]
    for model, template in MODELS.items():
        expected = reference_count(as_dicts, template)
        assert tg.count_tokens([*params, reply, call], model=model) == expected


def test_llama3_tokenizer_marked_models_are_exact() -> None:
    info = tg.register_model(
        "my-llama-finetune", context_window=8_192, tokenizer="llama3", template="llama3.1"
    )
    try:
        assert info.exact
        messages = [{"role": "user", "content": "Hello there"}]
        rc = tg.count_request(messages, model="my-llama-finetune")
        assert rc.exact
        assert rc.prompt_tokens == reference_count(messages, "llama3.1")
    finally:
        from tokenguard.models import unregister_model

        unregister_model("my-llama-finetune")


def test_pathological_whitespace_is_counted_without_crashing() -> None:
    # tiktoken's regex engine overflows its stack on a million blanks in a row; both the
    # emulator and the counter then count in 50,000-character slices, whose boundaries
    # differ (whole prompt there, message here) by at most a token per slice.
    messages = [{"role": "user", "content": "a" + " " * 1_200_000 + "b"}]
    n = tg.Counter().count(messages, model="llama3-8b-8192")
    assert abs(n - count_prompt_tokens(messages, None, "llama3")) <= 1_200_000 // 50_000 + 1


@SETTINGS
@given(
    head=conversations,
    tools=tool_messages(),
    defs=st.none() | tool_defs,
    model=st.sampled_from([*sorted(MODELS), "openai/gpt-oss-20b", "qwen/qwen3-32b", "new-model"]),
)
def test_valid_input_never_raises_on_any_model(
    head: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    defs: list[dict[str, Any]] | None,
    model: str,
) -> None:
    messages = [*head, *tools]
    rc = tg.count_request(messages, model=model, tools=defs, max_tokens=16)
    assert rc.prompt_tokens > 0
    assert rc.total == rc.prompt_tokens + 16
