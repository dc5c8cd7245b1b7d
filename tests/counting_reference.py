"""An independent reference for prompt counts: Meta's chat templates rendered with Jinja.

The Llama 3 and Llama 3.1 templates below are Meta's official ``chat_template`` strings
(tokenizer_config.json of Meta-Llama-3-8B-Instruct and Llama-3.1-8B-Instruct), rendered
with jinja2 and encoded whole with the Llama 3 tokenizer (special tokens recognised),
which is how the server counts ``usage.prompt_tokens``. Where the server's stated rule
departs from Meta's template, the departure is marked ``SERVER RULE`` (tools in the
system block, tool results stripped, tool-call arguments re-dumped, several calls joined,
a Llama 3 system block for tools). Content given as parts is joined before rendering.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from tokenguard._tokenizer_data import get_encoding

__all__ = ["reference_count", "render_reference"]

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# Meta's Llama 3.1 template, whitespace-controlled exactly as published; the builtin-tool
# branches are dropped (Groq's OpenAI-style API has no builtin_tools) and the SERVER RULE
# changes are marked.
LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if not no_date %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- endif %}
{#- SERVER RULE: tools in the system block (tools_in_user_message = false) #}
{%- if tools is not none %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | pyjson4 }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or message.tool_calls) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif message.tool_calls %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {#- SERVER RULE: every call, joined; arguments re-dumped #}
        {%- for call in message.tool_calls %}
            {%- set tool_call = call.function %}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | redump }}
            {{- "}" }}
        {%- endfor %}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {#- SERVER RULE: the text, stripped (Meta's template would JSON-quote a string) #}
        {{- message.content | trim }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""  # noqa: E501


def _redump(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            return json.dumps(json.loads(arguments))
        except ValueError:
            return arguments
    return json.dumps(arguments)


_env = jinja2.Environment(autoescape=False)
_env.filters["pyjson4"] = lambda value: json.dumps(value, indent=4)
_env.filters["redump"] = _redump
_llama3 = _env.from_string(LLAMA3_TEMPLATE)
_llama31 = _env.from_string(LLAMA31_TEMPLATE)


def _plain(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p["text"] for p in content if p.get("type") == "text")
    elif content is None:
        content = ""
    out = {"role": message["role"], "content": content}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def render_reference(
    messages: Sequence[Mapping[str, Any]],
    template: str,
    tools: Sequence[Any] | None = None,
) -> str:
    """The prompt string for ``messages`` under ``template`` ("llama3" or "llama3.1")."""
    plain = [_plain(m) for m in messages]
    if template == "llama3.1":
        return _llama31.render(
            messages=plain,
            tools=tools or None,
            bos_token="<|begin_of_text|>",
            add_generation_prompt=True,
            no_date=False,
        )
    if tools or any(m["role"] == "tool" or m.get("tool_calls") for m in plain):
        # SERVER RULE: Llama 3 with tools gets the 3.1 system block without the dates.
        return (
            _llama31.render(
                messages=plain,
                tools=tools or None,
                bos_token="<|begin_of_text|>",
                add_generation_prompt=True,
                no_date=True,
            )
            if tools
            else _llama31.render(
                messages=[{"role": "user", "content": ""}],
                bos_token="",
                no_date=True,
            )
            and _llama3_with_tool_forms(plain)
        )
    return _llama3.render(messages=plain, bos_token="<|begin_of_text|>", add_generation_prompt=True)


def _llama3_with_tool_forms(plain: list[dict[str, Any]]) -> str:
    # Llama 3 has no tool syntax of its own; the server renders tool forms as 3.1 does.
    text = _llama31.render(
        messages=[{"role": "system", "content": ""}, *plain],
        tools=None,
        bos_token="<|begin_of_text|>",
        add_generation_prompt=True,
        no_date=True,
    )
    empty_block = "<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
    return text.replace(empty_block, "", 1)


def reference_count(
    messages: Sequence[Mapping[str, Any]],
    template: str,
    tools: Sequence[Any] | None = None,
) -> int:
    """Llama 3 tokens of the reference rendering, special tokens recognised."""
    text = render_reference(messages, template, tools)
    return len(get_encoding("llama3").encode(text, allowed_special="all"))
