"""gpt-oss prompts as Groq bills them: OpenAI's harmony format as token arithmetic.

Each piece of text between two special tokens is encoded alone, so ``total = overhead +
tools + sum(message costs)`` exactly; where Groq's rendering is not known the cost is an
upper bound and the count is marked inexact. Pure: the caller gives the function that
counts a text's o200k tokens. The rule and its sources: docs/counting-internals.md.

Example::

    >>> from tokenguard._tokenizer_data import get_encoding
    >>> enc = get_encoding("o200k_base")
    >>> h = HarmonyRules(lambda text: len(enc.encode_ordinary(text)))
    >>> h.count([{"role": "user", "content": "hello"}]).total
    72
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidMessages
from ._chat_turns import check_tool_choice, function_definitions, read_function
from ._messages import as_mapping, normalize_message
from ._request_options import response_format_allowance

__all__ = [
    "HarmonyCount",
    "HarmonyRules",
    "ToolSpec",
    "read_tools",
    "render_tools_section",
    "schema_to_typescript",
    "system_text",
]

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
# Any ISO date costs the same 10 tokens; the server writes today's, a pure module cannot.
CURRENT_DATE = "2025-08-05"
CHANNELS_LINE = (
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
TOOLS_CHANNEL_LINE = "Calls to these tools must go to the commentary channel: 'functions'."
REASONING_EFFORTS = ("low", "medium", "high")

#: Groq bills this many tokens more per tool whose parameters schema says
#: ``"additionalProperties": false`` than harmony renders (the text is not known).
ADDITIONAL_PROPERTIES_FALSE = 6
#: The size of an empty developer message (``<|start|>developer<|message|><|end|>``),
#: which Groq bills when a request has neither a system message nor tools.
EMPTY_DEVELOPER = 4
#: Upper bounds where the rendering is unknown (see the module docstring).
UNMATCHED_RESULT_MARGIN = 8
LATE_SYSTEM_MARGIN = 2

# Keys of a JSON schema node that harmony's renderer uses (``default`` is rendered too,
# but Groq bills more than harmony's rendering where it appears, so it is also bounded).
_RENDERED_KEYS = frozenset(
    {"type", "properties", "required", "description", "title", "examples", "oneOf", "enum"}
    | {"items", "nullable", "default"}
)
_FUNCTION_KEYS = frozenset({"name", "description", "parameters"})


class ToolSpec(NamedTuple):
    """One function tool as harmony renders it."""

    name: str
    description: str
    parameters: Mapping[str, Any] | None
    #: Tokens Groq bills beyond harmony's rendering that are known exactly (the +6).
    extra: int
    #: ``(keyword, value)`` pairs whose rendering is unknown; each is bounded.
    unexplained: tuple[tuple[str, Any], ...]


class HarmonyCount(NamedTuple):
    """One request's prompt tokens, decomposed: ``total = overhead + tools + sum(messages)``."""

    messages: tuple[int, ...]
    overhead: int
    tools: int
    total: int
    exact: bool
    #: The part of ``total`` that is an upper-bound allowance rather than rendered text
    #: (0 when ``exact``); calibration never shrinks it (docs/qwen-kimi.md).
    allowance: int = 0
    #: Whether ``tools`` alone is exact (a bound elsewhere does not make it one).
    tools_exact: bool = True


# -- rendering the tools (a port of openai-harmony's JSON schema to TypeScript) ----------


