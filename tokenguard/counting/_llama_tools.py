# ruff: noqa: E501 (the prompt texts are Groq's, line for line)
"""The tool parts of Groq's Llama prompts: tools read and checked, ``tool_choice``, the
tool prompts of Llama 3.1/3.3 and Llama 4, and the forced-use sentences.

The texts are Groq's (its gateway's ``llama.go`` and ``tools/parse_native.go``, shared
GROQ-RENDER.md): Llama 3.x does not use Meta's 3.1 tool template but Groq's own
``<function=NAME>`` prompt; Llama 4 uses a fixed 638-token guideline text followed by the
function list. Each tool is written as Go writes ``{name, description, parameters}``
(``_gojson``): an absent description is ``null``.

Pure: no tokenizer here, only text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidMessages
from ._gojson import go_json
from ._messages import as_mapping

__all__ = [
    "LLAMA4_TOOL_GUIDE",
    "FunctionSpec",
    "ToolChoice",
    "forced_instruction",
    "llama4_tools_text",
    "llama31_tools_text",
    "read_parallel",
    "read_tool_choice",
    "read_tools",
]

#: The fixed head of Groq's Llama 4 tool prompt (then the function list follows).
LLAMA4_TOOL_GUIDE = """You are a helpful assistant and an expert in function composition. You can answer general questions using your internal knowledge OR invoke functions when necessary. Follow these strict guidelines:

1. FUNCTION CALLS:
- ONLY use functions that are EXPLICITLY listed in the function list below
- If NO functions are listed (empty function list []), respond ONLY with internal knowledge or "I don't have access to [Unavailable service] information"
- If a function is not in the list, respond ONLY with internal knowledge or "I don't have access to [Unavailable service] information"
- If ALL required parameters are present AND the query EXACTLY matches a listed function's purpose: output ONLY the function call(s)
- Use exact format: [
  {
    "name": "<tool_name_foo>",
    "parameters": {
      "<param1_name>": "<param1_value>",
      "<param2_name>": "<param2_value>"
    }
  }
]

Examples:

CORRECT: [
  {
    "name": "get_weather",
    "parameters": {
      "location": "Vancouver"
    }
  },
  {
    "name": "calculate_route",
    "parameters": {
      "start": "Boston",
      "end": "New York"
    }
  }
] <- Only if get_weather and calculate_route are in function list

INCORRECT: [
  {
    "name": "population_projections",
    "parameters": {
      "country": "United States",
      "years": 20
    }
  }
]}] <- Bad json format

INCORRECT: Let me check the weather: [
{
  "name": "get_weather",
  "parameters": {
    "location": "Vancouver"
  }
}]

INCORRECT: [
{
  "name": "get_events",
  "parameters": {
    "location": "Singapore"
  }
}] <- If function not in list


2. RESPONSE RULES:
- For pure function requests matching a listed function: ONLY output the function call(s)
- For knowledge questions: ONLY output text
- For missing parameters: ONLY request the specific missing parameters
- For unavailable services (not in function list): output ONLY with internal knowledge or "I don't have access to [Unavailable service] information". Do NOT execute a function call.
- If the query asks for information beyond what a listed function provides: output ONLY with internal knowledge about your limitations
- NEVER combine text and function calls in the same response
- NEVER suggest alternative functions when the requested service is unavailable
- NEVER create or invent new functions not listed below


3. STRICT BOUNDARIES:
- ONLY use functions from the list below - no exceptions
- NEVER use a function as an alternative to unavailable information
- NEVER call functions not present in the function list
- NEVER add explanatory text to function calls
- NEVER respond with empty brackets
- Use proper JSON syntax for function calls
- Check the function list carefully before responding


4. TOOL RESPONSE HANDLING:
- When receiving tool responses: provide concise, natural language responses
- Don't repeat tool response verbatim
- Don't add supplementary information

"""

_LLAMA4_LIST_HEAD = "\nHere is a list of functions in JSON format that you can invoke:\n\n[\n"

_LLAMA31_INTRO = "\nYou have access to the following functions:\n\n"
_LLAMA31_ONE_CALL = "\n- Only call one function at a time"
_LLAMA31_MANY_CALLS = (
    "\n- You can make multiple function calls, but put each function call on a separate line"
)
_LLAMA31_GUIDE_HEAD = """
Think very carefully before calling functions.
If you choose to call a function ONLY reply in the following format with no prefix or suffix:

<function=example_function_name>{"example_name": "example_value"}</function>

Reminder:
- If looking for real time information use relevant functions before falling back to brave_search
- Function calls MUST follow the specified format, start with <function= and end with </function>
- Required parameters MUST be specified"""
_LLAMA31_GUIDE_TAIL = "\n- Put the entire function call reply on one line\n\n"

_NONE_SENTENCE = (
    "For this specific request, you are NOT allowed to make any function calls. "
    "Simply answer the user query directly, without using any functions."
)


class FunctionSpec(NamedTuple):
    """One function tool as the templates print it."""

    name: str
    #: ``None`` when the request gave none (Go prints ``null``, the sentence ``''``).
    description: str | None
    parameters: Any

    def go_json(self) -> str:
        """``{name, description, parameters}`` as Go's encoder writes it (compact)."""
        return (
            '{"name":'
            + go_json(self.name)
            + ',"description":'
            + go_json(self.description)
            + ',"parameters":'
            + go_json(self.parameters)
            + "}"
        )


