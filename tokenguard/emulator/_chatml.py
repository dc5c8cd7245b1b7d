"""Qwen3 and Kimi K2 prompt counting as the server does it: the prompt rendered whole.

Groq's gateway normalisation (systems joined, alternation padded), then the model's chat
template, encoded at once: with Qwen's tokenizer for ``qwen3`` (exact), with o200k_base
standing in for Kimi's for ``kimi`` (a close bound). Written apart from the client's
counter, so that each checks the other (docs/internals.md, "Qwen3 and Kimi K2").

Example::

    >>> count_chatml_tokens([{"role": "user", "content": "hello"}], template="qwen3")
    9
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from .._tokenizer_data import get_encoding
from ._errors import invalid

__all__ = ["count_chatml_tokens", "render_kimi", "render_qwen3"]

_QWEN_TOOLS = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_QWEN_TOOLS_END = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_KIMI_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."
_KIMI_SPECIALS = (
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)


def _json(value: Any) -> str:
    out = json.dumps(value, ensure_ascii=False, sort_keys=True)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        out = out.replace(ch, esc)
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
    )


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return raw


def _normalized(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The gateway's normalisation: systems joined at the front, alternation padded."""
    system = ""
    out: list[dict[str, Any]] = []
    prev = "assistant"
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text(m.get("content"))
            system = system + "\n" + text if system else text
            continue
        role = "tool" if role == "function" else str(role)
        if role == prev and role in ("user", "assistant"):
            out.append(
                {"role": "assistant" if role == "user" else "user", "content": "", "calls": []}
            )
        prev = role
        calls = [
            (c["function"]["name"], _arguments(c["function"].get("arguments", "")), c.get("id"))
            for c in (m.get("tool_calls") or [])
        ]
        out.append(
            {
                "role": role,
                "content": _text(m.get("content")),
                "reasoning": m.get("reasoning"),
                "calls": calls,
                "tool_call_id": m.get("tool_call_id"),
            }
        )
    if system:
        out.insert(0, {"role": "system", "content": system})
    if not out or out[-1]["role"] == "assistant":
        out.append({"role": "user", "content": "", "calls": []})
    return out