def _rust_lines(text: str) -> list[str]:
    """``str::lines`` of Rust: split at ``\\n``, drop one trailing ``\\r``, no last empty line."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _json_compact(value: Any) -> str:
    # serde_json's Display: no spaces, non-ASCII kept.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_enum(schema: Mapping[str, Any]) -> bool:
    values = schema.get("enum")
    return isinstance(values, list) and bool(values)


def _default_comment(schema: Mapping[str, Any], default: Any) -> str:
    if isinstance(default, str):
        return f'default: "{default}"' if not _is_enum(schema) else f"default: {default}"
    return f"default: {_json_compact(default)}"


def _nullable(variant: Any, type_str: str) -> str:
    if isinstance(variant, Mapping) and variant.get("nullable") is True and "null" not in type_str:
        return f"{type_str} | null"
    return type_str


def _get(schema: Any, key: str) -> Any:
    return schema.get(key) if isinstance(schema, Mapping) else None


def schema_to_typescript(schema: Any, indent: str = "") -> str:
    """A JSON schema as the TypeScript type harmony writes for it (openai-harmony 0.0.8)."""
    one_of = _get(schema, "oneOf")
    if isinstance(one_of, list):
        out: list[str] = []
        for variant in one_of:
            out.append(f"\n{indent} | ")
            out.append(_nullable(variant, schema_to_typescript(variant, indent + "   ")))
            comments: list[str] = []
            desc = _get(variant, "description")
            if isinstance(desc, str):
                comments.append(desc)
            if isinstance(variant, Mapping) and "default" in variant:
                # Harmony quotes a string default here even for enums only when not an enum.
                default = variant["default"]
                if isinstance(default, str) and not _is_enum(variant):
                    comments.append(f'default: "{default}"')
                else:
                    comments.append(f"default: {_json_compact(default)}")
            if comments:
                out.append(" // " + " ".join(comments))
        return "".join(out)
    kind = _get(schema, "type")
    if isinstance(kind, list):
        names = ["number" if k == "integer" else k for k in kind if isinstance(k, str)]
        if names:
            return " | ".join(names)
    if not isinstance(kind, str):
        return "any"
    assert isinstance(schema, Mapping)
    if kind == "object":
        return _object_to_typescript(schema, indent)
    if kind == "string":
        values = schema.get("enum")
        if isinstance(values, list):
            quoted = [f'"{v}"' for v in values if isinstance(v, str)]
            if quoted:
                return " | ".join(quoted)
        return "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        if "items" in schema and schema["items"] is not None:
            return schema_to_typescript(schema["items"], indent) + "[]"
        return "Array<any>"
    return "any"


def _object_to_typescript(schema: Mapping[str, Any], indent: str) -> str:
    out: list[str] = []
    desc = schema.get("description")
    if isinstance(desc, str):
        out.append(f"{indent}// {desc}\n")
    out.append("{\n")
    props = schema.get("properties")
    if isinstance(props, Mapping):
        req = schema.get("required")
        required = {r for r in req if isinstance(r, str)} if isinstance(req, list) else set()
        for key, val in props.items():
            mark = "" if key in required else "?"
            title = _get(val, "title")
            if isinstance(title, str):
                out.append(f"{indent}// {title}\n{indent}//\n")
            one_of = _get(val, "oneOf")
            if one_of is None:
                vdesc = _get(val, "description")
                if isinstance(vdesc, str):
                    out.append(f"{indent}// {vdesc}\n")
            examples = _get(val, "examples")
            if isinstance(examples, list) and examples:
                out.append(f"{indent}// Examples:\n")
                for ex in examples:
                    if isinstance(ex, str):
                        out.append(f'{indent}// - "{ex}"\n')
            if isinstance(one_of, list):
                assert isinstance(val, Mapping)
                out.append(_one_of_property(key, mark, val, one_of, indent))
                continue
            type_str = _nullable(val, schema_to_typescript(val, indent + "    "))
            out.append(f"{indent}{key}{mark}: {type_str},")
            if one_of is None and isinstance(val, Mapping) and "default" in val:
                out.append(" // " + _default_comment(val, val["default"]))
            out.append("\n")
    out.append(f"{indent}}}")
    return "".join(out)


def _one_of_property(
    key: str, mark: str, val: Mapping[str, Any], one_of: list[Any], indent: str
) -> str:
    out: list[str] = []
    pdesc = val.get("description")
    prop_desc = pdesc if isinstance(pdesc, str) else None
    skip = prop_desc is not None and bool(one_of) and _get(one_of[0], "description") == prop_desc
    above = False
    if not skip and prop_desc is not None:
        out.append(f"{indent}// {prop_desc}\n")
        above = True
    if "default" in val:
        default = val["default"]
        if isinstance(default, str) and not _is_enum(val):
            out.append(f'{indent}// default: "{default}"\n')
        elif isinstance(default, str):
            out.append(f"{indent}// default: {default}\n")
        else:
            out.append(f"{indent}// default: {_json_compact(default)}\n")
    out.append(f"{indent}{key}{mark}:\n")
    for i, variant in enumerate(one_of):
        out.append(f"{indent} | ")
        out.append(_nullable(variant, schema_to_typescript(variant, indent + "   ")))
        comments: list[str] = []
        vdesc = _get(variant, "description")
        if not (i == 0 and above) and isinstance(vdesc, str) and vdesc != prop_desc:
            comments.append(vdesc)
        if isinstance(variant, Mapping) and "default" in variant:
            default = variant["default"]
            if isinstance(default, str) and not _is_enum(variant):
                comments.append(f'default: "{default}"')
            elif isinstance(default, str):
                comments.append(f"default: {default}")
            else:
                comments.append(f"default: {_json_compact(default)}")
        if comments:
            out.append(" // " + " ".join(comments))
        out.append("\n")
    out.append(f"{indent},\n")
    return "".join(out)


def render_tools_section(tools: Sequence[ToolSpec]) -> str:
    """The ``# Tools`` section harmony puts in the developer message for function tools."""
    lines = ["## functions\n", "namespace functions {\n"]
    for tool in tools:
        lines.extend(f"// {line}" for line in _rust_lines(tool.description))
        if tool.parameters is not None:
            lines.append(
                f"type {tool.name} = (_: {schema_to_typescript(tool.parameters)}) => any;\n"
            )
        else:
            lines.append(f"type {tool.name} = () => any;\n")
    lines.append("} // namespace functions")
    return "# Tools\n\n" + "\n".join(lines)


