"""The public entry points: :func:`fit` in a thread, :func:`fit_async` in a coroutine.

Both build the same :class:`~tokenguard.fitting._plan.Options` and run the same plan;
they differ only in how the summarizer (or a strategy callable) is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .._drive import run_async, run_sync
from ..counting._request_options import check_completion_cap, unknown_keyword
from ..errors import ConfigurationError
from ..models import Limits, ModelInfo, get_model
from ._plan import FitResult, Options, Strategy, StrategyCallable, fit_plan
from ._room import DEFAULT_MIN_COMPLETION, DEFAULT_RESERVE
from ._summary import DEFAULT_SUMMARY_TOKENS, Summarizer, SummaryCache, default_summary_cache

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["FitOptions", "check_options", "fit", "fit_async"]

FromModel = Literal["model"]


class FitOptions(TypedDict, total=False):
    """The keyword options of :func:`fit` and :func:`fit_async` (see :func:`fit`)."""

    max_tokens: int | None
    max_prompt_tokens: int | None
    tpm: int | FromModel | None
    budget: int | None
    context_window: int | None
    tier: str | Limits
    on_overflow: Strategy | StrategyCallable
    summarizer: Summarizer | None
    summary_cache: SummaryCache | None
    summary_tokens: int
    headroom: float
    default_reserve: int
    min_completion: int
    shrink_max_tokens: bool
    tools: Sequence[Any] | None
    functions: Sequence[Any] | None


#: The names :func:`fit` accepts besides ``messages`` and ``model``.
_OPTION_NAMES = frozenset(FitOptions.__annotations__)


def _known_options(model: str | ModelInfo, options: Mapping[str, Any]) -> Options:
    """:func:`check_options` of a caller's keywords, a name it does not take refused first."""
    for name in options:
        if name not in _OPTION_NAMES:
            accepted = ", ".join(sorted(_OPTION_NAMES))
            where = f"an option of fit (accepted: model, {accepted})"
            raise ConfigurationError(unknown_keyword(name, _OPTION_NAMES, where))
    return check_options(model, **options)


def _int_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int or None, got {value!r}")
    return value


def check_options(
    model: str | ModelInfo = "llama-3.1-8b-instant",
    *,
    max_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
    tpm: int | FromModel | None = "model",
    budget: int | None = None,
    context_window: int | None = None,
    tier: str | Limits = "free",
    on_overflow: Strategy | StrategyCallable = "truncate",
    summarizer: Summarizer | None = None,
    summary_cache: SummaryCache | None = None,
    summary_tokens: int = DEFAULT_SUMMARY_TOKENS,
    headroom: float = 0.5,
    default_reserve: int = DEFAULT_RESERVE,
    min_completion: int = DEFAULT_MIN_COMPLETION,
    shrink_max_tokens: bool = True,
    tools: Sequence[Any] | None = None,
    functions: Sequence[Any] | None = None,
) -> Options:
    """The settled :class:`Options` of a fit (the defaults of :class:`FitOptions` are
    here); raises ``ConfigurationError`` for bad ones."""
    if isinstance(model, ModelInfo):
        info = model
    elif isinstance(model, str) and model:
        info = get_model(model)
    else:
        raise ConfigurationError(f"model must be a non-empty str or a ModelInfo, got {model!r}")
    if tpm == "model":
        limits = info.tier_limits(tier) if isinstance(tier, str) else tier
        tpm_value = limits.tpm if limits is not None else None
    else:
        tpm_value = _int_or_none(tpm, "tpm")
    window = _int_or_none(context_window, "context_window")
    opts = Options(
        info=info,
        context_window=info.context_window if window is None else window,
        tpm=tpm_value,
        budget=_int_or_none(budget, "budget"),
        max_tokens=check_completion_cap("max_tokens", max_tokens),
        default_reserve=default_reserve,
        min_completion=min_completion,
        shrink_max_tokens=bool(shrink_max_tokens),
        max_prompt_tokens=_int_or_none(max_prompt_tokens, "max_prompt_tokens"),
        on_overflow=on_overflow,
        summarizer=summarizer,
        summary_cache=default_summary_cache() if summary_cache is None else summary_cache,
        summary_tokens=summary_tokens,
        headroom=headroom,
        tools=tools,
        functions=functions,
    )
    opts.check()
    return opts


