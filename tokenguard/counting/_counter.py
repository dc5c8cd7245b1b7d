"""The counter: the facade over the meter registry (``_registry``) and the meters.

It chooses the fast path or the general one, turns a meter's :class:`~._meter.Tally`
into the public values (:class:`~tokenguard.PromptCount`,
:class:`~tokenguard.RequestCount`) and feeds the server's counts back to calibration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .._tokenizer_data import get_encoding
from ..errors import InvalidRequest
from ..events import CountingMismatch, emit
from ..models import DEFAULT_RESERVE, ModelInfo
from ._calibration import Calibration
from ._estimate import IMAGE_TOKENS
from ._meter import Meter, Request, Settings, Tally
from ._registry import MeterRegistry
from ._request_options import check_completion_cap, option_allowance, read_request_options
from ._result import PromptCount, RequestCount
from ._tokenizers import ordinary_counter

__all__ = ["DEFAULT_MAX_MESSAGES", "DEFAULT_MAX_NEW_CHARS", "Counter"]

#: Characters a single request may bring that were not counted before. Far beyond any
#: context window (Groq's largest is 131,072 tokens, ~0.5M characters) yet small enough
#: that tokenizing it stays under a few seconds.
DEFAULT_MAX_NEW_CHARS = 16_000_000
DEFAULT_MAX_MESSAGES = 100_000


class Counter:
    """Counts chat requests' prompt tokens for Groq models, with caches and calibration.

    One process-wide instance backs :func:`tokenguard.count_tokens`; make your own for
    separate caches or limits. Thread-safe.

    ``cache_bytes`` bounds each tokenizer's cache of message counts (see ``_cache``);
    ``max_new_chars`` rejects a request bringing more not-yet-counted text than that;
    ``image_tokens`` is charged per image part.

    Example::

        counter = Counter(cache_bytes=8 << 20)
        counter.count([{"role": "user", "content": "Hello"}], model="llama3-8b-8192")  # 11
    """

    def __init__(
        self,
        *,
        cache_bytes: int = 32 << 20,
        front_chars: int = 4 << 20,
        max_new_chars: int = DEFAULT_MAX_NEW_CHARS,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        image_tokens: int = IMAGE_TOKENS,
        calibration: Callable[[], Calibration] = Calibration,
    ) -> None:
        self.cache_bytes = cache_bytes
        self.front_chars = front_chars
        self.max_new_chars = max_new_chars
        self.max_messages = max_messages
        self.image_tokens = image_tokens
        self._settings = Settings(
            cache_bytes=cache_bytes,
            front_chars=front_chars,
            max_new_chars=max_new_chars,
            max_messages=max_messages,
            image_tokens=image_tokens,
        )
        self._registry = MeterRegistry(self._settings, calibration=calibration)
        self._mismatch_logged: set[str] = set()

    def count(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
        **request: Any,
    ) -> int:
        """Prompt tokens of a request, as Groq will report them (or a conservative estimate).

        ``request`` takes every other keyword of ``chat.completions.create`` (see
        ``_request_options``): those that change the prompt are counted, the rest ignored.

        Example::

            Counter().count([{"role": "user", "content": "Hi"}], model="llama-3.1-8b-instant")
        """
        meter = self._registry.meter(model)
        options = read_request_options(request)[0] if request else None
        if functions is None:
            fast = meter.count_fast(messages, tools, options)
            if fast is not None:
                return fast
        return self._general(meter, messages, tools, functions, options).total

    def count_prompt(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
        **request: Any,
    ) -> PromptCount:
        """The prompt tokens of a request broken down per message (see :class:`PromptCount`).

        ``total`` is what :meth:`count` gives for the same request; removing messages
        changes an exact count by the sum of their costs.

        Example::

            pc = Counter().count_prompt(msgs, model="llama-3.1-8b-instant")
            pc.total == pc.overhead + pc.tools + sum(pc.messages)
        """
        meter = self._registry.meter(model)
        options = read_request_options(request)[0] if request else None
        tally = self._tally(meter, messages, tools, functions, options)
        return PromptCount(
            messages=tuple(tally.costs),
            overhead=tally.overhead,
            tools=tally.tools,
            total=tally.total,
            exact=tally.exact,
            model=meter.info.name,
        )

    def count_request(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
        max_tokens: int | None = None,
        default_reserve: int | None = None,
        **request: Any,
    ) -> RequestCount:
        """Prompt tokens plus the completion reservation of one request.

        The reservation is ``max_tokens`` when given, else what the server holds for a
        call without it, as the guard counts it: ``default_reserve`` (default
        :data:`~tokenguard.models.DEFAULT_RESERVE`, 1024) capped by the model's
        ``max_completion_tokens`` and the room left in the context window (never
        negative). :meth:`RequestCount.refusal` says whether the server would refuse it.

        Example::

            Counter().count_request(msgs, model="llama-3.3-70b-versatile", max_tokens=512)
        """
        max_tokens = check_completion_cap("max_tokens", max_tokens)
        meter = self._registry.meter(model)
        options = None
        if request:
            options, budget = read_request_options(request)
            # The SDKs send max_completion_tokens over max_tokens when both are given.
            if budget is not None and (max_tokens is None or "max_completion_tokens" in request):
                max_tokens = budget
        tally = self._tally(meter, messages, tools, functions, options)
        info = meter.info
        reserve = _reserve(info, tally.total, max_tokens, default_reserve)
        return RequestCount(
            prompt_tokens=tally.total,
            completion_reserve=reserve,
            total=tally.total + reserve,
            exact=tally.exact,
            model=info.name,
            raw_prompt_tokens=tally.raw,
            basis=tally.basis,
        )

    def _tally(
        self,
        meter: Meter,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        functions: Sequence[Any] | None,
        options: dict[str, Any] | None,
    ) -> Tally:
        """The meter's fast path when it answers, else the general path."""
        if functions is None:
            tally = meter.prompt_fast(messages, tools, options)
            if tally is not None:
                return tally
        return self._general(meter, messages, tools, functions, options)

    def _general(
        self,
        meter: Meter,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        functions: Sequence[Any] | None,
        options: dict[str, Any] | None = None,
    ) -> Tally:
        if options:
            # Tools given through extra_body count as tools given by name.
            tools = options.pop("tools", None) if tools is None else tools
            functions = options.pop("functions", None) if functions is None else functions
            options.pop("tools", None)
            options.pop("functions", None)
        request = Request.of(
            messages,
            tools=tools,
            functions=functions,
            max_messages=self.max_messages,
            options=options,
        )
        tally = meter.count(request)
        if not options:
            return tally
        # Options the meter does not render itself are charged as allowances (a bound).
        handled: frozenset[str] = getattr(meter, "handles_options", frozenset())
        extra = option_allowance(options, _allowance_counter(), handled=handled)
        if not extra:
            return tally
        basis = tally.basis
        if basis is not None:
            basis = dataclasses.replace(basis, overhead=basis.overhead + extra)
        return tally._replace(
            overhead=tally.overhead + extra,
            total=tally.total + extra,
            raw=tally.raw + extra,
            exact=False,
            basis=basis,
        )

    def observe(self, count: RequestCount, actual_prompt_tokens: int) -> None:
        """Learn from the server's ``usage.prompt_tokens`` for a request counted as ``count``.

        For estimated models this updates the model's calibration. For exact models it
        only reports a disagreement (one ``tokenguard.counting.mismatch`` event per model).

        Example::

            rc = counter.count_request(msgs, model="qwen/qwen3-32b")
            resp = client.chat.completions.create(messages=msgs, model="qwen/qwen3-32b")
            counter.observe(rc, resp.usage.prompt_tokens)
        """
        if isinstance(actual_prompt_tokens, bool) or not isinstance(actual_prompt_tokens, int):
            return
        if count.exact:
            if actual_prompt_tokens != count.prompt_tokens and count.model not in (
                self._mismatch_logged
            ):
                self._mismatch_logged.add(count.model)
                emit(
                    CountingMismatch(
                        model=count.model,
                        counted=count.prompt_tokens,
                        reported=actual_prompt_tokens,
                    )
                )
            return
        basis = count.basis
        if basis is not None:
            self.calibration(count.model).observe(
                content=basis.content,
                overhead=basis.overhead,
                actual=actual_prompt_tokens,
                bucket=basis.bucket,
                key=basis.key,
            )

    def calibration(self, model: str) -> Calibration:
        """The :class:`Calibration` of ``model`` (created on first use)."""
        return self._registry.calibration(model)

    def clear_caches(self) -> None:
        """Forget every cached count (calibrations are kept)."""
        self._registry.clear_caches()

    def cache_stats(self) -> dict[str, int]:
        """Sizes of the caches: ``lru_bytes``, ``front_chars``, ``entries``, ``computed``."""
        caches = self._registry.caches()
        return {
            "lru_bytes": sum(c.lru_bytes for c in caches),
            "front_chars": sum(c.front_size for c in caches),
            "entries": sum(len(c) for c in caches),
            "computed": sum(c.computed for c in caches),
        }

    def cache_bytes_used(self) -> int:
        """Bytes charged to the LRU level of every cache (each bounded by ``cache_bytes``)."""
        return sum(c.lru_bytes for c in self._registry.caches())


def _reserve(
    info: ModelInfo, prompt: int, max_tokens: int | None, default_reserve: int | None
) -> int:
    """The completion reservation of a request of ``prompt`` tokens (see ``count_request``)."""
    reserve = max_tokens if max_tokens is not None else default_reserve
    if reserve is None:
        room = min(info.max_completion_tokens, info.context_window - prompt)
        return max(0, min(DEFAULT_RESERVE, room))
    if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
        raise InvalidRequest(
            f"default_reserve must be a non-negative int, got {reserve!r}",
            field="default_reserve",
        )
    return reserve


_allowance_count: list[Callable[[str], int]] = []


def _allowance_counter() -> Callable[[str], int]:
    """cl100k_base, the most verbose vocabulary at hand, for allowances of any family."""
    if not _allowance_count:
        _allowance_count.append(ordinary_counter(get_encoding("cl100k_base")))
    return _allowance_count[0]
