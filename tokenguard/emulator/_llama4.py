"""Prompt billing for Llama 4 Scout and Maverick as Groq does it (``quattro-v2``).

Rendered into one string as Groq's gateway does, then billed as BOS plus its tokens with
Meta's Llama 4 tokenizer (o200k_base, special tokens spelled out, without the
``groq-tokenguard[llama4]`` extra: more than Groq bills). The template is drawn in
docs/internals.md ("Llama 4").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken

from .._tokenizer_data import available, get_encoding
from ._gojson import go_dumps
from ._prompt import content_text, forced_sentence, function_of, go_trim, tool_choice_parts

__all__ = ["count_llama4_tokens", "render_llama4"]

HEADER_START = "<|header_start|>"
HEADER_END = "<|header_end|>"
EOT = "<|eot|>"

_GUIDE_FILE = "llama4_tool_guide.txt"


def _guide() -> str:
    from importlib.resources import files

    return (files(__package__) / _GUIDE_FILE).read_text(encoding="utf-8")


def _turn(role: str, text: str, *, close: bool = True) -> str:
    return f"{HEADER_START}{role}{HEADER_END}\n\n{text}" + (EOT if close else "")


def _functions(tools: Sequence[Any]) -> str:
    lines = []
    for tool in tools:
        fn = function_of(tool)
        ordered = ",".join(
            f'"{key}":' + go_dumps(fn[key]) for key in ("name", "description", "parameters")
        )
        lines.append("    {" + ordered + "}")
    return ",\n".join(lines)


def _tool_prompt(tools: Sequence[Any] | None, tool_choice: Any) -> str:
    mode, name = tool_choice_parts(tool_choice)
    if not tools or mode == "none":
        return ""
    text = _guide()
    text += "\nHere is a list of functions in JSON format that you can invoke:\n\n[\n"
    text += _functions(tools) + "\n]\n"
    sentence = forced_sentence(mode, name)
    return text + (f"\n{sentence}\n" if sentence else "")


def _calls(message: Mapping[str, Any]) -> str:
    entries = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments", "null")
        parameters = json.loads(args) if isinstance(args, str) else args
        entry = {"name": fn.get("name", ""), "parameters": parameters}
        entries.append("  " + go_dumps(entry, indent=2, prefix="  "))
    return "[\n" + ",\n".join(entries) + "\n]"


def render_llama4(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    tool_choice: Any = None,
) -> str:
    """The Llama 4 prompt Groq tokenizes, BOS included."""
    turns = list(messages)
    if turns[-1].get("role") != "assistant":
        turns.append({"role": "assistant", "content": ""})
    system = ""
    out = []
    awaiting_results = False
    i = 0
    while i < len(turns):
        message = turns[i]
        role = message.get("role")
        text = content_text(message.get("content"))
        if role == "system":
            system += text + "\n"
        elif role == "user":
            out.append(_turn("user", text))
        elif role == "assistant":
            if message.get("tool_calls"):
                awaiting_results = True
                text = _calls(message)
            out.append(_turn("assistant", text, close=i < len(turns) - 1))
        elif role in ("tool", "function"):
            if awaiting_results and turns[i - 1].get("role") == "assistant":
                results = []
                while i < len(turns) and turns[i].get("role") in ("tool", "function"):
                    results.append(content_text(turns[i].get("content")))
                    i += 1
                listed = ",\n".join('  {\n    "response": ' + r + "\n  }" for r in results)
                out.append(_turn("ipython", "[\n" + listed + "\n]"))
                awaiting_results = False
                continue
            out.append(_turn("ipython", text))
        i += 1
    system = go_trim(system)
    head = _tool_prompt(tools, tool_choice)
    block = _turn("system", head + system) if head or system else ""
    return "<|begin_of_text|>" + block + "".join(out)


def _encoding() -> tuple[tiktoken.Encoding, bool]:
    if available("llama4"):
        return get_encoding("llama4"), True
    return get_encoding("o200k_base"), False


def count_llama4_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    tool_choice: Any = None,
) -> int:
    """Prompt tokens the emulator bills for a Llama 4 request (see the module docstring)."""
    text = render_llama4(messages, tools, tool_choice)
    encoding, exact = _encoding()
    if exact:
        return len(encoding.encode(text, allowed_special="all"))
    return len(encoding.encode(text, disallowed_special=()))
