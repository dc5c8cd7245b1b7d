"""The counter: exact Llama 3 counts, conservative estimates, caching and calibration."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import tiktoken

from .._tokenizer_data import available, get_encoding
from ..errors import InvalidMessages
from ..events import CountMismatch, emit
from ..models import ModelInfo, get_model
from ._cache import TextCache
from ._calibration import Calibration, bucket_of
from ._estimate import IMAGE_TOKENS, EstimateRule, estimate_rule
from ._llama3 import Llama3Costs
from ._messages import Message, normalize_message, render_tools
from ._result import CalibrationBasis, PromptCount, RequestCount

__all__ = ["Counter"]

_DIGIT = re.compile(r"\d")

#: Characters a single request may bring that were not counted before. Far beyond any
#: context window (Groq's largest is 131,072 tokens, ~0.5M characters) yet small enough
#: that tokenizing it stays under a few seconds.
DEFAULT_MAX_NEW_CHARS = 16_000_000
DEFAULT_MAX_MESSAGES = 100_000


class _Tally(NamedTuple):
    """One request counted on the general path, broken down for :class:`PromptCount`."""

    costs: list[int]
    overhead: int
    tools: int
    total: int
    raw: int
    exact: bool
    basis: CalibrationBasis | None


class _ExactPlan:
    """Counting for one model with the Llama 3 tokenizer and a known template."""

    __slots__ = ("cache", "costs", "info")

    def __init__(self, info: ModelInfo, cache: TextCache[int], costs: Llama3Costs) -> None:
        self.info = info
        self.cache = cache
        self.costs = costs


class _EstimatePlan:
    """Estimation for one model whose tokenizer is not at hand."""

    __slots__ = ("cache", "calibration", "info", "rule")

    def __init__(
        self,
        info: ModelInfo,
        rule: EstimateRule,
        cache: TextCache[tuple[int, int, int]],
        calibration: Calibration,
    ) -> None:
        self.info = info
        self.rule = rule
        self.cache = cache
        self.calibration = calibration


# tiktoken's regex engine gives up on pathological text (about a million blank
# characters in a row): a ValueError, or a Rust panic surfacing as pyo3's
# PanicException (a BaseException) after printing a backtrace. Such text is counted in
# slices, as the emulator does; the count may then differ by a token per slice. Long
# blank runs are sliced up front, so the panic is not even attempted.
_SLICE = 50_000
_LONG_BLANK_RUN = re.compile(r"\s{200000}")


def _tokenizer_gave_up(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) or type(exc).__name__ == "PanicException"


def _sliced(encode: Callable[[str], list[int]], text: str) -> int:
    if len(text) < 200_000 or _LONG_BLANK_RUN.search(text) is None:
        try:
            return len(encode(text))
        except BaseException as exc:
            if not _tokenizer_gave_up(exc):
                raise
    return sum(len(encode(text[i : i + _SLICE])) for i in range(0, len(text), _SLICE))


def _ordinary_counter(enc: tiktoken.Encoding) -> Callable[[str], int]:
    """Counts ``text`` as plain text (special-token lookalikes are ordinary characters)."""
    encode = enc.encode_ordinary

    def count(text: str) -> int:
        return _sliced(encode, text)

    return count


def _server_counter(enc: tiktoken.Encoding, *, strip: bool = False) -> Callable[[str], int]:
    """Counts ``text`` as the server encodes a rendered prompt: special tokens recognised.

    With ``strip``, counts ``text.strip()`` (a message body as the template renders it).
    """
    encode = enc.encode_ordinary
    # The cold path is dominated by this call: skip tiktoken's Python wrapper when the
    # core is reachable (its only extra is a surrogate fallback; surrogates are rejected
    # before counting).
    core = getattr(getattr(enc, "_core_bpe", None), "encode_ordinary", None)
    fast: Callable[[str], list[int]] = core if callable(core) else encode
    specials = enc.special_tokens_set

    def encode_special(text: str) -> list[int]:
        return enc.encode(text, allowed_special=specials)

    def count(text: str) -> int:
        if strip:
            text = text.strip()
        # Every special token starts with "<|"; without one the cheaper call is identical.
        if "<|" in text:
            return _sliced(encode_special, text)
        if len(text) < _SLICE:
            return len(fast(text))
        return _sliced(encode, text)

    return count


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
        self._new_calibration = calibration
        self._lock = threading.Lock()
        self._plans: dict[str, _ExactPlan | _EstimatePlan] = {}
        self._exact_caches: dict[str, TextCache[int]] = {}
        self._costs: dict[str, Llama3Costs] = {}
        self._estimate_caches: dict[tuple[str, bool], TextCache[tuple[int, int, int]]] = {}
        self._calibrations: dict[str, Calibration] = {}
        self._mismatch_logged: set[str] = set()

    # -- public API ---------------------------------------------------------------

    def count(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        """Prompt tokens of a request, as Groq will report them (or a conservative estimate).

        Example::

            Counter().count([{"role": "user", "content": "Hi"}], model="llama-3.1-8b-instant")
        """
        plan = self._plan(model)
        if type(plan) is _ExactPlan and tools is None and functions is None:
            fast = self._fast_exact(plan, messages)
            if fast is not None:
                return fast
        return self._count(plan, messages, tools, functions).total

    def count_request(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
        max_tokens: int | None = None,
        default_reserve: int | None = None,
    ) -> RequestCount:
        """Prompt tokens plus the completion reservation of one request.

        The reservation is ``max_tokens`` when given, else ``default_reserve`` when given,
        else what the model could still generate: ``min(max_completion_tokens,
        context_window - prompt_tokens)`` (never negative).

        Example::

            Counter().count_request(msgs, model="llama-3.3-70b-versatile", max_tokens=512)
        """
        plan = self._plan(model)
        fast = None
        if type(plan) is _ExactPlan and tools is None and functions is None:
            fast = self._fast_exact(plan, messages)
        if fast is not None:
            # Plain text messages only: exact, nothing to calibrate.
            prompt, raw, exact, basis = fast, fast, True, None
        else:
            tally = self._count(plan, messages, tools, functions)
            prompt, raw, exact, basis = tally.total, tally.raw, tally.exact, tally.basis
        info = plan.info
        reserve = max_tokens if max_tokens is not None else default_reserve
        if reserve is None:
            reserve = max(0, min(info.max_completion_tokens, info.context_window - prompt))
        elif isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
            raise InvalidMessages(f"max_tokens must be a non-negative int, got {reserve!r}")
        return RequestCount(
            prompt_tokens=prompt,
            completion_reserve=reserve,
            total=prompt + reserve,
            exact=exact,
            model=info.name,
            raw_prompt_tokens=raw,
            basis=basis,
        )

    def count_prompt(
        self,
        messages: Sequence[Any],
        model: str | ModelInfo = "llama-3.1-8b-instant",
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> PromptCount:
        """The prompt tokens of a request broken down per message (see :class:`PromptCount`).

        ``total`` is what :meth:`count` gives for the same request; removing messages
        changes an exact count by the sum of their costs.

        Example::

            pc = Counter().count_prompt(msgs, model="llama-3.1-8b-instant")
            pc.total == pc.overhead + pc.tools + sum(pc.messages)
        """
        plan = self._plan(model)
        tally = self._count(plan, messages, tools, functions)
        return PromptCount(
            messages=tuple(tally.costs),
            overhead=tally.overhead,
            tools=tally.tools,
            total=tally.total,
            exact=tally.exact,
            model=plan.info.name,
        )

    def observe(self, count: RequestCount, actual_prompt_tokens: int) -> None:
        """Learn from the server's ``usage.prompt_tokens`` for a request counted as ``count``.

        For estimated models this updates the model's calibration. For exact models it
        only reports a disagreement (one ``prompt_count_mismatch`` warning per model).

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
                    CountMismatch(
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
        cal = self._calibrations.get(model)
        if cal is None:
            with self._lock:
                cal = self._calibrations.setdefault(model, self._new_calibration())
        return cal

    def clear_caches(self) -> None:
        """Forget every cached count (calibrations are kept)."""
        with self._lock:
            for cache in self._exact_caches.values():
                cache.clear()
            for est in self._estimate_caches.values():
                est.clear()

    def cache_stats(self) -> dict[str, int]:
        """Sizes of the caches: ``lru_bytes``, ``front_chars``, ``entries``, ``computed``."""
        caches: list[TextCache[Any]] = [*self._exact_caches.values()]
        caches.extend(self._estimate_caches.values())
        return {
            "lru_bytes": sum(c.lru_bytes for c in caches),
            "front_chars": sum(c.front_size for c in caches),
            "entries": sum(len(c) for c in caches),
            "computed": sum(c.computed for c in caches),
        }

    def cache_bytes_used(self) -> int:
        """Bytes charged to the LRU level of every cache (each bounded by ``cache_bytes``)."""
        caches: list[TextCache[Any]] = [*self._exact_caches.values()]
        caches.extend(self._estimate_caches.values())
        return sum(c.lru_bytes for c in caches)

    # -- plans --------------------------------------------------------------------

    def _plan(self, model: str | ModelInfo) -> _ExactPlan | _EstimatePlan:
        if isinstance(model, ModelInfo):
            info = model
        elif isinstance(model, str) and model:
            info = get_model(model)
        else:
            raise InvalidMessages(f"model must be a non-empty str, got {model!r}")
        plan = self._plans.get(info.name)
        if plan is not None and plan.info is info:
            return plan
        plan = self._make_plan(info)
        with self._lock:
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[info.name] = plan
        return plan

    def _make_plan(self, info: ModelInfo) -> _ExactPlan | _EstimatePlan:
        if info.exact and info.template is not None and available("llama3"):
            with self._lock:
                cache = self._exact_caches.get("llama3")
                if cache is None:
                    cache = TextCache(
                        _server_counter(get_encoding("llama3"), strip=True),
                        max_bytes=self.cache_bytes,
                        front_chars=self.front_chars,
                    )
                    self._exact_caches["llama3"] = cache
                costs = self._costs.get(info.template)
                if costs is None:
                    costs = Llama3Costs(info.template, _server_counter(get_encoding("llama3")))
                    self._costs[info.template] = costs
            return _ExactPlan(info, cache, costs)
        rule = estimate_rule(info.tokenizer)
        key = (rule.encoding, rule.digits_single)
        with self._lock:
            est = self._estimate_caches.get(key)
            if est is None:
                est = TextCache(
                    _estimator(get_encoding(rule.encoding), rule.digits_single),
                    max_bytes=self.cache_bytes,
                    front_chars=self.front_chars,
                )
                self._estimate_caches[key] = est
        return _EstimatePlan(info, rule, est, self.calibration(info.name))

    # -- counting -----------------------------------------------------------------

    def _fast_exact(self, plan: _ExactPlan, messages: Sequence[Any]) -> int | None:
        """The common path: a list of plain ``{"role", "content": str}`` dicts.

        Cached counts cost a dict lookup each; new texts are counted in one batch.
        Returns ``None`` as soon as anything needs the general path.
        """
        if type(messages) is not list or len(messages) > self.max_messages:
            return None
        costs = plan.costs
        role_cost: Mapping[Any, int] = costs.role_cost
        front_get = plan.cache.front.get
        total = costs.base
        missing: list[str] | None = None
        try:
            for m in messages:
                if type(m) is not dict or len(m) != 2:
                    return None
                rc = role_cost.get(m.get("role"))
                content = m.get("content")
                if rc is None or type(content) is not str:
                    return None
                n = front_get(content)
                if n is None:
                    if missing is None:
                        missing = []
                    missing.append(content)
                    total += rc
                else:
                    total += rc + n
        except TypeError:  # an unhashable role; the general path explains it
            return None
        if not messages:
            return None
        if missing is not None:
            # New text: checked here, and on any problem the general path names the message.
            if sum(map(len, missing)) > self.max_new_chars:
                return None
            for text in missing:
                if not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        return None
            total += sum(plan.cache.get_many(missing))
        if costs.consumes_system:
            total += costs.plain_system_block
            if messages[0]["role"] == "system":
                total -= role_cost["system"]
        return total

    def _normalize(self, messages: Sequence[Any]) -> list[Message]:
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidMessages(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        if not messages:
            raise InvalidMessages("messages is empty; expected at least one message")
        if len(messages) > self.max_messages:
            raise InvalidMessages(
                f"{len(messages)} messages; at most {self.max_messages} are accepted"
            )
        return [normalize_message(m, i) for i, m in enumerate(messages)]

    def _count(
        self,
        plan: _ExactPlan | _EstimatePlan,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        functions: Sequence[Any] | None,
    ) -> _Tally:
        """The general path: any message form, tools, images."""
        normalized = self._normalize(messages)
        defs = render_tools(tools, functions)
        if isinstance(plan, _ExactPlan):
            return self._count_exact(plan, normalized, defs)
        return self._count_estimate(plan, normalized, defs)

    def _budget_check(self, new_chars: int, index: int) -> None:
        if new_chars > self.max_new_chars:
            raise InvalidMessages(
                f"the request brings {new_chars:,} characters not counted before by this "
                f"message; at most {self.max_new_chars:,} are accepted per request",
                index=index,
            )

    def _count_exact(self, plan: _ExactPlan, normalized: list[Message], defs: list[Any]) -> _Tally:
        costs = plan.costs
        cache = plan.cache
        front_get = cache.front.get
        header_cost = costs.header_cost
        image_tokens = self.image_tokens
        block, consumes_system = costs.system_block(defs)
        exact = not defs
        new_chars = 0
        per_message: list[int] = []
        for i, msg in enumerate(normalized):
            n = front_get(msg.body)
            if n is None:
                new_chars += len(msg.body)
                self._budget_check(new_chars, i)
                n = cache.get_or_compute(msg.body)
            cost = header_cost[msg.header] + n
            if msg.images:
                cost += msg.images * image_tokens
                exact = False
            if msg.tool_form:
                exact = False
            per_message.append(cost)
        if consumes_system and normalized[0].header == "system":
            # Merged into the template's own system block, whose header is paid already.
            per_message[0] -= header_cost["system"]
        overhead = costs.base + costs.plain_system_block
        tools_cost = block - costs.plain_system_block
        total = overhead + tools_cost + sum(per_message)
        return _Tally(per_message, overhead, tools_cost, total, total, exact, None)

    def _count_estimate(
        self, plan: _EstimatePlan, normalized: list[Message], defs: list[Any]
    ) -> _Tally:
        rule = plan.rule
        cache = plan.cache
        new_chars = 0

        def tokens(text: str, index: int) -> tuple[int, int, int]:
            nonlocal new_chars
            entry = cache.front.get(text)
            if entry is None:
                new_chars += len(text)
                self._budget_check(new_chars, index)
                entry = cache.get_or_compute(text)
            return entry

        tools_text = json.dumps(defs, indent=4) if defs else ""
        first = tokens(tools_text, 0) if defs else (0, 0, 0)
        content, non_ascii, chars = first
        top_bucket = bucket_of(non_ascii, chars)
        per_message: list[int] = []
        units: list[int] = []
        images: list[int] = []
        # A chain of keys naming each prefix of the request (tools included), so that the
        # server's count of an earlier, shorter request can anchor this one.
        keys: list[int] = []
        key = hash(("tokenguard", plan.info.name, tools_text))
        for i, msg in enumerate(normalized):
            n, na, ch = tokens(msg.body, i)
            unit = 1
            if msg.name:
                nn, nna, nch = tokens(msg.name, i)
                n, na, ch, unit = n + nn, na + nna, ch + nch, 2
            content += n
            non_ascii += na
            chars += ch
            top_bucket = max(top_bucket, bucket_of(na, ch))
            per_message.append(n)
            units.append(unit)
            images.append(msg.images)
            key = hash((key, msg.header, msg.body, msg.name))
            keys.append(key)
        margin = rule.margin
        content_raw = math.ceil(content * margin)
        overhead_raw = rule.per_request + rule.per_message * sum(units)
        bucket = bucket_of(non_ascii, chars)
        prefixes: list[tuple[int, int, int]] = []
        rest_tokens = rest_units = 0
        for k in range(len(normalized) - 1, -1, -1):
            rest_content = math.ceil(rest_tokens * margin)
            prefixes.append((keys[k], rest_content, rule.per_message * rest_units))
            rest_tokens += per_message[k]
            rest_units += units[k]
        calibration = plan.calibration
        prompt = calibration.estimate(
            content=content_raw, overhead=overhead_raw, bucket=bucket, prefixes=prefixes
        )
        image_total = sum(images) * self.image_tokens
        # Requests with images teach nothing about text: they are kept out of calibration.
        basis = (
            CalibrationBasis(content_raw, overhead_raw, bucket, keys[-1])
            if not image_total
            else None
        )
        # The breakdown is the raw estimate split per part (the ceilings of the parts
        # add up to at least the ceiling of the whole), scaled as calibration scales a
        # raw estimate at most in any bucket a subset of these messages can fall into
        # (a subset's share of non-ASCII text lies between its parts' shares). One token
        # more covers the float rounding of the whole's ceiling.
        scale = calibration.max_raw_scale(top_bucket)
        costs = [
            _scaled(math.ceil(n * margin) + rule.per_message * unit, scale) + k * self.image_tokens
            for n, unit, k in zip(per_message, units, images, strict=True)
        ]
        tools_cost = _scaled(math.ceil(first[0] * margin), scale) if defs else 0
        overhead = _scaled(rule.per_request, scale) + 1
        return _Tally(
            costs,
            overhead,
            tools_cost,
            prompt + image_total,
            content_raw + overhead_raw + image_total,
            False,
            basis,
        )


def _scaled(tokens: int, scale: float) -> int:
    return tokens if scale == 1.0 else math.ceil(tokens * scale)


def _estimator(
    enc: tiktoken.Encoding, digits_single: bool
) -> Callable[[str], tuple[int, int, int]]:
    count = _ordinary_counter(enc)

    def estimate(text: str) -> tuple[int, int, int]:
        body = text.strip()
        n = count(body)
        if digits_single:
            n += len(_DIGIT.findall(body))
        chars = len(body)
        non_ascii = 0 if body.isascii() else chars - len(body.encode("ascii", "ignore"))
        return n, non_ascii, chars

    return estimate
