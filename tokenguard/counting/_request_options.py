"""The keywords of ``chat.completions.create``, as the counting functions accept them.

``tg.count_tokens(**body)`` takes a whole request body: every keyword the ``openai`` and
``groq`` SDKs accept is accepted under the SDK's own name. Those that can change the
prompt the server bills are kept as *prompt options* (:data:`PROMPT_KEYWORDS`), the
completion budget (``max_tokens``/``max_completion_tokens``) is read, and the rest
(``temperature``, ``stream``, ``n``, ``seed``, ...) is ignored. A keyword no SDK knows is a
clear :class:`~tokenguard.InvalidMessages`, with the closest known name when there is one.
``extra_body`` (the SDKs' way to send fields they have no parameter for) is merged in.

Example::

    >>> options, max_tokens = read_request_options(
    ...     {"temperature": 0.2, "reasoning_effort": "low", "max_completion_tokens": 64}
    ... )
    >>> options, max_tokens
    ({'reasoning_effort': 'low'}, 64)
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import InvalidMessages, InvalidRequest
from ._sendable import check_field

__all__ = [
    "BUDGET_KEYWORDS",
    "IGNORED_KEYWORDS",
    "PROMPT_KEYWORDS",
    "SDK_KEYWORDS",
    "TRANSPORT_KEYWORDS",
    "option_allowance",
    "read_request_options",
    "response_format_allowance",
    "unknown_keyword",
]

#: Keywords that may change the prompt tokens the server bills (``tools`` and
#: ``functions`` are passed on by name; the others become prompt options).
PROMPT_KEYWORDS = frozenset(
    {
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        # groq: documents are given to the model as context.
        "documents",
    }
)

#: Keywords accepted and ignored: they shape the completion or the transport, not the prompt.
IGNORED_KEYWORDS = frozenset(
    {
        # openai
        "audio",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "metadata",
        "modalities",
        "moderation",
        "n",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
        "extra_headers",
        "extra_query",
        "timeout",
        # groq
        "citation_options",
        "compound_custom",
        "disable_tool_validation",
        "exclude_domains",
        "include_domains",
        "include_reasoning",
        "reasoning_format",
        "search_settings",
    }
)

#: Keywords the SDKs give the HTTP client rather than put in the JSON body.
TRANSPORT_KEYWORDS = frozenset({"extra_headers", "extra_query", "timeout"})

#: The keywords that cap a completion, the newer first (Groq uses it when both are sent).
BUDGET_KEYWORDS = ("max_completion_tokens", "max_tokens")

#: Every keyword accepted besides ``messages`` and ``model``.
SDK_KEYWORDS = PROMPT_KEYWORDS | IGNORED_KEYWORDS | {*BUDGET_KEYWORDS, "extra_body"}


def unknown_keyword(name: str, accepted: Iterable[str], where: str) -> str:
    """The message for a keyword ``name`` not among ``accepted``: ``where`` says what it is
    not, and the closest accepted name follows when there is one.

    Example::

        >>> unknown_keyword("maxtokens", ["max_tokens"], "an option of fit")
        "unknown keyword 'maxtokens': not an option of fit; did you mean 'max_tokens'?"
    """
    close = difflib.get_close_matches(name, sorted(accepted), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown keyword {name!r}: not {where}{hint}"


def _unknown(name: str) -> InvalidMessages:
    where = "a parameter of chat.completions.create in the openai or groq SDK"
    return InvalidMessages(unknown_keyword(name, SDK_KEYWORDS | {"messages", "model"}, where))


def check_completion_cap(name: str, value: object) -> int | None:
    """A request's ``max_tokens`` or ``max_completion_tokens``: an int >= 1, or ``None``
    for not given. The one rule for every entry point (the guard, ``count_request``,
    ``fit`` and ``Conversation``): the server refuses 0, so it is refused here, with
    :class:`~tokenguard.InvalidRequest` naming the field."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{name} must be an int >= 1 or None, got {value!r}", field=name)
    return value


