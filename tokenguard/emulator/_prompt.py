"""Prompt counting as the server does it: Meta's chat template, then the Llama 3 tokenizer.

The emulator renders the request into one string and counts
``len(get_encoding("llama3").encode(text, allowed_special="all"))``.

Llama 3 (``template="llama3"``: llama3-8b-8192, llama3-70b-8192)::

    <|begin_of_text|>
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content.strip()}<|eot_id|>   (per message)
    <|start_header_id|>assistant<|end_header_id|>\\n\\n                          (generation prompt)

Llama 3.1 / 3.3 (``template="llama3.1"``): the same, but the prompt always opens with one
system block whose text is ``Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n``
followed by the first message's stripped content when that message is a system message
(which is then consumed), so a request without a system message still pays for the block.

Details, following Meta's Llama 3.1 template:

- content given as a list of parts counts the text parts' texts joined with ``""``;
  ``name`` fields are ignored.
- with ``tools``, the system block text is ``Environment: ipython\\n`` + the date lines +
  ``_TOOLS_PREAMBLE`` + ``json.dumps(tool, indent=4) + "\\n\\n"`` per tool, then the system
  message. For ``template="llama3"`` the same text without the date lines is rendered as a
  system block at the start (consuming a leading system message likewise).
- an assistant message with ``tool_calls`` renders, instead of its content,
  ``{"name": "NAME", "parameters": ARGS}`` per call (calls joined with ``""``; ARGS is the
  arguments string parsed and re-dumped with ``json.dumps``; unparsable arguments are
  used verbatim).
- a ``tool`` message renders with header role ``ipython`` and its stripped content.

Example::

    >>> render_prompt([{"role": "user", "content": "Hello"}], None, "llama3")
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n'
    >>> count_prompt_tokens([{"role": "user", "content": "Hello"}], None, "llama3")
    11
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._tokenizer_data import get_encoding

__all__ = [
    "CUTTING_KNOWLEDGE",
    "count_prompt_tokens",
    "count_text_tokens",
    "render_prompt",
]

BEGIN = "<|begin_of_text|>"
START = "<|start_header_id|>"
END = "<|end_header_id|>"
EOT = "<|eot_id|>"

CUTTING_KNOWLEDGE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
_ENVIRONMENT = "Environment: ipython\n"
_TOOLS_PREAMBLE = (
    "You have access to the following functions. To call a function, please respond with "
    "JSON for a function call."
    'Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}."
    "Do not use variables.\n\n"
)


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


def _tool_call_text(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    name = function.get("name", "")
    arguments = function.get("arguments", "")
    if isinstance(arguments, str):
        try:
            args_text = json.dumps(json.loads(arguments))
        except ValueError:
            args_text = arguments
    else:
        args_text = json.dumps(arguments)
    return '{"name": "' + str(name) + '", "parameters": ' + args_text + "}"


def _block(role: str, text: str) -> str:
    return f"{START}{role}{END}\n\n{text}{EOT}"


def _tools_text(tools: Sequence[Any]) -> str:
    return _TOOLS_PREAMBLE + "".join(json.dumps(tool, indent=4) + "\n\n" for tool in tools)


def render_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    template: str,
) -> str:
    """The prompt string the server tokenizes for ``messages`` (and ``tools``).

    ``template`` is ``"llama3"`` or ``"llama3.1"`` (Llama 3.1 and 3.3 share it).
    """
    if template not in ("llama3", "llama3.1"):
        raise ValueError(f"template must be 'llama3' or 'llama3.1', got {template!r}")
    rest = list(messages)
    parts = [BEGIN]
    has_tools = bool(tools)
    if template == "llama3.1" or has_tools:
        system_text = ""
        if rest and rest[0].get("role") == "system":
            system_text = content_text(rest[0].get("content")).strip()
            rest = rest[1:]
        head = _ENVIRONMENT if has_tools else ""
        if template == "llama3.1":
            head += CUTTING_KNOWLEDGE
        if has_tools:
            assert tools is not None
            head += _tools_text(tools)
        parts.append(_block("system", head + system_text))
    for message in rest:
        role = str(message.get("role"))
        if role == "assistant" and message.get("tool_calls"):
            body = "".join(_tool_call_text(call) for call in message["tool_calls"])
            parts.append(_block("assistant", body))
        elif role == "tool":
            parts.append(_block("ipython", content_text(message.get("content")).strip()))
        else:
            parts.append(_block(role, content_text(message.get("content")).strip()))
    parts.append(f"{START}assistant{END}\n\n")
    return "".join(parts)


# tiktoken's regex engine gives up (ValueError) on pathological inputs such as a million
# spaces; such text is then counted in slices, which may be off by a token per slice.
_SLICE = 50_000


def count_text_tokens(text: str) -> int:
    """Llama 3 tokens in ``text``, special tokens allowed."""
    encoding = get_encoding("llama3")
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
) -> int:
    """Prompt tokens the emulator bills for ``messages`` (see the module docstring)."""
    return count_text_tokens(render_prompt(messages, tools, template))
