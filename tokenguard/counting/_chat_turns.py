"""Requests as Groq's gateway hands them to a Hugging Face chat template (Qwen3, Kimi K2).

Both families go through the same path of the gateway: each message is reduced to its
role, its text (content parts joined with nothing between them), the ``reasoning`` of an
assistant turn, its tool calls (arguments parsed to a JSON object) and the id a tool
result answers. Then the conversation is normalised: every system message is joined by
``"\\n"`` into one system message at the front (dropped when empty), an empty assistant
turn is put between two user turns and an empty user turn before an assistant turn that
follows an assistant turn (or opens the conversation), and an empty user turn closes a
conversation that ends on an assistant turn. Each :class:`Turn` remembers which request
message it came from (``source``), so a meter can charge what the template writes for it
to that message.

Invariant: every problem in a request raises :class:`~tokenguard.errors.InvalidMessages`
naming the message or tool, before anything is counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidMessages
from ._messages import as_mapping, check_text, normalize_message, render_tools

__all__ = [
    "Call",
    "Tool",
    "Turn",
    "check_tool_choice",
    "function_definitions",
    "html_escaped",
    "normalize_turns",
    "read_function",
    "read_tools",
    "tojson",
]

#: The templates' ``tojson`` escapes these as minijinja does (a longer text: the safe side).
_HTML_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"})


def html_escaped(text: str) -> str:
    """``text`` with ``<>&'`` escaped as the templates' ``tojson`` escapes them."""
    return text.translate(_HTML_ESCAPES)


def tojson(value: Any) -> str:
    """``value | tojson`` as Groq's template engine writes it: sorted keys, Python's
    separators, non-ASCII kept, ``<>&'`` escaped."""
    return html_escaped(json.dumps(value, ensure_ascii=False, sort_keys=True))


class Call(NamedTuple):
    """One assistant tool call: its name, its arguments parsed, and the id the caller gave."""

    name: str
    arguments: Any
    id: str | None
    #: Whether the arguments are a JSON object (what Groq accepts).
    valid: bool = True


class Turn(NamedTuple):
    """One message of the normalised conversation (``source`` -1: inserted by the gateway)."""

    role: str
    text: str
    source: int
    reasoning: str | None = None
    calls: tuple[Call, ...] = ()
    tool_call_id: str | None = None
    images: int = 0


