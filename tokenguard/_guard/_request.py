"""What one guarded call asks, read once, and how the pipeline sends it.

A :class:`ChatRequest` holds what the pipeline needs of the call (messages, model,
``max_tokens``, stream, the keywords that change the prompt); a :class:`Sender` sends
it with the fitted messages and ``max_tokens`` in place of the originals. The decorator
and ``instrument`` each provide a sender; the pipeline does not know which it has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from ..counting._request_options import (
    BUDGET_KEYWORDS,
    PROMPT_KEYWORDS,
    TRANSPORT_KEYWORDS,
    check_completion_cap,
)
from ..counting._sendable import check_field, check_text_field
from ..errors import ConfigurationError, InvalidMessages, InvalidRequest

__all__ = [
    "NO_OPTIONS",
    "PROMPT_KEYWORDS",
    "ChatRequest",
    "Sender",
    "asked_max_tokens",
    "capped_extra",
    "check_max_tokens",
    "check_model",
    "check_other_fields",
    "format_as_sent",
    "given",
    "plain_request",
    "read_body",
]


#: The options of a call that gives none: one shared, read-only value.
NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class ChatRequest(NamedTuple):
    """One call as asked: ``max_tokens`` is ``max_completion_tokens`` when given (the
    SDKs send it over ``max_tokens``), ``None`` when the call gives neither.

    A named tuple rather than a frozen dataclass: one is built on every guarded call."""

    messages: Sequence[Any]
    model: str
    max_tokens: int | None = None
    stream: bool = False
    tools: Sequence[Any] | None = None
    functions: Sequence[Any] | None = None
    #: Other prompt keywords (``response_format``, ``reasoning_effort``, ...) for counting.
    options: Mapping[str, Any] = NO_OPTIONS
    #: The model the call asked for, when ``model`` is a fallback model sent instead.
    fallback_from: str | None = None


class Sender(Protocol):
    """Sends a request with fitted ``messages`` and ``max_tokens`` (``None``: as asked).

    ``raw_internal`` says the sender asked the SDK for the raw response itself (to read
    headers) and the caller wants the parsed value; ``site`` names the call site in events.
    """

    raw_internal: bool
    site: str

    def send(self, messages: list[Any], max_tokens: int | None) -> Any: ...

    def send_async(self, messages: list[Any], max_tokens: int | None) -> Awaitable[Any]:
        """The awaitable that sends (a coroutine function's call is one)."""
        ...

    def context_window(self, model: str) -> int | None: ...

    async def context_window_async(self, model: str) -> int | None: ...

    def for_model(self, model: str) -> Sender:
        """A sender of the same call to ``model`` (a fallback model); this one unchanged."""
        ...


def given(value: Any) -> Any:
    """``None`` for the SDKs' "not given" sentinels (``NOT_GIVEN``, ``omit``), else ``value``."""
    if value is None or type(value).__name__ in ("NotGiven", "Omit"):
        return None
    return value


def plain_request(messages: Any, model: Any, asked: int | None, stream: Any) -> ChatRequest:
    """The usual request: no tools, functions or prompt-changing options (built in one
    step, as every guarded call without them is)."""
    return ChatRequest(
        messages, model, asked, stream is not None and given(stream) is True, None, None, NO_OPTIONS
    )


def check_max_tokens(name: str, value: object) -> int | None:
    """``value`` as a completion budget, or a clear error (nothing is sent)."""
    return check_completion_cap(name, given(value))


def _caps_in(extra: object) -> bool:
    """Whether an ``extra_body`` sets a completion cap (the SDKs merge it over the body)."""
    return isinstance(extra, Mapping) and any(name in extra for name in BUDGET_KEYWORDS)


def asked_max_tokens(args: Mapping[str, Any]) -> int | None:
    """The completion cap a call's arguments ask for, checked: ``max_completion_tokens``
    over ``max_tokens`` (the SDKs send the newer one when both are given), each as the
    ``extra_body`` sets it when it does (the SDKs merge it over the body)."""
    extra = args.get("extra_body")
    if extra is not None and _caps_in(extra):
        args = {**args, **{name: extra[name] for name in BUDGET_KEYWORDS if name in extra}}
    asked = args.get("max_tokens")
    if asked is not None and (type(asked) is not int or asked < 1):
        asked = check_max_tokens("max_tokens", asked)
    newer = args.get("max_completion_tokens")
    if newer is not None:
        newer = check_max_tokens("max_completion_tokens", newer)
        if newer is not None:
            asked = newer
    return asked


def format_as_sent(fmt: Any) -> Any:
    """A ``response_format`` as the SDK sends it: ``parse`` (the openai SDK's structured
    outputs) takes a pydantic model and sends its strict JSON schema; anything else as
    it is."""
    if not isinstance(fmt, type):
        return fmt
    try:
        from openai.lib._parsing._completions import type_to_response_format_param
    except ImportError:  # an SDK without structured outputs: read as given
        return fmt
    return type_to_response_format_param(fmt)


def capped_extra(extra: Any, max_tokens: int) -> Any:
    """``extra`` (a call's ``extra_body``) with the completion caps it sets at
    ``max_tokens``, as the server must see them; any other ``extra`` as it is."""
    if not _caps_in(extra):
        return extra
    return {**extra, **{name: max_tokens for name in BUDGET_KEYWORDS if name in extra}}


def _messages(value: object, where: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidMessages(
            f"{where}: messages must be a list of chat messages, got {type(value).__name__}"
        )
    if not value:
        raise InvalidMessages(f"{where}: messages is empty; a chat request needs at least one")
    return value


def check_model(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{where}: no model: pass model=... to the call or to the guard, got {value!r}"
        )
    check_text_field(value, "model")
    return value


#: Body keywords whose values counting checks (or reads itself), and those the SDKs give
#: the HTTP client: every other one is checked here, before anything is counted or held.
_CHECKED_ELSEWHERE = (
    PROMPT_KEYWORDS
    | TRANSPORT_KEYWORDS
    | {
        "messages",
        "model",
        "max_tokens",
        "max_completion_tokens",
        "extra_body",
    }
)


def check_other_fields(body: Mapping[str, Any]) -> None:
    """Refuse a body keyword that counting does not see (``temperature``, ``user``,
    ``stop``, ``metadata``, ...) whose value the SDKs cannot send."""
    for name, value in body.items():
        if name not in _CHECKED_ELSEWHERE:
            check_field(value, name, str_keys=False)


def read_body(body: Mapping[str, Any], *, default_model: str | None, where: str) -> ChatRequest:
    """Read a ``chat.completions.create`` body (keywords as the SDKs take them).

    Example::

        >>> read_body({"messages": [{"role": "user", "content": "Hi"}],
        ...            "model": "llama-3.1-8b-instant", "max_tokens": 64},
        ...           default_model=None, where="create").max_tokens
        64
    """
    if "messages" not in body:
        raise InvalidMessages(f"{where}: no messages were given")
    messages = body["messages"]
    if type(messages) is not list or not messages:  # a plain list needs no more checks
        messages = _messages(messages, where)
    model = body.get("model")
    if type(model) is not str or not model or not model.isascii():
        model = check_model(given(model) or default_model, where)
    asked = asked_max_tokens(body)
    check_other_fields(body)
    named = PROMPT_KEYWORDS.intersection(body)
    extra = body.get("extra_body")
    if not named and extra is None:  # the usual call: nothing else changes the prompt
        return plain_request(messages, model, asked, body.get("stream"))
    options: dict[str, Any] = {}
    extra = given(extra)
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise InvalidRequest(
                f"{where}: extra_body must be a dict, got {type(extra).__name__}",
                field="extra_body",
            )
        options["extra_body"] = extra
    tools = functions = None
    # Only the keywords the call gives (a few) are looked at, not every prompt keyword.
    for name in named:
        value = given(body[name])
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
        messages=messages,
        model=model,
        max_tokens=asked,
        stream=stream is not None and given(stream) is True,
        tools=tools,
        functions=functions,
        options=options,
    )