class ToolChoice(NamedTuple):
    """``tool_choice`` read: ``mode`` is ``auto``, ``none``, ``required`` or ``named``."""

    mode: str
    name: str | None = None


AUTO = ToolChoice("auto")


def _type_name(value: object) -> str:
    return type(value).__name__


def read_tools(tools: object, functions: object) -> tuple[FunctionSpec, ...]:
    """The function tools of a request (``tools``, then legacy ``functions``), checked:
    each needs a non-empty str ``name``; a description must be a str."""
    specs: list[FunctionSpec] = []
    for what, value in (("tools", tools), ("functions", functions)):
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidMessages(f"{what} must be a list of definitions, got {_type_name(value)}")
        for j, raw in enumerate(value):
            where = f"{what}[{j}]"
            item = _mapping(raw, where)
            if what == "tools":
                kind = item.get("type", "function")
                if kind != "function":
                    raise InvalidMessages(
                        f"{where} has type {kind!r}; Llama models take tools of type 'function'"
                    )
                item = _mapping(item.get("function"), f"{where}.function")
                where += ".function"
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidMessages(f"{where} needs a non-empty str 'name', got {name!r}")
            description = item.get("description")
            if description is not None and not isinstance(description, str):
                raise InvalidMessages(
                    f"{where} 'description' must be a str, got {_type_name(description)}"
                )
            parameters = item.get("parameters")
            if parameters is not None and not isinstance(parameters, Mapping):
                parameters = _mapping(parameters, f"{where}.parameters")
            specs.append(FunctionSpec(name, description, parameters))
    return tuple(specs)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    try:
        return as_mapping(value, None, where)
    except InvalidMessages as exc:
        raise InvalidMessages(exc.problem) from None


def read_tool_choice(value: object, names: Sequence[str]) -> ToolChoice:
    """``tool_choice`` as given (absent is ``auto``); a named function must be one of
    ``names`` when tools are given."""
    if value is None or value == "auto":
        return AUTO
    if value in ("none", "required"):
        return ToolChoice(str(value))
    if isinstance(value, str):
        raise InvalidMessages(
            f"tool_choice {value!r} is not known; expected 'auto', 'none', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}"
        )
    choice = _mapping(value, "tool_choice")
    function = choice.get("function")
    name = _mapping(function, "tool_choice.function").get("name") if function else None
    if not isinstance(name, str) or not name:
        raise InvalidMessages(
            f"tool_choice names no function: expected {{'type': 'function', 'function': "
            f"{{'name': ...}}}}, got {dict(choice)!r}"
        )
    if names and name not in names:
        raise InvalidMessages(
            f"tool_choice names the function {name!r}, which is not among the tools "
            f"({', '.join(repr(n) for n in names)})"
        )
    return ToolChoice("named", name)


def read_parallel(value: object) -> bool:
    """``parallel_tool_calls``; Groq bills a request that omits it as ``true``."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise InvalidMessages(f"parallel_tool_calls must be a bool, got {value!r}")
    return value


def forced_instruction(choice: ToolChoice) -> str:
    """The sentence a ``tool_choice`` adds to the system block ("" for ``auto``)."""
    if choice.mode == "named":
        return f"You must use the function {choice.name} to answer the user query."
    if choice.mode == "required":
        return "You must use at least one function to answer the user query."
    if choice.mode == "none":
        return _NONE_SENTENCE
    return ""


def llama31_tools_text(specs: Sequence[FunctionSpec], choice: ToolChoice, parallel: bool) -> str:
    """What Llama 3.1/3.3 writes after the date lines when tools are given ("" without):
    the function list and guide (left out for ``none``), then the forced sentence."""
    if not specs:
        return ""
    parts: list[str] = []
    if choice.mode != "none":
        parts.append(_LLAMA31_INTRO)
        for spec in specs:
            parts.append(f"Use the function '{spec.name}' to '{spec.description or ''}'\n")
            # Go's Encoder.Encode ends the JSON with a newline; the template adds another.
            parts.append(spec.go_json() + "\n\n")
        parts.append(_LLAMA31_GUIDE_HEAD)
        parts.append(_LLAMA31_MANY_CALLS if parallel else _LLAMA31_ONE_CALL)
        parts.append(_LLAMA31_GUIDE_TAIL)
    forced = forced_instruction(choice)
    if forced:
        parts.append(forced + "\n\n")
    return "".join(parts)


def llama4_tools_text(specs: Sequence[FunctionSpec], choice: ToolChoice) -> str:
    """Llama 4's tool prompt ("" without tools or for ``none``, which drops it whole)."""
    if not specs or choice.mode == "none":
        return ""
    listed = ",\n".join("    " + spec.go_json() for spec in specs)
    text = LLAMA4_TOOL_GUIDE + _LLAMA4_LIST_HEAD + listed + "\n]\n"
    forced = forced_instruction(choice)
    if forced:
        text += "\n" + forced + "\n"
    return text


def llama31_prefill(choice: ToolChoice) -> str:
    """What Llama 3.1/3.3 opens the assistant turn with: ``<function=`` for ``required``,
    ``<function=NAME>`` for a named function, nothing otherwise (with or without tools)."""
    if choice.mode == "named":
        return f"<function={choice.name}>"
    if choice.mode == "required":
        return "<function="
    return ""