def system_text(reasoning_effort: str, has_tools: bool) -> str:
    """The text of harmony's default system message as Groq sends it."""
    text = (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {CURRENT_DATE}"
        f"\n\nReasoning: {reasoning_effort}\n\n{CHANNELS_LINE}"
    )
    return text + "\n" + TOOLS_CHANNEL_LINE if has_tools else text


# -- reading tool definitions -----------------------------------------------------------


def _unexplained(schema: Any, top: bool, found: list[tuple[str, Any]]) -> int:
    """Collect keywords whose rendering is unknown; returns the known extra (the +6)."""
    if not isinstance(schema, Mapping):
        return 0
    extra = 0
    for key, value in schema.items():
        if key == "additionalProperties" and top and value is False:
            extra += ADDITIONAL_PROPERTIES_FALSE
        elif key not in _RENDERED_KEYS or key == "default" or (key == "title" and top):
            found.append((str(key), value))
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for sub in props.values():
            _unexplained(sub, False, found)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _unexplained(items, False, found)
    one_of = schema.get("oneOf")
    if isinstance(one_of, list):
        for sub in one_of:
            _unexplained(sub, False, found)
    return extra


def read_tools(tools: object, functions: object) -> list[ToolSpec]:
    """Validate ``tools`` (and legacy ``functions``) and read them as harmony renders them.

    Raises :class:`InvalidMessages` naming the tool for a missing or non-str name, a
    non-dict function, or a description or parameters of the wrong type.
    """
    return [_read_function(fn, where) for where, fn in function_definitions(tools, functions)]


def _read_function(fn: Mapping[str, Any], where: str) -> ToolSpec:
    tool = read_function(fn, where)
    found: list[tuple[str, Any]] = []
    extra = _unexplained(tool.parameters, True, found)
    for key, value in fn.items():
        if key not in _FUNCTION_KEYS and not (key == "strict" and value is False):
            found.append((f"function.{key}", value))
    return ToolSpec(tool.name, tool.description, tool.parameters, extra, tuple(found))