def read_request_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Split a request's keywords (besides ``messages`` and ``model``) into prompt options
    and the completion budget; ignore the rest; refuse unknown names and values the SDKs
    cannot send (:func:`~._sendable.check_field`), ignored ones included.

    ``max_completion_tokens`` wins over ``max_tokens`` when both are given (the SDKs send
    both and Groq uses the newer one). ``None`` values count as not given, as the SDKs
    treat them.
    """
    options: dict[str, Any] = {}
    max_tokens: int | None = None
    max_completion: int | None = None
    merged: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in SDK_KEYWORDS:
            raise _unknown(name)
        if name not in TRANSPORT_KEYWORDS:
            check_field(value, name, str_keys=name in PROMPT_KEYWORDS)
        if name == "extra_body" and isinstance(value, Mapping):
            for key in PROMPT_KEYWORDS.intersection(value):  # counted: str keys only
                check_field(value[key], f"extra_body.{key}")
        if name != "extra_body":
            merged[name] = value
    extra = kwargs.get("extra_body")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise InvalidMessages(f"extra_body must be a dict, got {type(extra).__name__}")
        # The SDKs merge extra_body over the body; fields no SDK names are the caller's
        # business with the server and do not change the prompt as far as is known.
        merged.update({k: v for k, v in extra.items() if k in SDK_KEYWORDS})
    for name, value in merged.items():
        if value is None:
            continue
        if name in PROMPT_KEYWORDS:
            options[name] = value
        elif name == "max_tokens":
            max_tokens = check_completion_cap(name, value)
        elif name == "max_completion_tokens":
            max_completion = check_completion_cap(name, value)
    return options, max_completion if max_completion is not None else max_tokens


#: Allowances for prompt options whose rendering is not known for a model family.
#: ``response_format`` is not rendered by Groq's gateway (it is added further down, as
#: text nobody has seen), so its cost is fitted to what Groq billed: ``json_object``
#: added 28 tokens to a gpt-oss prompt; a small ``json_schema`` (two string properties,
#: about 45 tokens of schema JSON) added 78 to a Llama 4 prompt and 99 to a gpt-oss one.
#: A schema is charged ``JSON_SCHEMA_ALLOWANCE`` plus its name, description and JSON
#: (sorted keys, cl100k_base): 100 to 102 for such a schema, never below either request
#: and within +25% of both once the rest of the prompt is exact.
JSON_OBJECT_ALLOWANCE = 36
JSON_SCHEMA_ALLOWANCE = 55
DOCUMENTS_ALLOWANCE = 32
REASONING_EFFORT_ALLOWANCE = 8


def option_allowance(
    options: Mapping[str, Any], count: Callable[[str], int], *, handled: frozenset[str]
) -> int:
    """An upper bound of the tokens ``options`` add to a prompt, for the options a meter
    does not count itself (``handled``); ``count`` counts text conservatively.

    Groq's rendering of these is not known for every family (see the allowances above),
    so each is charged as a bound: the count that includes them is never exact.
    """
    n = 0
    fmt = options.get("response_format")
    if fmt is not None and "response_format" not in handled:
        n += response_format_allowance(fmt, count)
    docs = options.get("documents")
    if docs is not None and "documents" not in handled:
        try:
            text = json.dumps(docs, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as exc:
            raise InvalidMessages(f"documents are not JSON-serializable ({exc})") from None
        n += DOCUMENTS_ALLOWANCE + 2 * count(text)
    if options.get("reasoning_effort") is not None and "reasoning_effort" not in handled:
        n += REASONING_EFFORT_ALLOWANCE
    return n


def response_format_allowance(response_format: object, count: Callable[[str], int]) -> int:
    """An upper bound of what ``response_format`` adds; refuses an unknown format type."""
    fmt = response_format
    if not isinstance(fmt, Mapping):
        dump = getattr(fmt, "model_dump", None)
        fmt = dump(exclude_none=True) if callable(dump) else None
    if not isinstance(fmt, Mapping):
        raise InvalidMessages(
            f"response_format must be a dict, got {type(response_format).__name__}"
        )
    kind = fmt.get("type")
    if kind == "text":
        return 0
    if kind == "json_object":
        return JSON_OBJECT_ALLOWANCE
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidMessages(
                "response_format of type 'json_schema' needs a 'json_schema' dict"
            )
        try:
            schema = json.dumps(spec.get("schema", {}), ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidMessages(
                f"response_format schema is not JSON-serializable ({exc})"
            ) from None
        name, desc = spec.get("name", ""), spec.get("description", "")
        return JSON_SCHEMA_ALLOWANCE + count(f"{name} {desc} {schema}")
    raise InvalidMessages(
        f"response_format has type {kind!r}; expected 'text', 'json_object' or 'json_schema'"
    )
