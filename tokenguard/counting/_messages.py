"""Reading chat messages in every form the SDKs accept, and rejecting malformed ones.

A message becomes a :class:`Message`: the role its header shows, the text its body
renders (before the template's ``strip``), the number of images, and whether a tool
form was involved. Dicts (including the openai SDK's TypedDict params) and the SDK's
pydantic models (``ChatCompletionMessage``) are read alike. Every problem raises
:class:`~tokenguard.errors.InvalidMessages` naming the message index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidMessages

__all__ = [
    "ROLES",
    "Message",
    "as_mapping",
    "check_text",
    "normalize_message",
    "render_tool_call",
    "render_tools",
]

#: Roles Groq's chat endpoint accepts. ``function`` is the legacy form of ``tool``.
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# The Llama 3.1 template shows tool results under the ``ipython`` header.
_HEADER_ROLE = {"tool": "ipython", "function": "ipython"}

_TEXT_PART_TYPES = frozenset({"text", "refusal"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


class Message(NamedTuple):
    """One message reduced to what counting needs."""

    header: str
    body: str
    images: int
    tool_form: bool
    name: str | None
    #: An assistant's own text when ``body`` is its tool calls instead: Meta's Llama 3.1
    #: template drops it, most others (Kimi's, Qwen's) write it before the calls.
    spoken: str = ""


def _type_name(value: object) -> str:
    return type(value).__name__


def as_mapping(value: object, index: int | None, what: str) -> Mapping[str, Any]:
    """``value`` as a mapping: dicts as they are, pydantic models through ``model_dump``."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump(exclude_none=True)
        except Exception as exc:  # a broken model is the caller's input problem
            raise InvalidMessages(f"{what} could not be read ({exc!r})", index=index) from exc
        if isinstance(dumped, Mapping):
            return dumped
    raise InvalidMessages(
        f"{what} must be a dict or an openai SDK message object, got {_type_name(value)}",
        index=index,
    )


