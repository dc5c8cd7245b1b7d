"""gpt-oss prompt counting as the server does it: the harmony prompt, encoded whole.

The whole prompt is written as one string, special tokens included, and counted with
``o200k_harmony``; written apart from the client's counter on purpose, so that each
checks the other. The prompt's layout, and what is written where Groq's text is not
known, are in docs/internals.md ("gpt-oss").

Example::

    >>> count_harmony_tokens([{"role": "user", "content": "hello"}])
    72
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._tokenizer_data import get_encoding

__all__ = ["count_harmony_tokens", "render_harmony"]

_SYSTEM = (
    "You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: {date}\n\n"
    "Reasoning: {effort}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
_TOOLS_LINE = "\nCalls to these tools must go to the commentary channel: 'functions'."
#: Tokens Groq bills per tool whose parameters say ``"additionalProperties": false``
#: beyond harmony's rendering; the text is not known, so no text stands in for it.
CLOSED_OBJECT_TOKENS = 6
_JSON_OBJECT = (
    "# Response Formats\n\n## json_object\n\n"
    "// Reply with one valid JSON object only: no other text, no Markdown fences, no comments."
)
_KNOWN_KEYS = {
    "type",
    "properties",
    "required",
    "description",
    "title",
    "examples",
    "oneOf",
    "enum",
    "items",
    "nullable",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ts(schema: Any, pad: str) -> str:
    """TypeScript for a JSON schema, as harmony's renderer writes it."""
    if not isinstance(schema, Mapping):
        return "any"
    if isinstance(schema.get("oneOf"), list):
        text = ""
        for variant in schema["oneOf"]:
            text += f"\n{pad} | " + _variant(variant, pad)
            notes = []
            if isinstance(variant, Mapping) and isinstance(variant.get("description"), str):
                notes.append(variant["description"])
            if isinstance(variant, Mapping) and "default" in variant:
                value = variant["default"]
                enum = variant.get("enum")
                plain = isinstance(value, str) and not (isinstance(enum, list) and enum)
                notes.append(f'default: "{value}"' if plain else f"default: {_dump(value)}")
            if notes:
                text += " // " + " ".join(notes)
        return text
    kind = schema.get("type")
    if isinstance(kind, list) and any(isinstance(k, str) for k in kind):
        return " | ".join("number" if k == "integer" else k for k in kind if isinstance(k, str))
    if kind == "object":
        return _object(schema, pad)
    if kind == "string":
        names = [f'"{v}"' for v in schema.get("enum") or [] if isinstance(v, str)]
        return " | ".join(names) if names else "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = schema.get("items")
        return "Array<any>" if items is None else _ts(items, pad) + "[]"
    return "any"


def _variant(variant: Any, pad: str) -> str:
    text = _ts(variant, pad + "   ")
    if isinstance(variant, Mapping) and variant.get("nullable") is True and "null" not in text:
        text += " | null"
    return text


def _default(schema: Mapping[str, Any], value: Any) -> str:
    enum = schema.get("enum")
    if isinstance(value, str) and not (isinstance(enum, list) and enum):
        return f'default: "{value}"'
    return f"default: {value if isinstance(value, str) else _dump(value)}"


def _object(schema: Mapping[str, Any], pad: str) -> str:
    head = (
        f"{pad}// {schema['description']}\n" if isinstance(schema.get("description"), str) else ""
    )
    body = ""
    raw_required = schema.get("required")
    required: list[Any] = raw_required if isinstance(raw_required, list) else []
    props = schema.get("properties")
    for key, val in (props if isinstance(props, Mapping) else {}).items():
        prop = val if isinstance(val, Mapping) else {}
        opt = "" if key in required else "?"
        if isinstance(prop.get("title"), str):
            body += f"{pad}// {prop['title']}\n{pad}//\n"
        variants = prop.get("oneOf")
        if variants is None and isinstance(prop.get("description"), str):
            body += f"{pad}// {prop['description']}\n"
        if isinstance(prop.get("examples"), list) and prop["examples"]:
            body += f"{pad}// Examples:\n" + "".join(
                f'{pad}// - "{e}"\n' for e in prop["examples"] if isinstance(e, str)
            )
        if isinstance(variants, list):
            body += _one_of_property(key, opt, prop, variants, pad)
            continue
        line = f"{pad}{key}{opt}: {_variant(val, pad + ' ')},"
        if variants is None and "default" in prop:
            line += " // " + _default(prop, prop["default"])
        body += line + "\n"
    return head + "{\n" + body + pad + "}"


def _one_of_property(
    key: str, opt: str, prop: Mapping[str, Any], variants: list[Any], pad: str
) -> str:
    desc = prop.get("description") if isinstance(prop.get("description"), str) else None
    first = variants[0] if variants and isinstance(variants[0], Mapping) else {}
    shown = desc is not None and first.get("description") != desc
    text = f"{pad}// {desc}\n" if shown else ""
    if "default" in prop:
        text += f"{pad}// {_default(prop, prop['default'])}\n"
    text += f"{pad}{key}{opt}:\n"
    for i, variant in enumerate(variants):
        text += f"{pad} | " + _variant(variant, pad)
        notes = []
        vdesc = variant.get("description") if isinstance(variant, Mapping) else None
        if isinstance(vdesc, str) and vdesc != desc and not (i == 0 and shown):
            notes.append(vdesc)
        if isinstance(variant, Mapping) and "default" in variant:
            notes.append(_default(variant, variant["default"]))
        text += (" // " + " ".join(notes) if notes else "") + "\n"
    return text + f"{pad},\n"


