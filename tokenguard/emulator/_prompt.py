"""Prompt billing as Groq does it for Llama 3.x: Groq's own templates, then the tokenizer.

The request is rendered into one string the way Groq's gateway does (``llama3.1`` for
Llama 3.1/3.3, GenericChat for the retired ``llama3``) and billed as BOS plus its tokens.
The templates, tools included, are drawn in docs/internals.md ("Llama 3.x").

Example::

    >>> count_prompt_tokens([{"role": "user", "content": "Hello"}], None, "llama3")
    11
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._tokenizer_data import get_encoding
from ._gojson import go_dumps

__all__ = [
    "CUTTING_KNOWLEDGE",
    "count_prompt_tokens",
    "count_text_tokens",
    "go_trim",
    "render_prompt",
]

BEGIN = "<|begin_of_text|>"
START = "<|start_header_id|>"
END = "<|end_header_id|>"
EOT = "<|eot_id|>"

CUTTING_KNOWLEDGE = "Cutting Knowledge Date: December 2023\nToday Date: 26 July 2024\n\n"
_FUNCTIONS_INTRO = "\nYou have access to the following functions:\n\n"
_GUIDE = (
    "\nThink very carefully before calling functions.\n"
    "If you choose to call a function ONLY reply in the following format with no prefix "
    "or suffix:\n\n"
    '<function=example_function_name>{"example_name": "example_value"}</function>\n\n'
    "Reminder:\n"
    "- If looking for real time information use relevant functions before falling back "
    "to brave_search\n"
    "- Function calls MUST follow the specified format, start with <function= and end "
    "with </function>\n"
    "- Required parameters MUST be specified\n"
    "{calls}\n"
    "- Put the entire function call reply on one line\n\n"
)
_PARALLEL = "- You can make multiple function calls, but put each function call on a separate line"
_SINGLE = "- Only call one function at a time"


def go_trim(text: str) -> str:
    """Go's ``strings.TrimSpace``: Python's blanks but the four separators \\x1c-\\x1f."""
    start, stop = 0, len(text)
    while start < stop and _go_blank(text[start]):
        start += 1
    while stop > start and _go_blank(text[stop - 1]):
        stop -= 1
    return text[start:stop]


def _go_blank(ch: str) -> bool:
    return ch.isspace() and not "\x1c" <= ch <= "\x1f"


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, the text parts of a list, or ``""``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type", "text") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)
    return str(content)


def tool_choice_parts(tool_choice: Any) -> tuple[str, str]:
    """``(mode, name)``: mode ``auto``, ``none``, ``required`` or ``named``."""
    if isinstance(tool_choice, Mapping):
        return "named", str((tool_choice.get("function") or {}).get("name", ""))
    if tool_choice in ("none", "required"):
        return str(tool_choice), ""
    return "auto", ""


def forced_sentence(mode: str, name: str) -> str:
    """The sentence Groq adds to the system block for a forced or refused tool choice."""
    return {
        "named": f"You must use the function {name} to answer the user query.",
        "required": "You must use at least one function to answer the user query.",
        "none": "For this specific request, you are NOT allowed to make any function "
        "calls. Simply answer the user query directly, without using any functions.",
    }.get(mode, "")


def function_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool's function as Go's struct holds it: name, description (or None), parameters."""
    fn = tool.get("function") or {}
    return {
        "name": fn.get("name", ""),
        "description": fn.get("description"),
        "parameters": fn.get("parameters"),
    }


def function_json(fn: Mapping[str, Any]) -> str:
    """Go's encoding of the function struct: fields in struct order, compact."""
    return (
        "{"
        + ",".join(f'"{k}":' + go_dumps(fn[k]) for k in ("name", "description", "parameters"))
        + "}"
    )


def _tool_prompt(tools: Sequence[Any], mode: str, name: str, parallel: bool) -> str:
    if not tools:
        return ""
    text = ""
    if mode != "none":
        text += _FUNCTIONS_INTRO
        for tool in tools:
            fn = function_of(tool)
            text += f"Use the function '{fn['name']}' to '{fn['description'] or ''}'\n"
            text += function_json(fn) + "\n\n"
        text += _GUIDE.replace("{calls}", _PARALLEL if parallel else _SINGLE)
    sentence = forced_sentence(mode, name)
    if sentence:
        text += sentence + "\n\n"
    return text