def check_text(text: str, index: int | None, what: str) -> None:
    """Reject text that cannot be sent as UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessages(
            f"{what} contains a lone surrogate {text[exc.start]!r} at character {exc.start}; "
            "expected valid Unicode text",
            index=index,
        ) from None


def _content_text(content: object, index: int, role: str) -> tuple[str, int]:
    """The text the template renders for ``content`` and the number of images in it."""
    if isinstance(content, str):
        return content, 0
    if content is None:
        return "", 0
    if isinstance(content, (bytes, bytearray)) or not isinstance(content, Sequence):
        raise InvalidMessages(
            f"content has type {_type_name(content)}; expected a str, a list of content parts "
            "or None",
            index=index,
        )
    texts: list[str] = []
    images = 0
    for j, raw in enumerate(content):
        part = as_mapping(raw, index, f"content[{j}]")
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            text = part.get(kind)
            if not isinstance(text, str):
                raise InvalidMessages(
                    f"content[{j}] of type {kind!r} needs a str {kind!r} field, "
                    f"got {_type_name(text)}",
                    index=index,
                )
            texts.append(text)
        elif kind in _IMAGE_PART_TYPES:
            images += 1
        else:
            raise InvalidMessages(
                f"content[{j}] has type {kind!r}; expected 'text' or 'image_url'",
                index=index,
            )
    return "".join(texts), images


def render_tool_call(function: Mapping[str, Any], index: int, where: str) -> str:
    """One assistant tool call as the server renders it (Meta's 3.1 template).

    ``{"name": "NAME", "parameters": ARGS}`` where ARGS is the arguments string parsed
    and re-dumped with ``json.dumps`` (used verbatim when it is not valid JSON).
    """
    name = function.get("name")
    if not isinstance(name, str):
        raise InvalidMessages(
            f"{where} needs a str 'name', got {_type_name(name)}",
            index=index,
        )
    arguments = function.get("arguments", "")
    if isinstance(arguments, str):
        try:
            args_text = json.dumps(json.loads(arguments))
        except ValueError:
            args_text = arguments
    elif isinstance(arguments, Mapping):
        try:
            args_text = json.dumps(dict(arguments))
        except (TypeError, ValueError) as exc:
            raise InvalidMessages(
                f"{where} 'arguments' are not JSON-serializable ({exc})", index=index
            ) from None
    else:
        raise InvalidMessages(
            f"{where} 'arguments' must be a JSON str or a dict, got {_type_name(arguments)}",
            index=index,
        )
    return '{"name": "' + name + '", "parameters": ' + args_text + "}"


def _tool_calls_text(calls: object, index: int) -> str:
    if isinstance(calls, (str, bytes)) or not isinstance(calls, Sequence):
        raise InvalidMessages(
            f"tool_calls must be a list, got {_type_name(calls)}",
            index=index,
        )
    rendered: list[str] = []
    for j, raw in enumerate(calls):
        call = as_mapping(raw, index, f"tool_calls[{j}]")
        function = call.get("function")
        fn = as_mapping(function, index, f"tool_calls[{j}].function")
        rendered.append(render_tool_call(fn, index, f"tool_calls[{j}].function"))
    return "".join(rendered)


def normalize_message(raw: object, index: int) -> Message:
    """Validate one message and reduce it to a :class:`Message`."""
    message = as_mapping(raw, index, "message")
    role = message.get("role")
    if role is None:
        raise InvalidMessages("message has no 'role'; expected one of " + _roles(), index=index)
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidMessages(f"unknown role {role!r}; expected one of {_roles()}", index=index)
    if "content" not in message and role != "assistant":
        raise InvalidMessages(f"a {role!r} message needs 'content'", index=index)
    content = message.get("content")
    if content is None and role != "assistant":
        raise InvalidMessages(
            f"content is None; a {role!r} message needs a str or a list of content parts",
            index=index,
        )
    text, images = _content_text(content, index, role)
    tool_form = role in _HEADER_ROLE
    calls = message.get("tool_calls")
    legacy_call = message.get("function_call")
    if role != "assistant" and (calls or legacy_call):
        raise InvalidMessages(
            f"only assistant messages carry tool_calls, not {role!r}", index=index
        )
    spoken = ""
    if calls:
        # Llama 3.1's template renders the calls instead of the content.
        spoken, text = text, _tool_calls_text(calls, index)
        tool_form = True
    elif legacy_call:
        fn = as_mapping(legacy_call, index, "function_call")
        spoken, text = text, render_tool_call(fn, index, "function_call")
        tool_form = True
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidMessages(f"'name' must be a str, got {_type_name(name)}", index=index)
    if name is not None:
        check_text(name, index, "name")
    check_text(text, index, "content")
    if spoken:
        check_text(spoken, index, "content")
    return Message(_HEADER_ROLE.get(role, role), text, images, tool_form, name, spoken)


def _roles() -> str:
    return ", ".join(sorted(ROLES))


def render_tools(tools: object, functions: object) -> list[Any]:
    """Validate ``tools`` / legacy ``functions`` and return them as tool definitions."""
    defs: list[Any] = []
    for what, value in (("tools", tools), ("functions", functions)):
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidMessages(f"{what} must be a list of definitions, got {_type_name(value)}")
        for j, raw in enumerate(value):
            try:
                item = as_mapping(raw, None, f"{what}[{j}]")
            except InvalidMessages as exc:
                raise InvalidMessages(exc.problem) from None
            # Legacy functions are wrapped like tools: a slightly longer text, never shorter.
            defs.append(dict(item) if what == "tools" else {"type": "function", "function": item})
    try:
        json.dumps(defs)
    except (TypeError, ValueError) as exc:
        raise InvalidMessages(f"tool definitions are not JSON-serializable ({exc})") from None
    return defs
