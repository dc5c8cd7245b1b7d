"""Pre-flight token counting: what Groq will bill as ``usage.prompt_tokens``, offline.

Exact for Groq's Llama 3.x, Llama 4, Qwen3 and gpt-oss (the template rendered as Groq
renders it, counted with the model's own tokenizer); a calibrated estimate that stays
above the server elsewhere (Kimi K2, unknown models). Example::

    import tokenguard as tg

    tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")

Invariant: an exact count equals the server's; a count marked inexact is never below
it. The layout of the package and the derivations: docs/counting-internals.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..models import ModelInfo
from ._calibration import Calibration
from ._counter import Counter
from ._estimate import IMAGE_TOKENS
from ._result import CalibrationBasis, PromptCount, RequestCount

__all__ = [
    "IMAGE_TOKENS",
    "Calibration",
    "CalibrationBasis",
    "Counter",
    "PromptCount",
    "RequestCount",
    "count_prompt",
    "count_request",
    "count_tokens",
    "default_counter",
    "observe_prompt_tokens",
]

_default = Counter()


def default_counter() -> Counter:
    """The process-wide :class:`Counter` behind :func:`count_tokens`."""
    return _default


def count_tokens(
    messages: Sequence[Any],
    model: str | ModelInfo = "llama-3.1-8b-instant",
    *,
    tools: Sequence[Any] | None = None,
    functions: Sequence[Any] | None = None,
    **request: Any,
) -> int:
    """Prompt tokens of a chat request as Groq bills them (chat template included).

    Exact for Llama 3.x, Llama 4 and gpt-oss, a conservative estimate otherwise; no
    network. Takes every keyword ``chat.completions.create`` takes, so a whole request
    body counts in one call: those that change the prompt (``tools``, ``tool_choice``,
    ``response_format``, ``reasoning_effort``, ...) are counted, the others
    (``temperature``, ``stream``, ``n``, ...) ignored; an unknown keyword raises.
    Raises :class:`~tokenguard.InvalidMessages` for malformed input.

    Example::

        >>> count_tokens([{"role": "user", "content": "Hello"}], model="llama3-8b-8192")
        11
        >>> body = {"model": "openai/gpt-oss-20b", "temperature": 0.5,
        ...         "messages": [{"role": "user", "content": "hello"}]}
        >>> count_tokens(**body)
        72
    """
    return _default.count(messages, model, tools=tools, functions=functions, **request)


def count_prompt(
    messages: Sequence[Any],
    model: str | ModelInfo = "llama-3.1-8b-instant",
    *,
    tools: Sequence[Any] | None = None,
    functions: Sequence[Any] | None = None,
    **request: Any,
) -> PromptCount:
    """Prompt tokens of a request broken down per message, for fitting (see :class:`PromptCount`).

    ``total`` equals :func:`count_tokens` of the same request. For the Llama models,
    dropping messages lowers the count by the sum of their costs (see
    :class:`PromptCount` for where the sum is a bound instead); for estimated models the
    sum is an upper bound.

    Example::

        >>> pc = count_prompt([{"role": "system", "content": "Be brief."},
        ...                    {"role": "user", "content": "Hello"}], model="llama3-8b-8192")
        >>> pc.messages, pc.overhead, pc.tools, pc.total
        ((8, 6), 5, 0, 19)
    """
    return _default.count_prompt(messages, model, tools=tools, functions=functions, **request)


def count_request(
    messages: Sequence[Any],
    model: str | ModelInfo = "llama-3.1-8b-instant",
    *,
    tools: Sequence[Any] | None = None,
    functions: Sequence[Any] | None = None,
    max_tokens: int | None = None,
    default_reserve: int | None = None,
    **request: Any,
) -> RequestCount:
    """Prompt tokens plus completion reservation of a request (see :meth:`Counter.count_request`).

    Takes a whole ``chat.completions.create`` body, as :func:`count_tokens` does;
    ``max_completion_tokens`` is read like ``max_tokens``.

    Example::

        >>> rc = count_request([{"role": "user", "content": "Hi"}], model="llama3-8b-8192",
        ...                    max_tokens=100)
        >>> (rc.prompt_tokens, rc.completion_reserve, rc.total, rc.exact)
        (11, 100, 111, True)
    """
    return _default.count_request(
        messages,
        model,
        tools=tools,
        functions=functions,
        max_tokens=max_tokens,
        default_reserve=default_reserve,
        **request,
    )


def observe_prompt_tokens(count: RequestCount, actual_prompt_tokens: int) -> None:
    """Feed the server's ``usage.prompt_tokens`` back to the default counter's calibration.

    Example::

        rc = count_request(msgs, model="openai/gpt-oss-20b")
        resp = client.chat.completions.create(model="openai/gpt-oss-20b", messages=msgs)
        observe_prompt_tokens(rc, resp.usage.prompt_tokens)
    """
    _default.observe(count, actual_prompt_tokens)