# -- counting ---------------------------------------------------------------------------


class _Msg(NamedTuple):
    """One message reduced to what the harmony rules need."""

    role: str
    text: str
    calls: tuple[tuple[str, str, str | None], ...]  # (name, arguments, id)
    tool_call_id: str | None
    name: str | None
    images: int
    exact: bool


def _read_message(raw: object, index: int) -> _Msg:
    # The shared reader validates roles, content types and tool calls with clear errors.
    base = normalize_message(raw, index)
    message = as_mapping(raw, index, "message")
    role = message["role"]
    text = base.body
    exact = base.images == 0
    content = message.get("content")
    if isinstance(content, Sequence) and not isinstance(content, str) and len(content) > 1:
        exact = False  # several parts: Groq's joining of them is not known
    calls: list[tuple[str, str, str | None]] = []
    raw_calls = message.get("tool_calls") if role == "assistant" else None
    if raw_calls:
        for j, raw_call in enumerate(raw_calls):
            call = as_mapping(raw_call, index, f"tool_calls[{j}]")
            fn = as_mapping(call.get("function"), index, f"tool_calls[{j}].function")
            arguments = fn.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
                exact = False
            call_id = call.get("id")
            calls.append((fn["name"], arguments, call_id if isinstance(call_id, str) else None))
    elif role == "assistant" and message.get("function_call"):
        fn = as_mapping(message["function_call"], index, "function_call")
        arguments = fn.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
            exact = False
        calls.append((fn["name"], arguments, None))
    elif role == "assistant":
        text = _content_only(content)
    tool_call_id = message.get("tool_call_id")
    if tool_call_id is not None and not isinstance(tool_call_id, str):
        raise InvalidMessages(
            f"'tool_call_id' must be a str, got {type(tool_call_id).__name__}", index=index
        )
    if role == "function":
        role = "tool"
        tool_call_id = None
    if "<|" in text:
        exact = False  # counted as plain text; the server might see a special token
    return _Msg(role, text, tuple(calls), tool_call_id, base.name, base.images, exact)


def _content_only(content: object) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = []
    for part in content if isinstance(content, Sequence) else ():
        part_map = part if isinstance(part, Mapping) else as_mapping(part, None, "content part")
        kind = part_map.get("type")
        if kind in ("text", "refusal") and isinstance(part_map.get(kind), str):
            parts.append(part_map[kind])
    return "".join(parts)


