"""The estimate meter: models whose tokenizer or template is not at hand.

The raw estimate follows the model family's :class:`~._estimate.EstimateRule`; the
model's :class:`~tokenguard.Calibration` then brings it toward the server's counts. Its
breakdown (:class:`~tokenguard.PromptCount`) is the raw estimate split per part, so that
the costs of any subset of the messages bound the calibrated estimate of that subset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from .._tokenizer_data import get_encoding
from ..models import ModelInfo
from ._cache import TextCache
from ._calibration import Calibration, bucket_of
from ._chat_turns import html_escaped, tojson
from ._estimate import EstimateRule, estimate_rule
from ._messages import normalize_message, render_tools
from ._meter import NewText, Request, Resources, Settings, Tally
from ._result import CalibrationBasis
from ._tokenizers import estimator

__all__ = ["EstimateMeter"]


class EstimateMeter:
    """Estimation for one model, calibrated by the server's counts.

    Example::

        meter = EstimateMeter.build(get_model("qwen/qwen3-32b"), registry)
        meter.count(Request.of(messages, max_messages=100)).total
    """

    __slots__ = ("_info", "cache", "calibration", "rule", "settings")

    def __init__(
        self,
        info: ModelInfo,
        rule: EstimateRule,
        cache: TextCache[tuple[int, int, int]],
        calibration: Calibration,
        settings: Settings,
    ) -> None:
        self._info = info
        self.rule = rule
        self.cache = cache
        self.calibration = calibration
        self.settings = settings

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> EstimateMeter:
        """The meter for any model (the registry's last resort)."""
        rule = estimate_rule(info.tokenizer)
        cache = resources.text_cache(
            ("estimate", rule.encoding, rule.digits_single),
            lambda: estimator(get_encoding(rule.encoding), rule.digits_single),
        )
        return cls(info, rule, cache, resources.calibration(info.name), resources.settings)

    @property
    def info(self) -> ModelInfo:
        """The model table entry of this meter."""
        return self._info

    def count_fast(self, messages: Sequence[Any]) -> int | None:
        """Always ``None``: estimates take the general path."""
        return None

    def prompt_fast(self, messages: Sequence[Any]) -> Tally | None:
        """Always ``None``: estimates take the general path."""
        return None

    def count(self, request: Request) -> Tally:
        """The calibrated estimate, and the raw estimate split per part."""
        rule = self.rule
        cache = self.cache
        normalized = [normalize_message(m, i) for i, m in enumerate(request.messages)]
        defs = render_tools(request.tools, request.functions)
        budget = NewText(self.settings.max_new_chars)
        if not defs:
            tools_text = ""
        elif rule.tools_compact:
            tools_text = tojson(defs)  # as Groq's Hugging Face templates write them
        else:
            tools_text = json.dumps(defs, indent=4)
        tools_tokens, non_ascii, chars = budget.counted(cache, tools_text, 0) if defs else (0, 0, 0)
        content = tools_tokens
        base = (non_ascii, chars)
        texts: list[tuple[int, int]] = []
        tokens: list[int] = []
        units: list[int] = []
        images: list[int] = []
        # A chain of keys naming each prefix of the request (tools included), so that the
        # server's count of an earlier, shorter request can anchor this one.
        keys: list[int] = []
        key = hash(("tokenguard", self._info.name, tools_text))
        previous = "assistant"  # the gateway pads a conversation opening on an assistant turn
        for i, msg in enumerate(normalized):
            body = msg.body
            if rule.tools_compact and msg.tool_form and msg.header == "assistant":
                body = html_escaped(body)  # the call's arguments go through tojson too
            if msg.spoken:
                # Whether a template writes an assistant's text beside its calls is not
                # known here (Kimi's does, Llama 3.1's does not): a bound counts it.
                body = msg.spoken + body
            n, na, ch = budget.counted(cache, body, i)
            unit = 1
            if rule.gateway_pads and msg.header not in ("system", "developer"):
                # An empty turn goes between two user or two assistant turns, and after
                # a last assistant turn (docs/qwen-kimi.md): one unit covers its frame.
                unit += msg.header == previous in ("user", "assistant")
                unit += msg.header == "assistant" and i == len(normalized) - 1
                previous = msg.header
            if msg.name:
                nn, nna, nch = budget.counted(cache, msg.name, i)
                n, na, ch, unit = n + nn, na + nna, ch + nch, 2
            if msg.header == "ipython":  # a tool result
                unit += rule.tool_result_units
            content += n
            non_ascii += na
            chars += ch
            texts.append((na, ch))
            tokens.append(n)
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
            rest_tokens += tokens[k]
            rest_units += units[k]
        prompt = self.calibration.estimate(
            content=content_raw, overhead=overhead_raw, bucket=bucket, prefixes=prefixes
        )
        image_total = sum(images) * self.settings.image_tokens
        # Requests with images teach nothing about text: they are kept out of calibration.
        basis = (
            None if image_total else CalibrationBasis(content_raw, overhead_raw, bucket, keys[-1])
        )
        # The breakdown: the raw parts priced at rates that bound the calibrated estimate
        # linearly for every subset of these messages (its bucket and its shape, content
        # per overhead, lie in ranges found from the parts). The parts' content ceilings
        # add up to at least the whole's, but for float rounding, which may put the
        # whole one content token higher; the overhead carries that token and one more
        # for the rounding of the rates.
        parts = [
            (math.ceil(n * margin), rule.per_message * unit)
            for n, unit in zip(tokens, units, strict=True)
        ]
        tools_raw = math.ceil(tools_tokens * margin) if defs else 0
        rc, rv = self.calibration.rates(
            content=content_raw,
            overhead=overhead_raw,
            buckets=_bucket_range(base, texts),
            shapes=_shape_range((tools_tokens * margin, rule.per_request), tokens, units, rule),
        )
        costs = [
            math.ceil(rc * c + rv * v) + k * self.settings.image_tokens
            for (c, v), k in zip(parts, images, strict=True)
        ]
        tools = math.ceil(rc * tools_raw)
        overhead = math.ceil(rv * rule.per_request + rc) + 1
        raw = content_raw + overhead_raw + image_total
        return Tally(costs, overhead, tools, prompt + image_total, raw, False, basis)


def _shape_range(
    base: tuple[float, int], tokens: list[int], units: list[int], rule: EstimateRule
) -> tuple[float, float]:
    """The least and greatest ``content / overhead`` of the raw estimate of the tools
    (``base``, always counted) with any non-empty subset of the messages.

    A ratio of sums is extreme on a prefix of the parts sorted by their own ratio. The
    content's ceiling adds less than one token, hence the widening of the upper end.
    """
    parts = [
        (n * rule.margin, rule.per_message * unit) for n, unit in zip(tokens, units, strict=True)
    ]
    parts.sort(key=lambda p: p[0] / p[1])
    lo, hi = math.inf, 0.0
    for order in (parts, parts[::-1]):
        content, overhead = base
        for c, v in order:
            content += c
            overhead += v
            lo = min(lo, content / overhead)
            hi = max(hi, content / overhead)
    least_overhead = base[1] + min(rule.per_message * unit for unit in units)
    return lo * (1 - 1e-9), (hi + 1.0 / least_overhead) * (1 + 1e-9)


def _bucket_range(base: tuple[int, int], texts: list[tuple[int, int]]) -> tuple[int, int]:
    """The lowest and highest script bucket of the request's tools (``base``, always
    counted) with any non-empty subset of its messages' ``(non-ASCII, chars)``.

    The extreme shares of non-ASCII text are reached by adding messages in order of
    their own share (a ratio of sums is extreme on such a prefix), and the bucket grows
    with the share.
    """
    lo = hi = None
    if any(chars == 0 for _, chars in texts):
        lo = hi = bucket_of(*base)  # a message without text leaves the share as it is
    with_text = sorted((t for t in texts if t[1] > 0), key=lambda t: t[0] / t[1])
    for order in (with_text, with_text[::-1]):
        non_ascii, chars = base
        for na, ch in order:
            non_ascii += na
            chars += ch
            bucket = bucket_of(non_ascii, chars)
            lo = bucket if lo is None else min(lo, bucket)
            hi = bucket if hi is None else max(hi, bucket)
    return (lo or 0, hi or 0)