def fit(
    messages: Sequence[Any],
    model: str | ModelInfo = "llama-3.1-8b-instant",
    **options: Unpack[FitOptions],
) -> FitResult:
    """Make a chat request fit the room it has; returns a :class:`FitResult`.

    The room is ``min(context window, TPM limit, budget left) - completion reservation``:
    ``context_window`` defaults to the model table's, ``tpm`` to the table's limit for
    ``tier`` (``None``: no TPM limit), ``budget`` to none; the reservation is
    ``max_tokens``, or, when the call sends none, what the server holds for it:
    ``default_reserve`` capped by the room the prompt leaves in the context window (a
    prompt the server would take is not cut; one that must be cut is cut to leave the
    whole ``default_reserve``, or ``min_completion`` when that alone fills the context
    window). A ``max_tokens`` that
    alone makes the request impossible is lowered (to no less than ``min_completion``)
    before any message is dropped; ``shrink_max_tokens=False`` keeps it as asked.
    ``max_tokens`` must be at least 1 when given (Groq refuses 0), the same rule as the
    guard's. ``max_prompt_tokens`` caps the prompt alone, below all of that.

    When the prompt does not fit, ``on_overflow`` decides:

    - ``"truncate"`` keeps every system message, the newest user message and the newest
      exchange after it (shortened inside, beginning and end kept, when too large), the
      order, and tool calls with their results whole, and fills the room with the
      newest history that fits, as one run without gaps that opens with a question
      (so it uses >= 95% of ``allowed`` whenever each droppable exchange, a question
      with its answers and tool calls, is under 5% of it);
    - ``"summarize"`` replaces the dropped part by one summary written by ``summarizer``
      (see :class:`SummaryRequest`), incrementally and cached in ``summary_cache``,
      leaving ``headroom`` of the room free so the next turns fit without a new summary;
      it falls back to truncation (``result.fallback`` says why) if that fails;
    - ``"error"`` raises :class:`~tokenguard.ContextOverflow`;
    - a callable ``f(messages, room) -> messages`` does it your way (checked to fit).

    Counts come from :func:`~tokenguard.count_prompt` (exact for the Llama 3 family);
    nothing is sent anywhere but to the summarizer. One ``tokenguard.fit.*`` event is
    emitted per fit that changed the request. Raises
    :class:`~tokenguard.ContextOverflow` (with ``needed``, ``available``, ``limit_name``)
    when the request cannot fit, :class:`~tokenguard.InvalidMessages` for malformed
    messages and :class:`~tokenguard.ConfigurationError` for bad options.

    Example::

        history = [{"role": "system", "content": "Be brief."}] + [
            {"role": r, "content": "word " * 400} for r in ["user", "assistant"] * 10
        ] + [{"role": "user", "content": "And now?"}]
        r = tg.fit(history, model="llama3-8b-8192", max_tokens=32_768)
        r.strategy, r.max_tokens, r.tokens_after, r.allowed
        # ('truncate', 512, 5286, 5488): max_tokens lowered to fit 6,000 TPM, then 7
        # old messages dropped
    """
    return run_sync(fit_plan(messages, _known_options(model, options)))


async def fit_async(
    messages: Sequence[Any],
    model: str | ModelInfo = "llama-3.1-8b-instant",
    **options: Unpack[FitOptions],
) -> FitResult:
    """:func:`fit` for coroutines: an async summarizer (or strategy) is awaited.

    Example::

        summarizer = tg.ClientSummarizer(AsyncOpenAI(base_url=GROQ, api_key=KEY))
        r = await tg.fit_async(history, model="llama-3.1-8b-instant",
                               on_overflow="summarize", summarizer=summarizer)
    """
    return await run_async(fit_plan(messages, _known_options(model, options)))
