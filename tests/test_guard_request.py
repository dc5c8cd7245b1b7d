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


# -- a decorated function's arguments -------------------------------------------------


def _ask(
    messages: Any,
    model: str = "llama-3.1-8b-instant",
    max_tokens: Any = 64,
    max_completion_tokens: Any = None,
    stream: Any = False,
) -> Any:
    return None


def _bound_reading(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChatRequest:
    """The general reading of a call: bound by ``inspect``, defaults applied."""
    import inspect

    a = inspect.signature(_ask).bind(*args, **kwargs)
    a.apply_defaults()
    stream = a.arguments["stream"]
    return ChatRequest(
        messages=a.arguments["messages"],
        model=a.arguments["model"],
        max_tokens=asked_max_tokens(a.arguments),
        stream=stream is not None and given_value(stream) is True,
    )


_ARGS = (
    ("messages", st.just(MESSAGES)),
    ("model", st.sampled_from(["llama-3.1-8b-instant", "llama3-8b-8192"])),
    ("max_tokens", st.sampled_from([None, NOT_GIVEN, 1, 64, 2048])),
    ("max_completion_tokens", st.sampled_from([None, NOT_GIVEN, 5, 300])),
    ("stream", st.sampled_from([None, NOT_GIVEN, True, False])),
)


@given(data=st.data(), positional=st.integers(min_value=1, max_value=len(_ARGS)))
@settings(max_examples=200, deadline=None)
def test_a_decorated_call_reads_as_binding_its_arguments_does(
    data: st.DataObject, positional: int
) -> None:
    """Positional-only calls are read without ``_view`` and a plain ``max_tokens``
    without the full check: both must read as binding the arguments does."""
    from tokenguard._guard._decorator import _Binding
    from tokenguard._guard._options import make_options

    values = {name: data.draw(strategy, label=name) for name, strategy in _ARGS}
    given_names = [n for n, _ in _ARGS[positional:] if data.draw(st.booleans(), label=n)]
    args = tuple(values[n] for n, _ in _ARGS[:positional])
    kwargs = {n: values[n] for n in given_names}
    got = _Binding(_ask, make_options(), "_ask()").read(args, kwargs)
    assert got == _bound_reading(args, kwargs)
    assert dict(got.options) == {}