class HarmonyRules:
    """The harmony costs of requests, given ``count(text)``: o200k tokens of plain text.

    ``image_tokens`` is charged per image part (gpt-oss reads no images; a bound).
    Thread-safe: its memo of fixed costs only ever gains equal values.

    Example::

        rules = HarmonyRules(count)
        rules.count(messages, tools=tools).total
    """

    def __init__(self, count: Callable[[str], int], *, image_tokens: int = 6_404) -> None:
        self._count = count
        self.image_tokens = image_tokens
        self._fixed: dict[str, int] = {}
        c = self.fixed
        # <|start|> role <|message|> ... <|end|>
        self.user_cost = 3 + c("user")
        self.final_cost = 3 + c("assistant") + 1 + c("final")
        self.call_cost = 3 + c("assistant") + 1 + c("commentary") + c(" json")
        self.developer_cost = 3 + c("developer")
        self.generation_prompt = 1 + c("assistant")
        #: The overhead of a request with the default effort and no response_format.
        self.base_overhead = self.overhead()[0]

    def fixed(self, text: str) -> int:
        """Tokens of a text that recurs (headers, schema renderings), memoised."""
        n = self._fixed.get(text)
        if n is None:
            n = self._count(text)
            if len(self._fixed) > 4096:
                self._fixed.clear()
            self._fixed[text] = n
        return n

    def overhead(
        self, *, reasoning_effort: str | None = None, response_format: object = None
    ) -> tuple[int, bool, int]:
        """The fixed part: the system message without tools, the empty developer message,
        the generation prompt and a bound for ``response_format``; whether it is exact,
        and the allowance in it."""
        effort = "medium" if reasoning_effort is None else reasoning_effort
        system = 3 + self.fixed("system") + self.fixed(system_text(effort, False))
        extra, exact = self.response_format_cost(response_format)
        total = system + EMPTY_DEVELOPER + self.generation_prompt + extra
        return total, exact, 0 if exact else extra

    def response_format_cost(self, response_format: object) -> tuple[int, bool]:
        """An upper bound of what ``response_format`` adds (Groq's text is not known)."""
        if response_format is None:
            return 0, True
        n = response_format_allowance(response_format, self._count)
        return n, n == 0

    def tools_cost(
        self,
        tools: Sequence[ToolSpec],
        *,
        reasoning_effort: str | None = None,
        tool_choice: object = None,
    ) -> tuple[int, bool, int]:
        """What the tools add: the system line, the developer message's tools section
        (replacing the empty developer message), the +6s and the bounds; whether that is
        exact, and the allowance in it."""
        # Groq's gateway ignores tool_choice for gpt-oss: no instruction, no prefill, and
        # the tools stay even for "none" (GROQ-RENDER.md "gpt-oss"). It is only checked.
        check_tool_choice(tool_choice, [tool.name for tool in tools])
        if not tools:
            return 0, True, 0
        effort = "medium" if reasoning_effort is None else reasoning_effort
        system_delta = self.fixed(system_text(effort, True)) - self.fixed(
            system_text(effort, False)
        )
        text = render_tools_section(tools)
        cost = system_delta + self.developer_cost + self.fixed(text) - EMPTY_DEVELOPER
        exact = "<|" not in text  # a special-token lookalike is counted as plain text
        allowance = 0
        for tool in tools:
            cost += tool.extra
            for key, value in tool.unexplained:
                allowance += 6 + 2 * self._count(f"{key}: {_json_compact(value)}")
                exact = False
        return cost + allowance, exact, allowance

    def count(
        self,
        messages: Sequence[Any],
        *,
        tools: object = None,
        functions: object = None,
        reasoning_effort: object = None,
        tool_choice: object = None,
        response_format: object = None,
        text_count: Callable[[str, int], int] | None = None,
    ) -> HarmonyCount:
        """Validate and count one request (the general path); ``text_count`` as in
        :meth:`message_costs`."""
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidMessages(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        if not messages:
            raise InvalidMessages("messages is empty; expected at least one message")
        effort = check_reasoning_effort(reasoning_effort)
        specs = read_tools(tools, functions)
        read = [_read_message(m, i) for i, m in enumerate(messages)]
        overhead, exact_o, allow_o = self.overhead(
            reasoning_effort=effort, response_format=response_format
        )
        tools_n, exact_t, allow_t = self.tools_cost(
            specs, reasoning_effort=effort, tool_choice=tool_choice
        )
        costs, exact_m, allow_m = self.message_costs(
            read, has_tools=bool(specs), tool_names=specs, text_count=text_count
        )
        return HarmonyCount(
            tuple(costs),
            overhead,
            tools_n,
            overhead + tools_n + sum(costs),
            exact_o and exact_t and exact_m,
            allow_o + allow_t + allow_m,
            exact_t,
        )

    def message_costs(
        self,
        messages: Sequence[_Msg],
        *,
        has_tools: bool,
        tool_names: Sequence[ToolSpec] = (),
        text_count: Callable[[str, int], int] | None = None,
    ) -> tuple[list[int], bool, int]:
        """Each message's cost, whether all of them are exact, and the allowance in them.

        ``text_count(text, index)`` counts the texts of message ``index`` (a cache, say);
        by default the rules' own ``count``.
        """
        known = [t.name for t in tool_names] + [call[0] for m in messages for call in m.calls]
        longest = max(known, key=lambda n: self.fixed("functions." + n), default=None)
        names_by_id: dict[str, str] = {}
        costs: list[int] = []
        exact = True
        allowance = 0
        for i, m in enumerate(messages):
            c = self._count if text_count is None else functools.partial(_at, text_count, i)
            if m.role in ("system", "developer"):
                n, sure, extra = self._system_cost(m, i == 0, has_tools, c)
            elif m.role == "user":
                n, sure, extra = self.user_cost + c(m.text), True, 0
            elif m.role == "assistant":
                n, sure, extra = self._assistant_cost(m, c, names_by_id), True, 0
            else:
                n, sure, extra = self._result_cost(m, c, names_by_id, longest)
            more, sure_more, extra_more = self._name_and_images(m)
            costs.append(n + more)
            exact = exact and m.exact and sure and sure_more
            allowance += extra + extra_more
        return costs, exact, allowance

    def _system_cost(
        self, m: _Msg, first: bool, has_tools: bool, c: Callable[[str], int]
    ) -> tuple[int, bool, int]:
        """``(cost, exact, allowance)`` of a system or developer message."""
        if not first:
            # Where Groq puts a later system message is not known: a bound.
            n = self.developer_cost + c("# Instructions\n\n" + m.text) + LATE_SYSTEM_MARGIN
            return n, False, LATE_SYSTEM_MARGIN
        if has_tools:
            n = c("# Instructions\n\n" + m.text + "\n\n")
        else:
            n = self.developer_cost + c("# Instructions\n\n" + m.text) - EMPTY_DEVELOPER
        return n, bool(m.text), 0  # an empty system message may be dropped instead

    def _assistant_cost(self, m: _Msg, c: Callable[[str], int], names_by_id: dict[str, str]) -> int:
        """An assistant message's cost; its calls' ids are noted in ``names_by_id``."""
        if not m.calls:
            return self.final_cost + c(m.text)
        n = 0
        for name, arguments, call_id in m.calls:
            n += self.call_cost + self.fixed(" to=functions." + name) + c(arguments)
            if call_id is not None:
                names_by_id[call_id] = name
        return n

    def _result_cost(
        self,
        m: _Msg,
        c: Callable[[str], int],
        names_by_id: dict[str, str],
        longest: str | None,
    ) -> tuple[int, bool, int]:
        """``(cost, exact, allowance)`` of a tool result, written under its call's name."""
        fixed = self.fixed
        author = names_by_id.get(m.tool_call_id) if m.tool_call_id is not None else None
        if author is None and m.name and m.tool_call_id is None:
            author = m.name  # legacy function result: named by the message
        if author is not None:
            return 3 + fixed("functions." + author) + c(m.text), True, 0
        # No call to take the name from: the longest known name, plus a margin.
        guess = fixed("functions." + longest) if longest else fixed("functions.")
        n = 3 + guess + UNMATCHED_RESULT_MARGIN + c(m.text)
        return n, False, guess + UNMATCHED_RESULT_MARGIN

    def _name_and_images(self, m: _Msg) -> tuple[int, bool, int]:
        """``(cost, exact, allowance)`` a message's name and images add."""
        n = extra = 0
        sure = True
        if m.name and m.role != "tool":
            name_cost = self.fixed(":" + m.name)  # harmony writes "role:name"; Groq's is unknown
            n += name_cost
            extra += name_cost
            sure = False
        if m.images:
            n += m.images * self.image_tokens
            extra += m.images * self.image_tokens
        return n, sure, extra


def _at(text_count: Callable[[str, int], int], index: int, text: str) -> int:
    return text_count(text, index)


def check_reasoning_effort(value: object) -> str | None:
    """``reasoning_effort`` as gpt-oss takes it: ``None`` or one of low, medium, high.

    Other strings that SDKs send (``"minimal"``, ``"none"``, ``"default"``) are written
    as ``medium`` would be: every effort word costs the same one token.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessages(
            f"reasoning_effort must be a str such as 'low', 'medium' or 'high', "
            f"got {type(value).__name__}"
        )
    return value if value in REASONING_EFFORTS else "medium"
