"""The fitting decision, written once as a plan (see ``tokenguard._drive``).

The plan counts the request, works out its room, and if the prompt does not fit,
truncates, summarizes (yielding one :class:`~tokenguard._drive.Call` per summary the
summarizer must write), or hands the messages to the user's callable. Everything but
those calls is plain, pure code; :func:`~tokenguard.fit` and :func:`~tokenguard.fit_async`
only run the plan.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from .._drive import Call, Plan
from ..counting import PromptCount, count_prompt
from ..errors import ConfigurationError, ContextOverflow, InvalidMessages
from ..events import (
    FitCustom,
    FitEvent,
    FitFallback,
    FitMaxTokensLowered,
    FitOverflow,
    FitSummarized,
    FitTruncated,
    emit,
)
from ..models import ModelInfo
from ._layout import Layout, layout, role_of
from ._room import Bound, Room, room_for
from ._shorten import shorten
from ._summary import SUMMARY_PREFIX, Summarizer, SummaryCache, SummaryRequest, prefix_keys

__all__ = ["FitResult", "Options", "Strategy", "fit_plan"]

Strategy = Literal["truncate", "summarize", "error"]
#: A user strategy: gets the messages and the :class:`Room`, returns the messages to
#: send (or an awaitable of them, for :func:`~tokenguard.fit_async`).
StrategyCallable = Callable[[list[Any], Room], Sequence[Any] | Awaitable[Sequence[Any]]]
_STRATEGIES = ("truncate", "summarize", "error")

# A summary message costs its text plus a few tokens of framing (role header, prefix).
_SUMMARY_FRAMING = 24
# What the summary request adds around the transcript (instructions, headers).
_SUMMARY_REQUEST_FRAMING = 160
# Passes of the final check before giving up (estimated models may need a second).
_MAX_PASSES = 8


@dataclass(frozen=True, eq=False)
class FitResult:
    """What a fit did: the messages to send and every number behind them.

    ``strategy`` is what was done: ``"none"`` (the request fit as it was, possibly with
    ``max_tokens`` lowered), ``"truncate"``, ``"summarize"`` or ``"custom"`` (a callable);
    ``requested`` is the ``on_overflow`` asked for (it differs when summarizing fell back
    to truncation, and ``fallback`` says why). ``tokens_before``/``tokens_after`` are prompt
    tokens (``tokens_after == count_tokens(messages)``); ``allowed`` is the room the prompt
    had: set by ``bound_by`` (``"context_window"``, ``"tpm"`` or ``"budget"``) minus the
    completion reservation, or by the caller's own ceiling on the prompt
    (``"max_prompt_tokens"``, e.g. a :class:`~tokenguard.Conversation`'s). ``max_tokens``
    is what to send (lowered from ``max_tokens_requested`` when that alone made the
    request impossible).

    Example::

        r = tg.fit(history, model="llama3-8b-8192", max_tokens=256)
        client.chat.completions.create(model="llama3-8b-8192", messages=r.messages,
                                       max_tokens=r.max_tokens)
        print(r.strategy, r.tokens_before, "->", r.tokens_after, "of", r.allowed)
    """

    messages: list[Any] = field(repr=False)
    strategy: Literal["none", "truncate", "summarize", "custom"]
    requested: str
    model: str
    exact: bool
    tokens_before: int
    tokens_after: int
    allowed: int
    bound_by: Bound
    max_tokens: int | None
    max_tokens_requested: int | None
    #: Messages left out and not summarized.
    dropped: int = 0
    #: Messages replaced by the summary.
    summarized: int = 0
    #: Messages shortened inside (beginning and end kept, a marker between).
    shortened: int = 0
    #: The summary text that replaced the dropped prefix, if one did.
    summary: str | None = field(default=None, repr=False)
    #: Summarizer calls this fit made (0 with a summary from the cache).
    summary_calls: int = 0
    #: Why a summary was not used (the fit truncated instead), else ``None``.
    fallback: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the messages or ``max_tokens`` differ from what was asked."""
        return self.strategy != "none" or self.max_tokens != self.max_tokens_requested

    @property
    def fill(self) -> float:
        """Share of ``allowed`` the fitted prompt uses."""
        return self.tokens_after / self.allowed


@dataclass(frozen=True)
class Options:
    """The settled options of one fit (validated by :func:`~tokenguard.fit`)."""

    info: ModelInfo
    context_window: int
    tpm: int | None
    budget: int | None
    max_tokens: int | None
    default_reserve: int
    min_completion: int
    shrink_max_tokens: bool
    max_prompt_tokens: int | None
    on_overflow: Strategy | StrategyCallable
    summarizer: Summarizer | None
    summary_cache: SummaryCache
    summary_tokens: int
    headroom: float
    tools: Sequence[Any] | None
    functions: Sequence[Any] | None

    @property
    def requested(self) -> str:
        return self.on_overflow if isinstance(self.on_overflow, str) else "custom"

    def check(self) -> None:
        if isinstance(self.on_overflow, str):
            if self.on_overflow not in _STRATEGIES:
                raise ConfigurationError(
                    f"on_overflow={self.on_overflow!r}; expected one of {list(_STRATEGIES)} "
                    "or a callable(messages, room)"
                )
        elif not callable(self.on_overflow):
            raise ConfigurationError(
                f"on_overflow must be a strategy name or a callable, got "
                f"{type(self.on_overflow).__name__}"
            )
        if self.on_overflow == "summarize" and self.summarizer is None:
            raise ConfigurationError(
                'on_overflow="summarize" needs summarizer= (e.g. tg.ClientSummarizer(client))'
            )
        if self.summarizer is not None and not callable(self.summarizer):
            raise ConfigurationError(
                f"summarizer must be callable(SummaryRequest) -> str, got "
                f"{type(self.summarizer).__name__}"
            )
        if not 0.0 <= self.headroom < 1.0:
            raise ConfigurationError(f"headroom must be in [0, 1), got {self.headroom!r}")
        if self.summary_tokens < 16:
            raise ConfigurationError(f"summary_tokens must be >= 16, got {self.summary_tokens}")


class _Counting:
    """The one place fitting asks for counts (always through ``count_prompt``)."""

    __slots__ = ("functions", "model", "tools")

    def __init__(self, opts: Options) -> None:
        self.model = opts.info
        self.tools = opts.tools
        self.functions = opts.functions

    def prompt(self, messages: Sequence[Any]) -> PromptCount:
        return count_prompt(messages, self.model, tools=self.tools, functions=self.functions)

    def total(self, messages: Sequence[Any]) -> int:
        return self.prompt(messages).total

    def one(self, message: Any) -> int:
        """What ``message`` costs in a request (its framing and content)."""
        return count_prompt([message], self.model).messages[0]


def fit_plan(messages: Sequence[Any], opts: Options) -> Plan[FitResult]:
    """Fit ``messages`` to their room under ``opts``; yields only summarizer/strategy calls."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidMessages(
            f"messages must be a list of message dicts, got {type(messages).__name__}"
        )
    counting = _Counting(opts)
    pc = counting.prompt(messages)
    room = room_for(
        pc.total,
        context_window=opts.context_window,
        tpm=opts.tpm,
        budget=opts.budget,
        max_tokens=opts.max_tokens,
        max_completion_tokens=opts.info.max_completion_tokens,
        default_reserve=opts.default_reserve,
        min_completion=opts.min_completion,
        shrink_max_tokens=opts.shrink_max_tokens,
        max_prompt_tokens=opts.max_prompt_tokens,
    )
    msgs = messages if type(messages) is list else list(messages)
    if pc.total <= room.allowed:
        result = _result(msgs, "none", opts, pc, room, pc.total)
        if result.changed:
            _report(FitMaxTokensLowered, result)
        return result
    if opts.on_overflow == "error":
        _overflow(opts, room, pc.total, "on_overflow='error' and the prompt needs")
    if callable(opts.on_overflow):
        out = yield Call(opts.on_overflow, None, list(msgs), room)
        return _custom(out, opts, pc, room, counting)
    lay = layout(msgs)
    fallback = None
    if opts.on_overflow == "summarize":
        outcome = yield from _summarize(msgs, pc, lay, room, opts, counting)
        if isinstance(outcome, FitResult):
            return outcome
        fallback = outcome
    return _truncate(msgs, pc, lay, room, opts, counting, fallback)


def _result(
    messages: list[Any],
    strategy: Literal["none", "truncate", "summarize", "custom"],
    opts: Options,
    pc: PromptCount,
    room: Room,
    after: int,
    **counts: Any,
) -> FitResult:
    return FitResult(
        messages=messages,
        strategy=strategy,
        requested=opts.requested,
        model=pc.model,
        exact=pc.exact,
        tokens_before=pc.total,
        tokens_after=after,
        allowed=room.allowed,
        bound_by=room.bound_by,
        max_tokens=room.max_tokens,
        max_tokens_requested=room.max_tokens_requested,
        **counts,
    )


def _report(kind: type[FitEvent], r: FitResult) -> None:
    emit(
        kind(
            model=r.model,
            strategy=r.strategy,
            requested=r.requested,
            tokens_before=r.tokens_before,
            tokens_after=r.tokens_after,
            allowed=r.allowed,
            bound_by=r.bound_by,
            dropped=r.dropped,
            summarized=r.summarized,
            shortened=r.shortened,
            summary_calls=r.summary_calls,
            max_tokens_from=r.max_tokens_requested,
            max_tokens_to=r.max_tokens,
            fallback=r.fallback,
        )
    )


def _overflow(opts: Options, room: Room, needed: int, why: str) -> NoReturn:
    emit(
        FitOverflow(
            model=opts.info.name,
            requested=opts.requested,
            needed=needed,
            allowed=room.allowed,
            bound_by=room.bound_by,
            reason=why,
        )
    )
    raise ContextOverflow(
        f"{why} {needed} tokens; {room.allowed} are allowed ({room.ceiling} bound by "
        f"{room.bound_by}, "
        f"minus {room.reserve} reserved for the completion)",
        needed=needed,
        available=room.allowed,
        limit_name=room.bound_by,
    )


def _fixed_part(system: bool, tools: bool) -> str:
    """What the part of a prompt that fitting cannot drop is made of, as an error names it."""
    parts = [p for p, has in (("the system messages", system), ("tool definitions", tools)) if has]
    return " and ".join(parts) if parts else "the prompt's fixed framing (no system messages)"


def _not_awaitable(value: Any, what: str) -> None:
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if callable(close):
            close()  # never awaited: silence "coroutine was never awaited"
        raise ConfigurationError(
            f"{what} returned an awaitable in a synchronous fit; use tg.fit_async "
            "(or an async Conversation method) with an async callable"
        )


def _custom(out: Any, opts: Options, pc: PromptCount, room: Room, counting: _Counting) -> FitResult:
    _not_awaitable(out, "the on_overflow callable")
    if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
        raise ConfigurationError(
            f"the on_overflow callable returned {type(out).__name__}; expected a list of messages"
        )
    fitted = list(out)
    after = counting.total(fitted)
    if after > room.allowed:
        _overflow(opts, room, after, "the on_overflow callable returned messages needing")
    result = _result(fitted, "custom", opts, pc, room, after)
    _report(FitCustom, result)
    return result


# -- truncation ----------------------------------------------------------------------------


def _truncate(
    msgs: list[Any],
    pc: PromptCount,
    lay: Layout,
    room: Room,
    opts: Options,
    counting: _Counting,
    fallback: str | None,
) -> FitResult:
    fixed = pc.overhead + pc.tools + sum([pc.messages[i] for i in lay.system])
    if fixed > room.allowed:
        _overflow(opts, room, fixed, f"{_fixed_part(bool(lay.system), bool(pc.tools))} alone need")
    case = _Case(msgs, pc, lay, room, opts, counting)
    replaced: dict[int, Any] = {}
    turn_cost = _fit_turn(case, fixed, replaced)
    out, after = _keep_newest(case, fixed + turn_cost, replaced)
    result = _result(
        out,
        "truncate",
        opts,
        pc,
        room,
        after,
        dropped=len(msgs) - len(out),
        shortened=len(replaced),
        fallback=fallback,
    )
    _report(FitTruncated if fallback is None else FitFallback, result)
    return result


@dataclass(frozen=True)
class _Case:
    """One request being truncated: its messages, their count and layout, its room."""

    msgs: list[Any]
    pc: PromptCount
    lay: Layout
    room: Room
    opts: Options
    counting: _Counting


def _fit_turn(case: _Case, fixed: int, replaced: dict[int, Any]) -> int:
    """What the newest turn costs, after shortening its messages (into ``replaced``) when
    it does not fit beside the ``fixed`` part; raises when it cannot be made to fit."""
    turn, room = case.lay.turn, case.room
    turn_cost = sum([case.pc.messages[i] for i in turn])
    if fixed + turn_cost <= room.allowed:
        return turn_cost
    # A budget is what the caller chose to spend, not a limit of the model: it may
    # drop history, never cut the question itself (the call is refused instead).
    short = None
    if room.bound_by != "budget":
        target = room.allowed - fixed
        short = _shorten_turn(case.msgs, turn, case.pc.messages, target, case.counting, replaced)
    if short is None:
        _overflow(case.opts, room, fixed + turn_cost, "the newest turn needs")
    return short


def _keep_newest(case: _Case, taken: int, replaced: dict[int, Any]) -> tuple[list[Any], int]:
    """The system messages, the newest history units that fit beside the ``taken``
    tokens, and the newest turn; with their count."""
    msgs, lay, counting = case.msgs, case.lay, case.counting
    costs, units, allowed = case.pc.messages, lay.units, case.room.allowed
    slack = 0
    for _ in range(_MAX_PASSES):
        left = allowed - taken - slack
        first = len(units)
        # The newest units that fit, as one run: the kept history reads without gaps.
        while first > 0:
            cost = sum([costs[i] for i in units[first - 1]])
            if cost > left:
                break
            left -= cost
            first -= 1
        first = _opening(msgs, units, first, lay.turn)
        kept = sorted([*lay.system, *lay.turn, *(i for u in units[first:] for i in u)])
        out = [replaced.get(i, msgs[i]) if replaced else msgs[i] for i in kept]
        after = counting.total(out)
        if after <= allowed:
            return out, after
        # Only estimates (or a merged system header) can land here: ask for the overshoot.
        slack += after - allowed
    # Not reached: the sum of the costs bounds the count, so one pass is enough.
    _overflow(case.opts, case.room, after, "the truncated request still needs")  # pragma: no cover


def _opening(
    msgs: list[Any], units: tuple[list[int], ...], first: int, turn: tuple[int, ...]
) -> int:
    """The first history unit to keep from ``first`` on, so that the kept conversation
    opens (after the system messages) with a user message: an answer or a tool result
    whose question was dropped goes too."""
    start = turn[0] if turn else len(msgs)
    while (
        first < len(units) and units[first][0] < start and role_of(msgs[units[first][0]]) != "user"
    ):
        first += 1
    return first


def _shorten_turn(
    msgs: list[Any],
    turn: tuple[int, ...],
    costs: tuple[int, ...],
    target: int,
    counting: _Counting,
    replaced: dict[int, Any],
) -> int | None:
    """Shorten the largest messages of the current turn until it costs at most ``target``."""
    cost = {i: costs[i] for i in turn}
    need = sum(cost.values()) - target
    for i in sorted(turn, key=lambda j: -cost[j]):
        if need <= 0:
            break
        goal = max(0, cost[i] - need)
        cut = shorten(msgs[i], goal, counting.one)
        if cut is None:
            continue
        new, new_cost = cut
        if new_cost >= cost[i]:
            continue
        if new != msgs[i]:
            # Equal: the message alone costs less than its share of a bounded count, so
            # it stays whole (and is not reported as shortened).
            replaced[i] = new
        need -= cost[i] - new_cost
        cost[i] = new_cost
    if need > 0:
        return None
    return sum(cost.values())


# -- summarization -------------------------------------------------------------------------


def _assemble(msgs: list[Any], lay: Layout, upto: int, summary: str | None) -> list[Any]:
    """``msgs`` with ``units[:upto]`` replaced by one summary message where they began."""
    dropped = {i for u in lay.units[:upto] for i in u}
    start = lay.units[0][0] if upto and lay.units else -1
    out: list[Any] = []
    for i, m in enumerate(msgs):
        if i == start and summary is not None:
            out.append({"role": "system", "content": SUMMARY_PREFIX + summary})
        if i not in dropped:
            out.append(m)
    return out


def _summarize(
    msgs: list[Any],
    pc: PromptCount,
    lay: Layout,
    room: Room,
    opts: Options,
    counting: _Counting,
) -> Plan[FitResult | str]:
    """A summarized fit, or the reason (a str) why truncation must do instead."""
    costs = pc.messages
    units, free = _summarizable(len(msgs), pc, lay, room)
    if not units:
        return "nothing before the newest turn to summarize"
    summary_tokens = min(opts.summary_tokens, free // 3)
    if summary_tokens < 16:
        return "no room left for a summary"
    keys = prefix_keys(msgs, units, pc.model)
    done, summary = _cached_summary(opts.summary_cache, keys, len(units))
    if summary is not None:
        out = _assemble(msgs, lay, done, summary)
        after = counting.total(out)
        if after <= room.allowed:
            return _summarized(out, msgs, lay, done, summary, 0, opts, pc, room, after)
    unit_costs = [sum([costs[i] for i in u]) for u in units]
    # Keep a tail that leaves ``headroom`` of the space free, so the next turns fit
    # without another summary.
    tail_room = int((free - summary_tokens - _SUMMARY_FRAMING) * (1.0 - opts.headroom))
    upto = _summary_end(unit_costs, done, tail_room)
    if upto is None:
        return "the summary alone leaves too little room"
    # Each summary request must itself fit the model's room: fold long stretches in
    # several steps, each carrying the summary so far.
    written: list[tuple[bytes, str]] = []
    k = done
    try:
        while k < upto:
            previous = counting.one({"role": "user", "content": summary}) if summary else 0
            chunk_room = room.ceiling - summary_tokens - previous - _SUMMARY_REQUEST_FRAMING
            j = _chunk_end(unit_costs, k, upto, chunk_room)
            request = SummaryRequest(
                messages=tuple(msgs[i] for u in units[k:j] for i in u),
                previous=summary,
                max_tokens=summary_tokens,
                model=pc.model,
            )
            summary = yield from _write_summary(opts, request)
            k = j
            written.append((keys[k], summary))
    except _NoSummary as why:
        return str(why)
    out = _assemble(msgs, lay, upto, summary)
    after = counting.total(out)
    if after > room.allowed:
        return f"the summary did not fit ({after} tokens with it, {room.allowed} allowed)"
    for key, text in written:
        opts.summary_cache.put(key, text)
    return _summarized(out, msgs, lay, upto, summary, len(written), opts, pc, room, after)


def _summarizable(
    n: int, pc: PromptCount, lay: Layout, room: Room
) -> tuple[tuple[list[int], ...], int]:
    """The history units a summary may replace, and the tokens they and the summary may
    use together: only history before the newest user message is summarized; units
    between it and the newest exchange stay verbatim (truncation may still drop them)."""
    costs = pc.messages
    fixed = pc.overhead + pc.tools + sum([costs[i] for i in lay.system])
    boundary = lay.turn[0] if lay.turn else n
    units = tuple(u for u in lay.units if u[0] < boundary)
    later = sum([costs[i] for u in lay.units[len(units) :] for i in u])
    return units, room.allowed - fixed - later - sum([costs[i] for i in lay.turn])


class _NoSummary(Exception):
    """Why the summarizer gave no summary (the fit falls back to truncation)."""


def _cached_summary(cache: SummaryCache, keys: list[bytes], n: int) -> tuple[int, str | None]:
    """The longest prefix of the ``n`` units with a cached summary: ``(units, summary)``."""
    for k in range(n, 0, -1):
        cached = cache.get(keys[k])
        if cached is not None:
            return k, cached
    return 0, None


def _summary_end(unit_costs: list[int], done: int, tail_room: int) -> int | None:
    """How many units to summarize (more than the ``done`` already summarized), keeping
    verbatim the newest ones that fit in ``tail_room``; ``None`` when none is left."""
    upto, tail = len(unit_costs), 0
    while upto > done and tail + unit_costs[upto - 1] <= tail_room:
        upto -= 1
        tail += unit_costs[upto]
    if upto > done:
        return upto
    return None if done >= len(unit_costs) else done + 1


def _chunk_end(unit_costs: list[int], k: int, upto: int, room: int) -> int:
    """The end of the stretch from unit ``k`` that one summary request can carry (at
    least one unit)."""
    j, size = k, 0
    while j < upto and (j == k or size + unit_costs[j] <= room):
        size += unit_costs[j]
        j += 1
    return j


def _write_summary(opts: Options, request: SummaryRequest) -> Plan[str]:
    """One summary from the user's summarizer, stripped; :class:`_NoSummary` when it
    failed or wrote nothing."""
    assert opts.summarizer is not None
    try:
        text = yield Call(opts.summarizer, None, request)
    except Exception as exc:  # the summary is optional: truncation still answers
        raise _NoSummary(f"the summarizer failed ({type(exc).__name__})") from None
    _not_awaitable(text, "the summarizer")
    if not isinstance(text, str):
        raise ConfigurationError(
            f"the summarizer returned {type(text).__name__}; expected the summary as a str"
        )
    text = text.strip()
    if not text:
        raise _NoSummary("the summarizer returned an empty summary")
    return text


def _summarized(
    out: list[Any],
    msgs: list[Any],
    lay: Layout,
    upto: int,
    summary: str | None,
    calls: int,
    opts: Options,
    pc: PromptCount,
    room: Room,
    after: int,
) -> FitResult:
    result = _result(
        out,
        "summarize",
        opts,
        pc,
        room,
        after,
        summarized=sum(len(u) for u in lay.units[:upto]),
        summary=summary,
        summary_calls=calls,
    )
    _report(FitSummarized, result)
    return result
