# ruff: noqa: E501  (the template is data, kept as published)
"""An independent reference for Qwen3 counts: Qwen3's stock chat template run by Jinja.

The template is the ``chat_template`` published with Qwen3-32B (tokenizer_config.json,
Apache-2.0), rendered as Groq's gateway renders it (lstrip_blocks, trim_blocks,
``add_generation_prompt``; ``enable_thinking`` only when given) from messages normalised
the way the gateway normalises them, with ``tojson`` writing sorted keys and ``<>&'``
escaped, then NFC and Qwen's tokenizer over the whole prompt.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from tokenguard._tokenizer_data import get_encoding

__all__ = ["qwen3_reference_count", "qwen3_reference_prompt"]

QWEN3_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


def _tojson(value: Any) -> str:
    out = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return (
        out.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


_ENV = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
_ENV.filters["tojson"] = _tojson
_TEMPLATE = _ENV.from_string(QWEN3_TEMPLATE)


def _gateway_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    systems = [m["content"] for m in messages if m["role"] == "system"]
    out: list[dict[str, Any]] = []
    prev = "assistant"
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] in ("user", "assistant") and m["role"] == prev:
            out.append({"role": "user" if prev == "assistant" else "assistant", "content": ""})
        prev = m["role"]
        item: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("reasoning") is not None:
            item["reasoning_content"] = m["reasoning"]
        if m.get("tool_calls"):
            item["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": json.loads(c["function"]["arguments"]),
                    },
                }
                for c in m["tool_calls"]
            ]
        out.append(item)
    joined = ""
    for text in systems:
        joined = joined + "\n" + text if joined else text
    if joined:
        out.insert(0, {"role": "system", "content": joined})
    if not out or out[-1]["role"] == "assistant":
        out.append({"role": "user", "content": ""})
    return out


def qwen3_reference_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> str:
    """The whole prompt Groq renders for a Qwen3 request (plain dict messages)."""
    data: dict[str, Any] = {
        "messages": _gateway_messages(messages),
        "add_generation_prompt": True,
        "bos_token": "",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description") or "",
                    "parameters": t["function"].get("parameters"),
                },
            }
            for t in tools or ()
        ]
        or None,
    }
    if reasoning_effort == "none":
        data["enable_thinking"] = False
    return str(_TEMPLATE.render(**data))


def qwen3_reference_count(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> int:
    """Tokens of :func:`qwen3_reference_prompt`, encoded whole as the server does."""
    prompt = unicodedata.normalize("NFC", qwen3_reference_prompt(messages, tools, reasoning_effort))
    return len(get_encoding("qwen3").encode(prompt, allowed_special="all"))