class Tool(NamedTuple):
    """One function tool as the gateway passes it to the template."""

    name: str
    description: str
    parameters: Any

    def as_json_value(self) -> dict[str, Any]:
        """The object the template's ``tojson`` writes for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def read_tools(tools: object, functions: object) -> list[Tool]:
    """Validate ``tools`` and legacy ``functions``; a tool without a name is refused."""
    return [read_function(fn, where) for where, fn in function_definitions(tools, functions)]


def function_definitions(tools: object, functions: object) -> list[tuple[str, Mapping[str, Any]]]:
    """Each function definition of ``tools`` (their ``function``) and legacy ``functions``,
    with where it is (``tools[0].function``), after the shape checks every family shares."""
    render_tools(tools, functions)
    found: list[tuple[str, Mapping[str, Any]]] = []
    for what, value in (("tools", tools), ("functions", functions)):
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidMessages(
                f"{what} must be a list of definitions, got {type(value).__name__}"
            )
        for j, raw in enumerate(value):
            where = f"{what}[{j}]"
            try:
                item = as_mapping(raw, None, where)
                if what == "tools":
                    kind = item.get("type", "function")
                    if kind != "function":
                        raise InvalidMessages(f"{where} has type {kind!r}; expected 'function'")
                    fn = as_mapping(item.get("function"), None, f"{where}.function")
                    where += ".function"
                else:
                    fn = item
            except InvalidMessages as exc:
                raise InvalidMessages(exc.problem) from None
            found.append((where, fn))
    return found


def read_function(fn: Mapping[str, Any], where: str) -> Tool:
    """One function definition, checked: a non-empty str name, a str description (or
    none), JSON-serializable parameters; text that can be sent."""
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidMessages(f"{where} needs a non-empty str 'name', got {name!r}")
    description = fn.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise InvalidMessages(
            f"{where} 'description' must be a str, got {type(description).__name__}"
        )
    parameters = fn.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise InvalidMessages(
            f"{where} 'parameters' must be a JSON schema dict, got {type(parameters).__name__}"
        )
    try:
        json.dumps(parameters)
    except (TypeError, ValueError) as exc:
        raise InvalidMessages(f"{where} 'parameters' are not JSON-serializable ({exc})") from None
    check_text(name, None, f"{where} name")
    check_text(description, None, f"{where} description")
    return Tool(name, description, parameters)


def check_tool_choice(tool_choice: object, names: Sequence[str]) -> None:
    """Refuse a ``tool_choice`` the server would refuse: an unknown word, or a named tool
    that is not among ``tools``. (The template itself ignores the choice.)"""
    if tool_choice is None:
        return
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise InvalidMessages(
                f"tool_choice {tool_choice!r} is not one of 'auto', 'none', 'required' "
                "or a named function"
            )
        if tool_choice == "required" and not names:
            raise InvalidMessages("tool_choice 'required' needs at least one tool")
        return
    choice = as_mapping(tool_choice, None, "tool_choice")
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidMessages(
            "tool_choice must name a function as {'type': 'function', 'function': {'name': ...}}"
        )
    if name not in names:
        known = ", ".join(repr(n) for n in names) or "none"
        raise InvalidMessages(
            f"tool_choice names the function {name!r}, which is not among the tools "
            f"(given: {known})"
        )


def _arguments(value: object) -> tuple[Any, bool]:
    """Call arguments as the gateway passes them (a JSON object parsed from the str), and
    whether they are one. Groq refuses anything else; it is counted as written (a bound)."""
    if not isinstance(value, str):
        return value, isinstance(value, Mapping)
    try:
        parsed = json.loads(value) if value.strip() else {}
    except ValueError:
        return value, False
    return parsed, isinstance(parsed, Mapping)


def _read_calls(message: Mapping[str, Any], index: int) -> tuple[Call, ...]:
    raw_calls = message.get("tool_calls")
    calls: list[Call] = []
    if raw_calls:
        for j, raw in enumerate(raw_calls):
            call = as_mapping(raw, index, f"tool_calls[{j}]")
            fn = as_mapping(call.get("function"), index, f"tool_calls[{j}].function")
            call_id = call.get("id")
            args, ok = _arguments(fn.get("arguments", ""))
            calls.append(Call(fn["name"], args, call_id if isinstance(call_id, str) else None, ok))
    elif message.get("function_call"):
        fn = as_mapping(message["function_call"], index, "function_call")
        args, ok = _arguments(fn.get("arguments", ""))
        calls.append(Call(fn["name"], args, None, ok))
    return tuple(calls)


def _read(raw: object, index: int) -> Turn:
    # The shared reader checks roles, content types, tool-call shapes and names.
    base = normalize_message(raw, index)
    message = as_mapping(raw, index, "message")
    role = message["role"]
    if role == "developer":
        role = "system"
    elif role == "function":
        role = "tool"
    text = _content_text(message.get("content"))
    check_text(text, index, "content")
    reasoning = None
    calls: tuple[Call, ...] = ()
    if role == "assistant":
        value = message.get("reasoning")
        if value is not None:
            if not isinstance(value, str):
                raise InvalidMessages(
                    f"'reasoning' must be a str, got {type(value).__name__}", index=index
                )
            check_text(value, index, "reasoning")
            reasoning = value
        calls = _read_calls(message, index)
    call_id = message.get("tool_call_id") if role == "tool" else None
    if call_id is not None and not isinstance(call_id, str):
        raise InvalidMessages(
            f"'tool_call_id' must be a str, got {type(call_id).__name__}", index=index
        )
    return Turn(role, text, index, reasoning, calls, call_id, base.images)


def _content_text(content: object) -> str:
    """The text parts of ``content`` joined with nothing between them (images left out)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts: list[str] = []
    for raw in content if isinstance(content, Sequence) else ():
        part = raw if isinstance(raw, Mapping) else as_mapping(raw, None, "content part")
        kind = part.get("type")
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            parts.append(part[kind])
    return "".join(parts)


def normalize_turns(messages: Sequence[Any]) -> tuple[list[Turn], list[Turn]]:
    """Read ``messages`` and normalise them as the gateway does (see the module docstring).

    Returns the normalised turns and the request's system messages as they were given
    (their joined text is the first turn's).
    """
    systems: list[Turn] = []
    turns: list[Turn] = []
    previous = "assistant"
    for index, raw in enumerate(messages):
        turn = _read(raw, index)
        if turn.role == "system":
            systems.append(turn)
            continue
        if turn.role == "user" and previous == "user":
            turns.append(Turn("assistant", "", index))
        elif turn.role == "assistant" and previous == "assistant":
            turns.append(Turn("user", "", index))
        previous = turn.role
        turns.append(turn)
    # Joined as the gateway joins them: an empty text adds no line while nothing is written.
    joined = ""
    for system in systems:
        joined = f"{joined}\n{system.text}" if joined else system.text
    if joined:
        turns.insert(0, Turn("system", joined, systems[0].source))
    if not turns or turns[-1].role == "assistant":
        # Charged to the message that made it necessary (the last one).
        turns.append(Turn("user", "", len(messages) - 1))
    return turns, systems