def _unknown_keywords(schema: Any, top: bool) -> list[str]:
    """``// key: value`` lines for keywords whose rendering by Groq is not known."""
    if not isinstance(schema, Mapping):
        return []
    lines = []
    for key, value in schema.items():
        if key == "additionalProperties" and top and value is False:
            continue  # billed as a constant (see count_harmony_tokens)
        if key not in _KNOWN_KEYS or key == "default" or (key == "title" and top):
            lines.append(f"// {key}: {_dump(value)}")
    props = schema.get("properties")
    nested = list(props.values()) if isinstance(props, Mapping) else []
    if isinstance(schema.get("items"), Mapping):
        nested.append(schema["items"])
    if isinstance(schema.get("oneOf"), list):
        nested.extend(schema["oneOf"])
    for sub in nested:
        lines += _unknown_keywords(sub, False)
    return lines


def _tools_section(tools: Sequence[Any]) -> str:
    parts = ["# Tools\n\n## functions\n\nnamespace functions {\n"]
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else {}
        desc = fn.get("description") or ""
        # Rust's str::lines(): no line for a final "\n", a trailing "\r" dropped.
        lines = desc.split("\n")
        if desc.endswith("\n"):
            lines = lines[:-1]
        for line in lines if desc else []:
            parts.append("// " + line.removesuffix("\r"))
        params = fn.get("parameters")
        params_ts = "" if params is None else "_: " + _ts(params, "")
        extra = _unknown_keywords(params, True)
        extra += [
            f"// {k}: {_dump(v)}"
            for k, v in fn.items()
            if k not in _FN_KEYS and not (k == "strict" and v is False)
        ]
        parts.extend(extra)
        parts.append(f"type {fn.get('name')} = ({params_ts}) => any;\n")
    parts.append("} // namespace functions")
    return "\n".join(parts)


_FN_KEYS = {"name", "description", "parameters"}


def _response_format(fmt: Any) -> str:
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return ""
    if fmt.get("type") == "json_object":
        return _JSON_OBJECT
    raw = fmt.get("json_schema")
    spec: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    schema = json.dumps(spec.get("schema", {}))
    return (
        f"# Response Formats\n\n## {spec.get('name', '')}\n\n"
        f"// {spec.get('description', '')}\n{schema}"
    )


def render_harmony(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    reasoning_effort: str | None = None,
    response_format: Any = None,
    date: str = "2025-08-05",
) -> str:
    """The harmony prompt the emulator bills for a gpt-oss request (see the module doc)."""
    effort = reasoning_effort if reasoning_effort in ("low", "medium", "high") else "medium"
    system = _SYSTEM.format(date=date, effort=effort) + (_TOOLS_LINE if tools else "")
    out = [f"<|start|>system<|message|>{system}<|end|>"]
    rest = list(messages)
    sections = []
    if rest and rest[0].get("role") in ("system", "developer"):
        sections.append("# Instructions\n\n" + _text(rest.pop(0).get("content")))
    if tools:
        sections.append(_tools_section(tools))
    fmt = _response_format(response_format)
    if fmt:
        sections.append(fmt)
    out.append("<|start|>developer<|message|>" + "\n\n".join(sections) + "<|end|>")
    names: dict[str, str] = {}
    for message in rest:
        role = message.get("role")
        content = _text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                fn = call.get("function") or {}
                names[str(call.get("id"))] = str(fn.get("name"))
                out.append(
                    f"<|start|>assistant to=functions.{fn.get('name')}<|channel|>commentary json"
                    f"<|message|>{fn.get('arguments', '')}<|call|>"
                )
        elif role == "assistant":
            out.append(f"<|start|>assistant<|channel|>final<|message|>{content}<|end|>")
        elif role == "tool":
            name = names.get(str(message.get("tool_call_id")), "unknown")
            out.append(f"<|start|>functions.{name}<|message|>{content}<|end|>")
        elif role in ("system", "developer"):
            out.append(f"<|start|>developer<|message|># Instructions\n\n{content}<|end|>")
        else:
            out.append(f"<|start|>{role}<|message|>{content}<|end|>")
    out.append("<|start|>assistant")
    return "".join(out)


def count_harmony_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    reasoning_effort: str | None = None,
    response_format: Any = None,
) -> int:
    """Prompt tokens the emulator bills a gpt-oss request."""
    text = render_harmony(
        messages, tools, reasoning_effort=reasoning_effort, response_format=response_format
    )
    closed = sum(
        1
        for tool in tools or ()
        if isinstance(tool, Mapping)
        and isinstance(params := tool.get("function", tool).get("parameters"), Mapping)
        and params.get("additionalProperties") is False
    )
    encoded = get_encoding("o200k_harmony").encode(text, allowed_special="all")
    return len(encoded) + CLOSED_OBJECT_TOKENS * closed