def _head(role: str) -> str:
    return f"{START}{role}{END}\n\n"


def _calls_text(message: Mapping[str, Any]) -> str:
    calls = message.get("tool_calls") or []
    lines = []
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args, separators=(",", ":"))
        lines.append(f"<function={fn.get('name', '')}>{args}</function>")
    return "\n".join(lines)


def _render_llama31(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    tool_choice: Any,
    parallel: bool,
) -> str:
    mode, name = tool_choice_parts(tool_choice)
    head = CUTTING_KNOWLEDGE + _tool_prompt(tools or [], mode, name, parallel)
    prefill = {"required": "<function=", "named": f"<function={name}>"}.get(mode, "")
    turns = list(messages)
    if prefill or turns[-1].get("role") != "assistant":
        turns.append({"role": "assistant", "content": prefill})
    system = ""
    body = ""
    for i, message in enumerate(turns):
        role = message.get("role")
        if role == "system":
            system += content_text(message.get("content")) + "\n"
        elif role == "user":
            body += _head("user") + content_text(message.get("content")) + EOT
        elif role == "assistant":
            if message.get("tool_calls"):
                text = _calls_text(message)
            else:
                text = content_text(message.get("content"))
            body += _head("assistant") + text + (EOT if i < len(turns) - 1 else "")
        elif role in ("tool", "function"):
            body += _head("ipython") + content_text(message.get("content")) + EOT
    system = go_trim(system)
    return _head("system") + head + system + EOT + body


def _render_generic(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    tool_choice: Any,
    parallel: bool,
) -> str:
    systems = [content_text(m.get("content")) for m in messages if m.get("role") == "system"]
    system = "\n".join(t for t in systems if t)
    mode, name = tool_choice_parts(tool_choice)
    tool_text = _tool_prompt(tools or [], mode, name, parallel)
    turns: list[tuple[str, str]] = []
    if system or tool_text:
        turns.append(("system", tool_text + system))
    previous = "assistant"
    for message in messages:
        role = str(message.get("role"))
        if role == "system":
            continue
        if role == previous and role in ("user", "assistant"):
            turns.append(("assistant" if role == "user" else "user", ""))
        previous = role
        if role == "assistant" and message.get("tool_calls"):
            turns.append(("assistant", _calls_text(message)))
        elif role in ("tool", "function"):
            turns.append(("user", content_text(message.get("content"))))
        else:
            turns.append((role, content_text(message.get("content"))))
    if not turns or turns[-1][0] != "assistant":
        turns.append(("assistant", ""))
    last = len(turns) - 1
    return "".join(_head(r) + t + (EOT if i < last else "") for i, (r, t) in enumerate(turns))


def render_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    template: str,
    *,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
) -> str:
    """The prompt string the server tokenizes (BOS included) for ``messages`` and tools.

    ``template`` is ``"llama3"`` or ``"llama3.1"`` (Llama 3.1 and 3.3 share it).
    """
    if template not in ("llama3", "llama3.1"):
        raise ValueError(f"template must be 'llama3' or 'llama3.1', got {template!r}")
    parallel = parallel_tool_calls is not False
    render = _render_llama31 if template == "llama3.1" else _render_generic
    return BEGIN + render(messages, tools, tool_choice, parallel)


# tiktoken's regex engine gives up (ValueError) on pathological inputs such as a million
# spaces; such text is then counted in slices, which may be off by a token per slice.
_SLICE = 50_000


def count_text_tokens(text: str, tokenizer: str = "llama3") -> int:
    """Tokens of ``text`` (special tokens allowed) with the ``llama3`` or ``llama4`` data."""
    encoding = get_encoding(tokenizer)
    try:
        return len(encoding.encode(text, allowed_special="all"))
    except ValueError:
        return sum(
            len(encoding.encode(text[i : i + _SLICE], allowed_special="all"))
            for i in range(0, len(text), _SLICE)
        )


def count_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    template: str = "llama3.1",
    *,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
) -> int:
    """Prompt tokens the emulator bills for ``messages`` (see the module docstring)."""
    text = render_prompt(
        messages,
        tools,
        template,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )
    return count_text_tokens(text)