def _tool_objects(tools: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The tools as the gateway passes them to the template; a tool without a function
    name is refused, as Groq refuses it."""
    out: list[dict[str, Any]] = []
    for j, tool in enumerate(tools or ()):
        fn = tool.get("function")
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid(f"'tools.{j}.function.name' : value must be a non-empty string")
        out.append(
            {
                "type": "function",
                "function": {
                    "name": fn["name"],
                    "description": fn.get("description") or "",
                    "parameters": fn.get("parameters"),
                },
            }
        )
    return out


def render_qwen3(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    reasoning_effort: str | None = None,
) -> str:
    """The whole Qwen3 prompt Groq renders for a request."""
    msgs = _normalized(messages)
    defs = _tool_objects(tools)
    parts: list[str] = []
    if msgs[0]["role"] == "system" or defs:
        sys_text = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        if defs:
            body = (sys_text + _QWEN_TOOLS if sys_text else _QWEN_TOOLS.lstrip("\n")) + "".join(
                "\n" + _json(d) for d in defs
            )
            sys_text = body + _QWEN_TOOLS_END
        parts.append(f"<|im_start|>system\n{sys_text}<|im_end|>\n")
    query = _qwen3_query(msgs)
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        role, content = m["role"], m["content"]
        if role == "system":
            continue
        if role == "user":
            parts.append(f"<|im_start|>user\n{content}<|im_end|>\n")
        elif role == "tool":
            # Consecutive tool results share one user turn.
            if i == 0 or msgs[i - 1]["role"] != "tool":
                parts.append("<|im_start|>user")
            parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if i == last or msgs[i + 1]["role"] != "tool":
                parts.append("<|im_end|>\n")
        else:
            parts.append(_qwen3_assistant(m, shows_thought=i > query, last=i == last))
    parts.append("<|im_start|>assistant\n")
    if reasoning_effort == "none":
        parts.append("<think>\n\n</think>\n\n")
    return "".join(parts)


def _qwen3_query(msgs: list[dict[str, Any]]) -> int:
    """The index of the newest user message that is not a wrapped tool response: the
    template shows the reasoning of the answers after it only."""
    for i in range(len(msgs) - 1, -1, -1):
        c = msgs[i]["content"]
        if msgs[i]["role"] == "user" and not (
            c.startswith("<tool_response>") and c.endswith("</tool_response>")
        ):
            return i
    return len(msgs) - 1


def _qwen3_assistant(m: dict[str, Any], *, shows_thought: bool, last: bool) -> str:
    """One assistant turn: its reasoning (shown after the query, when there is some or
    the turn is the last), its text and its tool calls."""
    content = m["content"]
    thought = m.get("reasoning")
    if thought is None:
        thought = ""
        if "</think>" in content:
            before = content.split("</think>")[0]
            thought = before.rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
    if shows_thought and (last or thought):
        shown = f"<think>\n{thought.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
    else:
        shown = content
    calls = "\n".join(
        '<tool_call>\n{"name": "'
        + name
        + '", "arguments": '
        + (args if isinstance(args, str) else _json(args))
        + "}\n</tool_call>"
        for name, args, _ in m["calls"]
    )
    if calls and content:
        calls = "\n" + calls
    return f"<|im_start|>assistant\n{shown}{calls}<|im_end|>\n"


def render_kimi(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None) -> str:
    """The whole Kimi K2 prompt Groq renders for a request (Kimi's template; a default
    system message when the request has none)."""
    msgs = _normalized(messages)
    out: list[str] = []
    defs = _tool_objects(tools)
    if defs:
        out.append(f"<|im_system|>tool_declare<|im_middle|>{_json(defs)}<|im_end|>")
    if msgs[0]["role"] != "system":
        out.append(f"<|im_system|>system<|im_middle|>{_KIMI_SYSTEM}<|im_end|>")
    # Ids as the gateway rewrites them: functions.NAME:N, N the first free number.
    used: set[int] = set()
    ids: dict[str, str] = {}
    for m in msgs:
        for j, (name, _, given) in enumerate(m.get("calls", [])):
            n = 0
            while n in used:
                n += 1
            used.add(n)
            kimi_id = f"functions.{name}:{n}"
            ids[given if given is not None else f"#{id(m)}-{j}"] = kimi_id
    for m in msgs:
        role, content = m["role"], m["content"]
        if role == "system":
            out.append(f"<|im_system|>system<|im_middle|>{content}<|im_end|>")
        elif role == "user":
            out.append(f"<|im_user|>user<|im_middle|>{content}<|im_end|>")
        elif role == "tool":
            answered = ids.get(m.get("tool_call_id") or "", "functions.unknown:0")
            out.append(
                f"<|im_system|>tool<|im_middle|>## Return of {answered}\n{content}<|im_end|>"
            )
        else:
            text = content
            if m["calls"]:
                text += "<|tool_calls_section_begin|>"
                for j, (_, args, given) in enumerate(m["calls"]):
                    kimi_id = ids[given if given is not None else f"#{id(m)}-{j}"]
                    shown = args if isinstance(args, str) else _json(args)
                    text += (
                        f"<|tool_call_begin|>{kimi_id}<|tool_call_argument_begin|>"
                        f"{shown}<|tool_call_end|>"
                    )
                text += "<|tool_calls_section_end|>"
            out.append(f"<|im_assistant|>assistant<|im_middle|>{text}<|im_end|>")
    out.append("<|im_assistant|>assistant<|im_middle|>")
    return "".join(out)


def count_chatml_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    template: str,
    reasoning_effort: str | None = None,
) -> int:
    """Prompt tokens of one request for a ``qwen3`` or ``kimi`` model."""
    if template == "qwen3":
        prompt = unicodedata.normalize(
            "NFC", render_qwen3(messages, tools, reasoning_effort=reasoning_effort)
        )
        return len(get_encoding("qwen3").encode(prompt, allowed_special="all"))
    prompt = render_kimi(messages, tools)
    enc = get_encoding("o200k_base")
    n = 0
    # o200k_base has none of Kimi's special tokens: each counts one, the text between
    # them is encoded as text.
    pieces = [prompt]
    for special in _KIMI_SPECIALS:
        split: list[str] = []
        for piece in pieces:
            chunks = piece.split(special)
            n += len(chunks) - 1
            split.extend(chunks)
        pieces = split
    return n + sum(len(enc.encode_ordinary(p)) for p in pieces if p)
