"""Reading a ``chat.completions.create`` body: the usual call (no keyword that changes
the prompt) is read in one step; it must read exactly as the general reading does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai import NOT_GIVEN

from tokenguard._guard._request import ChatRequest, asked_max_tokens, read_body
from tokenguard._guard._request import given as given_value
from tokenguard.counting._request_options import PROMPT_KEYWORDS

MESSAGES = [{"role": "user", "content": "Hi"}]


def _general(body: dict[str, Any]) -> ChatRequest:
    """The general reading, written plainly: every prompt keyword looked at."""
    options: dict[str, Any] = {}
    extra = given_value(body.get("extra_body"))
    if extra is not None:
        options["extra_body"] = extra
    tools = functions = None
    for name in PROMPT_KEYWORDS:
        value = given_value(body.get(name))
        if value is None:
            continue
        if name == "tools":
            tools = value
        elif name == "functions":
            functions = value
        else:
            options[name] = value
    stream = body.get("stream")
    return ChatRequest(
        messages=body["messages"],
        model=body["model"],
        max_tokens=asked_max_tokens(body),
        stream=stream is not None and given_value(stream) is True,
        tools=tools,
        functions=functions,
        options=options,
    )


_VALUES = st.sampled_from([None, NOT_GIVEN, True, False, 7, "auto", {"type": "json_object"}])
_EXTRA = sorted({*PROMPT_KEYWORDS, "extra_body", "stream", "temperature", "user", "seed"})


@given(
    extra=st.dictionaries(st.sampled_from(_EXTRA), _VALUES, max_size=4),
    max_tokens=st.sampled_from([None, NOT_GIVEN, 1, 64]),
)
@settings(max_examples=200, deadline=None)
def test_a_body_reads_as_the_general_reading_does(extra: dict[str, Any], max_tokens: Any) -> None:
    body = {"messages": MESSAGES, "model": "llama-3.1-8b-instant", **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if not isinstance(body.get("extra_body", {}), (dict, type(None), type(NOT_GIVEN))):
        body.pop("extra_body")  # a bad extra_body is an error, tested elsewhere
    got = read_body(body, default_model=None, where="create")
    want = _general(body)
    assert got == want
    assert dict(got.options) == dict(want.options)
    assert type(got) is ChatRequest


def test_the_usual_call_is_read_with_no_options() -> None:
    req = read_body(
        {"messages": MESSAGES, "model": "m", "max_tokens": 16, "temperature": 0.2},
        default_model=None,
        where="create",
    )
    assert (req.messages, req.model, req.max_tokens, req.stream) == (MESSAGES, "m", 16, False)
    assert (req.tools, req.functions, dict(req.options)) == (None, None, {})
