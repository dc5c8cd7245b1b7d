"""Checking a chat-completions request body the way Groq's schema validation does (400s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import ApiError, invalid

__all__ = ["ChatRequest", "check_roles", "parse_chat_request"]

_ROLES = ("system", "user", "assistant", "tool")
#: Roles only some chat templates take: gpt-oss (harmony) reads a ``developer`` message
#: as it reads a system one (shared GROQ.md, GROQ-RENDER.md); no other family is known to.
_TEMPLATE_ROLES = {"harmony": ("developer",)}
_ANY_TEMPLATE_ROLES = frozenset(r for roles in _TEMPLATE_ROLES.values() for r in roles)


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat request the emulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[Any] | None
    max_tokens: int | None
    stream: bool
    include_usage: bool
    #: Fields that change a gpt-oss prompt (harmony): the effort line, the response format.
    reasoning_effort: str | None = None
    response_format: Mapping[str, Any] | None = None
    #: Fields that change a Llama prompt: the forced sentence, the prefill, the guide line.
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_parts(content: list[Any], where: str) -> None:
    for j, part in enumerate(content):
        pwhere = f"{where}.content.{j}"
        if not isinstance(part, Mapping):
            raise invalid(f"'{pwhere}' : value must be an object")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"'{pwhere}.text' : value must be a string")
        elif kind == "image_url":
            raise invalid(f"'{pwhere}' : image input is not supported by this model")
        else:
            raise invalid(f"'{pwhere}' : discriminator property 'type' has invalid value")


def _check_content(message: Mapping[str, Any], where: str, *, optional: bool) -> None:
    if "content" not in message or message["content"] is None:
        if optional:
            return
        raise invalid(f"'{where}' : property 'content' is missing")
    content = message["content"]
    if isinstance(content, str):
        return
    if isinstance(content, list):
        _check_parts(content, where)
        return
    raise invalid(f"'{where}.content' : value must be a string or an array of content parts")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise invalid(f"'{where}.tool_calls' : value must be an array")
    for j, call in enumerate(calls):
        cwhere = f"{where}.tool_calls.{j}"
        if not isinstance(call, Mapping):
            raise invalid(f"'{cwhere}' : value must be an object")
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise invalid(f"'{cwhere}' : property 'function' is missing")
        if not isinstance(function.get("name"), str):
            raise invalid(f"'{cwhere}.function.name' : value must be a string")
        if not isinstance(function.get("arguments", ""), str):
            raise invalid(f"'{cwhere}.function.arguments' : value must be a string")


def _check_message(message: Any, i: int) -> dict[str, Any]:
    where = f"messages.{i}"
    if not isinstance(message, Mapping):
        raise invalid(f"'{where}' : value must be an object")
    role = message.get("role")
    if role is None:
        raise invalid(f"'{where}' : property 'role' is missing")
    if role not in _ROLES and role not in _ANY_TEMPLATE_ROLES:
        raise _bad_role(i)
    has_calls = role == "assistant" and message.get("tool_calls") is not None
    if has_calls:
        _check_tool_calls(message["tool_calls"], where)
    _check_content(message, where, optional=role == "assistant")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid(f"'{where}' : property 'tool_call_id' is missing")
    if "name" in message and message["name"] is not None and not isinstance(message["name"], str):
        raise invalid(f"'{where}.name' : value must be a string")
    return dict(message)


def _bad_role(i: int) -> ApiError:
    return invalid(f"'messages.{i}' : discriminator property 'role' has invalid value")


def check_roles(messages: Sequence[Mapping[str, Any]], template: str) -> None:
    """Refuse (400) a message whose role the model's chat ``template`` does not take."""
    extra = _TEMPLATE_ROLES.get(template, ())
    for i, message in enumerate(messages):
        role = message["role"]
        if role not in _ROLES and role not in extra:
            raise _bad_role(i)


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise invalid(f"'{key}' : value must be an integer", param=key)
    if value < 1:
        raise invalid(f"'{key}' : number must be at least 1", param=key)
    return int(value)


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate ``body`` (decoded JSON); raise ``ApiError`` (400) naming the first problem."""
    if not isinstance(body, Mapping):
        raise invalid("request body must be a JSON object")
    model = _model(body)
    messages = _messages(body)
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools)
    ):
        raise invalid("'tools' : value must be an array of objects", param="tools")
    max_tokens = _optional_int(body, "max_tokens")
    max_completion = _optional_int(body, "max_completion_tokens")
    _check_n(body.get("n"))
    stream, include_usage = _stream(body)
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in ("none", "default", "low", "medium", "high"):
        raise invalid(
            "'reasoning_effort' : value must be one of none, default, low, medium, high",
            param="reasoning_effort",
        )
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, Mapping)
        or response_format.get("type") not in ("text", "json_object", "json_schema")
    ):
        raise invalid(
            "'response_format.type' : value must be one of text, json_object, json_schema",
            param="response_format",
        )
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid(
            "'parallel_tool_calls' : value must be a boolean", param="parallel_tool_calls"
        )
    return ChatRequest(
        model=model,
        messages=messages,
        tools=list(tools) if tools else None,
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stream=stream,
        include_usage=include_usage,
        reasoning_effort=effort,
        response_format=response_format,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
    )


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise invalid("'model' : property 'model' is missing", param="model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' : value must be a non-empty string", param="model")
    return model


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "messages" not in body:
        raise invalid("'messages' : property 'messages' is missing", param="messages")
    raw_messages = body["messages"]
    if not isinstance(raw_messages, list):
        raise invalid("'messages' : value must be an array", param="messages")
    if not raw_messages:
        raise invalid("'messages' : minimum number of items is 1", param="messages")
    return [_check_message(m, i) for i, m in enumerate(raw_messages)]


def _check_n(n: Any) -> None:
    """Groq serves one choice per request: ``n`` may only be 1."""
    if n is None:
        return
    if not _is_int(n):
        raise invalid("'n' : value must be an integer", param="n")
    if n > 1:
        raise invalid("'n' : number must be at most 1", param="n")
    if n < 1:
        raise invalid("'n' : number must be at least 1", param="n")


def _stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(stream, include_usage)``, checked."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' : value must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, Mapping):
        raise invalid("'stream_options' : value must be an object", param="stream_options")
    flag = options.get("include_usage", False)
    if not isinstance(flag, bool):
        raise invalid(
            "'stream_options.include_usage' : value must be a boolean", param="stream_options"
        )
    return stream, flag


def _tool_choice(value: Any, tools: Any) -> str | Mapping[str, Any] | None:
    """``tool_choice`` checked: a mode, or a function that is among the tools."""
    if value is None or value in ("auto", "none", "required"):
        return value  # type: ignore[no-any-return]
    function = value.get("function") if isinstance(value, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise invalid(
            "'tool_choice' : value must be one of none, auto, required or a named function",
            param="tool_choice",
        )
    names = [((t.get("function") or {}).get("name")) for t in tools or []]
    if name not in names:
        raise invalid(f"tool_choice function {name!r} is not among the tools", param="tool_choice")
    return value  # type: ignore[no-any-return]
