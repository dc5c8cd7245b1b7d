"""The estimate meter: models whose tokenizer or template is not at hand.

The raw estimate follows the model family's :class:`~._estimate.EstimateRule`; the
model's :class:`~tokenguard.Calibration` then brings it toward the server's counts. Its
breakdown (:class:`~tokenguard.PromptCount`) is the raw estimate split per part, so that
the costs of any subset of the messages bound the calibrated estimate of that subset.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._tokenizer_data import get_encoding
from ..models import ModelInfo
from ._cache import TextCache
from ._calibration import Calibration, bucket_of
from ._chat_turns import html_escaped, tojson
from ._estimate import EstimateRule, estimate_rule
from ._messages import normalize_message, render_tools
from ._meter import NewText, Request, Resources, Settings, Tally, count_new
from ._result import CalibrationBasis
from ._tokenizers import estimator

__all__ = ["EstimateMeter"]


class EstimateMeter:
    """Estimation for one model, calibrated by the server's counts.

    Example::

        meter = EstimateMeter.build(get_model("qwen/qwen3-32b"), registry)
        meter.count(Request.of(messages, max_messages=100)).total
    """

    __slots__ = ("_last", "cache", "calibration", "info", "rule", "settings")

    def __init__(
        self,
        info: ModelInfo,
        rule: EstimateRule,
        cache: TextCache[tuple[int, int, int]],
        calibration: Calibration,
        settings: Settings,
    ) -> None:
        self.info = info
        self.rule = rule
        self.cache = cache
        self.calibration = calibration
        self.settings = settings
        self._last = _LastRequest(_seed_key(info.name, ""), settings.front_chars)

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> EstimateMeter:
        """The meter for any model (the registry's last resort)."""
        rule = estimate_rule(info.tokenizer)
        cache = resources.text_cache(
            ("estimate", rule.encoding, rule.digits_single),
            lambda: estimator(get_encoding(rule.encoding), rule.digits_single),
        )
        return cls(info, rule, cache, resources.calibration(info.name), resources.settings)

    def count_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> int | None:
        """The calibrated estimate of plain messages without tools, or ``None``."""
        if tools is not None or options:
            return None
        seen = self._read_seen(messages)
        if seen is not None:
            # Every text counted before: the sums and keys of the messages it shares with
            # the last request are taken from it, the rest read in the same pass.
            units, total = self._units_of(seen)
            tokens, non_ascii, chars = seen.sums[-1]
            if not self.calibration.knows_prefixes:
                return self._calibrated(tokens, total, non_ascii, chars)[0]
            prefixes = self._prefixes(self._last.keys(seen), seen.tokens, units)
            return self._calibrated(tokens, total, non_ascii, chars, prefixes)[0]
        parts = self._read_plain(messages)
        if parts is None:
            return None
        keys = self._keys(parts) if self.calibration.knows_prefixes else None
        return self._estimate(parts, keys)[0]

    def prompt_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Tally | None:
        """Always ``None``: a breakdown and a calibration basis take the general path."""
        return None

    def count(self, request: Request) -> Tally:
        """The calibrated estimate, and the raw estimate split per part."""
        parts = self._read(request)
        keys = self._keys(parts)
        prompt, content_raw, overhead_raw, bucket = self._estimate(parts, keys)
        image_total = sum(parts.images) * self.settings.image_tokens
        # Requests with images teach nothing about text: they are kept out of calibration.
        basis = (
            None if image_total else CalibrationBasis(content_raw, overhead_raw, bucket, keys[-1])
        )
        costs, tools, overhead = self._breakdown(parts, content_raw, overhead_raw)
        raw = content_raw + overhead_raw + image_total
        return Tally(costs, overhead, tools, prompt + image_total, raw, False, basis)

    # -- reading a request into parts ----------------------------------------------------

    def _read(self, request: Request) -> _Parts:
        """Any request: every message normalised, tools rendered as the template writes them."""
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
        tools = budget.counted(cache, tools_text, 0) if defs else (0, 0, 0)
        counted: list[tuple[int, int, int]] = []
        for i, msg in enumerate(normalized):
            body = msg.body
            if rule.tools_compact and msg.tool_form and msg.header == "assistant":
                body = html_escaped(body)  # the call's arguments go through tojson too
            if msg.spoken:
                # Whether a template writes an assistant's text beside its calls is not
                # known here (Kimi's does, Llama 3.1's does not): a bound counts it.
                body = msg.spoken + body
            n, na, ch = budget.counted(cache, body, i)
            if msg.name:
                nn, nna, nch = budget.counted(cache, msg.name, i)
                n, na, ch = n + nn, na + nna, ch + nch
            counted.append((n, na, ch))
        headers = [msg.header for msg in normalized]
        names = [msg.name for msg in normalized]
        return _Parts(
            tools_text,
            tools,
            counted,
            headers,
            [msg.body for msg in normalized],
            names,
            [msg.images for msg in normalized],
            _units(rule, headers, names),
        )

    def _roles_texts(self, messages: Sequence[Any]) -> tuple[list[Any], list[str]] | None:
        """The roles and texts of plain ``{"role", "content": str}`` dicts (user,
        assistant, system), or ``None``."""
        if type(messages) is not list or not messages or len(messages) > self.settings.max_messages:
            return None
        if set(map(type, messages)) != {dict} or set(map(len, messages)) != {2}:
            return None
        try:
            roles = list(map(_ROLE, messages))
            texts = list(map(_CONTENT, messages))
            if set(map(type, texts)) != {str} or not _PLAIN_ROLES.issuperset(roles):
                return None
        except (KeyError, TypeError):
            return None  # no role or text, or a role that is not even hashable
        return roles, texts

    def _read_plain(self, messages: Sequence[Any]) -> _Parts | None:
        """Plain ``{"role", "content": str}`` dicts (user, assistant, system), or ``None``."""
        read = self._roles_texts(messages)
        if read is None:
            return None
        roles, texts = read
        counted = self._values(texts)
        if counted is None:
            return None
        n = len(roles)
        names: list[str | None] = [None] * n
        units = _units(self.rule, roles, names)
        return _Parts("", (0, 0, 0), counted, roles, texts, names, [0] * n, units)

    def _read_seen(self, messages: Sequence[Any]) -> _Seen | None:
        """Plain messages whose texts were all counted before, read as :class:`_Seen`, or
        ``None`` (:meth:`_read_plain` then reads them)."""
        read = self._roles_texts(messages)
        if read is None:
            return None
        roles, texts = read
        return self._last.read(roles, texts, self.cache.front.get)

    def _sum_plain(self, messages: Sequence[Any]) -> tuple[int, int, int, int] | None:
        """``(tokens, units, non-ASCII characters, characters)`` of plain messages whose
        texts were all counted before, or ``None``."""
        seen = self._read_seen(messages)
        if seen is None:
            return None
        tokens, non_ascii, chars = seen.sums[-1]
        return tokens, self._units_of(seen)[1], non_ascii, chars

    def _units_of(self, seen: _Seen) -> tuple[Sequence[int], int]:
        """The units of plain messages (no names, no tool results: ``_units`` for them)
        and their sum, worked out once per request read."""
        kept = seen.units
        if kept is None:
            roles = seen.roles
            units = _padded(roles) if self.rule.gateway_pads else [1] * len(roles)
            kept = seen.units = (units, sum(units))
        return kept

    def _values(self, texts: list[str]) -> list[tuple[int, int, int]] | None:
        """The cached counts of ``texts``, the new ones counted together; ``None`` when
        they are too much new text or not valid UTF-8 (the general path says which)."""
        get = self.cache.front.get
        values = list(map(get, texts))
        if None not in values:
            return values  # type: ignore[return-value]  # no None, checked just above
        new = [t for t, v in zip(texts, values, strict=True) if v is None]
        new_values = count_new(self.cache, new, self.settings)
        if new_values is None:
            return None
        counted = dict(zip(new, new_values, strict=True))
        return [counted[t] if v is None else v for t, v in zip(texts, values, strict=True)]

    # -- from parts to the estimate ------------------------------------------------------

    def _keys(self, parts: _Parts) -> list[int]:
        """A chain of keys naming each prefix of the request (tools included), so that the
        server's count of an earlier, shorter request can anchor this one."""
        seed = _seed_key(self.info.name, parts.tools_text)
        return _chained(seed, parts.headers, parts.bodies, parts.names)

    def _estimate(self, parts: _Parts, keys: list[int] | None) -> tuple[int, int, int, int]:
        """``(calibrated prompt, raw content, raw overhead, script bucket)``; ``keys``
        (``None``: no prefix is known) let a known prefix anchor the estimate."""
        prefixes = () if keys is None else self._prefixes(keys, parts.tokens, parts.units)
        return self._calibrated(
            parts.content, sum(parts.units), parts.non_ascii, parts.chars, prefixes
        )

    def _prefixes(
        self, keys: Sequence[int], tokens: Sequence[int], units: Sequence[int]
    ) -> Iterator[tuple[int, int, int]]:
        """``(key, rest content, rest overhead)`` of each prefix, longest first, from the
        messages' ``tokens`` and ``units``, made as calibration asks (it stops at the first
        known one, usually the previous turn)."""
        rule = self.rule
        margin = rule.margin
        rest_tokens = rest_units = 0
        for k in range(len(keys) - 1, -1, -1):
            yield keys[k], math.ceil(rest_tokens * margin), rule.per_message * rest_units
            rest_tokens += tokens[k]
            rest_units += units[k]

    def _calibrated(
        self,
        tokens: int,
        units: int,
        non_ascii: int,
        chars: int,
        prefixes: Iterable[tuple[int, int, int]] = (),
    ) -> tuple[int, int, int, int]:
        """:meth:`_estimate` from the request's sums: its ``tokens`` (tools included),
        message ``units``, non-ASCII and all characters."""
        rule = self.rule
        content_raw = math.ceil(tokens * rule.margin)
        overhead_raw = rule.per_request + rule.per_message * units
        bucket = bucket_of(non_ascii, chars)
        prompt = self.calibration.estimate(
            content=content_raw, overhead=overhead_raw, bucket=bucket, prefixes=prefixes
        )
        return prompt, content_raw, overhead_raw, bucket

    def _breakdown(
        self, parts: _Parts, content_raw: int, overhead_raw: int
    ) -> tuple[list[int], int, int]:
        """``(message costs, tools, overhead)``: the raw parts priced at rates that bound
        the calibrated estimate linearly for every subset of these messages (whose bucket
        lies in a range found from the parts).

        The parts' content ceilings add up to at least the whole's, but for float
        rounding, which may put the whole one content token higher; the overhead carries
        that token and one more for the rounding of the rates.
        """
        rule = self.rule
        margin = rule.margin
        tools_tokens = parts.tools_tokens
        texts = list(zip(parts.non_ascii_of, parts.chars_of, strict=True))
        rc, rv = self.calibration.rates(buckets=_bucket_range(parts.base, texts))
        image_tokens = self.settings.image_tokens
        costs = [
            math.ceil(rc * math.ceil(n * margin) + rv * (rule.per_message * unit))
            + k * image_tokens
            for n, unit, k in zip(parts.tokens, parts.units, parts.images, strict=True)
        ]
        tools = math.ceil(rc * math.ceil(tools_tokens * margin)) if parts.tools_text else 0
        overhead = math.ceil(rv * rule.per_request + rc) + 1
        return costs, tools, overhead


_PLAIN_ROLES = frozenset({"user", "assistant", "system"})
_SYSTEM = ("system", "developer")
_ROLE = operator.itemgetter("role")
_CONTENT = operator.itemgetter("content")


def _seed_key(model: str, tools_text: str) -> int:
    """The key the chain of a request's prefix keys starts from."""
    return hash(("tokenguard", model, tools_text))


def _chained(
    key: int, headers: Iterable[str], bodies: Iterable[str], names: Iterable[str | None]
) -> list[int]:
    """The keys of the prefixes the messages (header, body, name) end, chained from ``key``."""
    keys: list[int] = []
    for named in zip(headers, bodies, names, strict=True):
        key = hash((key, *named))
        keys.append(key)
    return keys


class _Seen:
    """Plain messages read: their roles and texts, each text's tokens, the running sums
    ``(tokens, non-ASCII, characters)`` of the first ``k`` texts for every ``k`` (``sums[0]``
    is zeros), the keys of the first prefixes (:meth:`_LastRequest.keys` adds the rest)
    and, once worked out, the units. Never changed once made, but for ``keys``, only
    replaced by a longer list, and ``units``, set once (to the same value by any thread)."""

    __slots__ = ("keys", "roles", "sums", "texts", "tokens", "units")

    def __init__(
        self,
        roles: list[str],
        texts: list[str],
        tokens: list[int],
        sums: list[tuple[int, int, int]],
        keys: list[int],
    ) -> None:
        self.roles = roles
        self.texts = texts
        self.tokens = tokens
        self.sums = sums
        self.keys = keys
        #: The messages' units and their sum, once the meter has worked them out.
        self.units: tuple[Sequence[int], int] | None = None

    def extended(
        self, n: int, roles: list[str], texts: list[str], new: list[tuple[int, int, int]]
    ) -> _Seen:
        """The request of ``roles`` and ``texts``: its first ``n`` messages are this one's,
        the rest counted as ``new``."""
        sums = self.sums[: n + 1]
        tokens, non_ascii, chars = sums[-1]
        for t, a, c in new:
            tokens, non_ascii, chars = tokens + t, non_ascii + a, chars + c
            sums.append((tokens, non_ascii, chars))
        counts = self.tokens[:n] + [t for t, _, _ in new]
        return _Seen(roles, texts, counts, sums, self.keys[:n])


def _starts(a: list[str], b: list[str], n: int) -> bool:
    """Whether the first ``n`` items of ``a`` and ``b`` are equal (no copy of a whole one)."""
    return (a if len(a) == n else a[:n]) == (b if len(b) == n else b[:n])


class _LastRequest:
    """The last plain request (no tools, no names) a meter read, so that the next one,
    usually the same conversation a turn longer, reads only its new messages.

    Only the longest common prefix of roles and texts, compared by value, is taken from
    it; sums and keys are the same as reading the request afresh gives (a text's count
    never changes; keys are the chain :meth:`EstimateMeter._keys` makes). Thread-safe:
    the last request is one object, replaced whole. It keeps a request of at most
    ``max_chars`` characters (the text cache's front bound), so that the texts it may keep
    alive after the cache evicted them stay bounded."""

    __slots__ = ("_last", "_max_chars", "_seed")

    def __init__(self, seed: int, max_chars: int) -> None:
        self._seed = seed
        self._max_chars = max_chars
        self._last = _Seen([], [], [], [(0, 0, 0)], [])

    def read(
        self,
        roles: list[str],
        texts: list[str],
        get: Callable[[str], tuple[int, int, int] | None],
    ) -> _Seen | None:
        """``roles`` and ``texts`` read, or ``None`` when a text not shared with the last
        request has no cached count (``get``)."""
        last = self._last
        n = min(len(roles), len(last.roles))
        # Lists compare by identity first, so a conversation seen before costs pointer
        # comparisons; a message changed in place or removed compares unequal.
        if n and not (_starts(roles, last.roles, n) and _starts(texts, last.texts, n)):
            n = 0
        if n == len(roles) == len(last.roles):
            return last
        new = list(map(get, texts[n:]))
        if None in new:
            return None
        seen = last.extended(n, roles, texts, new)  # type: ignore[arg-type]  # no None
        if seen.sums[-1][2] <= self._max_chars:
            self._last = seen
        return seen

    def keys(self, seen: _Seen) -> list[int]:
        """The keys of each prefix of ``seen``."""
        keys = seen.keys
        k = len(keys)
        if k < len(seen.texts):
            start = keys[-1] if keys else self._seed
            more = len(seen.texts) - k
            keys = keys + _chained(start, seen.roles[k:], seen.texts[k:], [None] * more)
            seen.keys = keys
        return keys


class _Parts:
    """A request read for the estimate: the tools' counts and, per message, its counts,
    what names it in the key chain (header, body, name), its images and its units."""

    __slots__ = (
        "base",
        "bodies",
        "chars",
        "chars_of",
        "content",
        "headers",
        "images",
        "names",
        "non_ascii",
        "non_ascii_of",
        "tokens",
        "tools_text",
        "tools_tokens",
        "units",
    )

    def __init__(
        self,
        tools_text: str,
        tools: tuple[int, int, int],
        counted: list[tuple[int, int, int]],
        headers: list[str],
        bodies: list[str],
        names: list[str | None],
        images: list[int],
        units: list[int],
    ) -> None:
        self.tools_text = tools_text
        self.tools_tokens, tools_non_ascii, tools_chars = tools
        #: The tools' (non-ASCII, characters), always counted.
        self.base = (tools_non_ascii, tools_chars)
        tokens, self.non_ascii_of, self.chars_of = zip(*counted, strict=True)
        self.tokens: tuple[int, ...] = tokens
        self.content = self.tools_tokens + sum(tokens)
        self.non_ascii = tools_non_ascii + sum(self.non_ascii_of)
        self.chars = tools_chars + sum(self.chars_of)
        self.headers = headers
        self.bodies = bodies
        self.names = names
        self.images = images
        self.units = units


def _units(rule: EstimateRule, headers: list[str], names: list[str | None]) -> list[int]:
    """The ``per_message`` units each message costs."""
    units = list(_padded(headers)) if rule.gateway_pads else [1] * len(headers)
    if any(names):
        units = [2 if name else unit for unit, name in zip(units, names, strict=True)]
    if rule.tool_result_units and "ipython" in headers:  # tool results
        extra = rule.tool_result_units
        units = [u + extra if h == "ipython" else u for u, h in zip(units, headers, strict=True)]
    return units


def _padded(headers: list[str]) -> tuple[int, ...]:
    """Per message where the gateway pads: its frame, an empty turn before it where one
    is put in, and after a last assistant turn the empty user turn. Kept per sequence of
    roles up to 512 messages (a conversation asked about again has the same one)."""
    key = tuple(headers)
    return _padded_kept(key) if len(key) <= 512 else _padded_of(key)


@functools.lru_cache(maxsize=256)
def _padded_kept(headers: tuple[str, ...]) -> tuple[int, ...]:
    return _padded_of(headers)


def _padded_of(headers: tuple[str, ...]) -> tuple[int, ...]:
    units = list(map(operator.add, _pads(list(headers)), itertools.repeat(1)))
    units[-1] += headers[-1] == "assistant"
    return tuple(units)


def _pads(headers: list[str]) -> list[bool]:
    """Where the gateway puts an empty turn before a message: between two user or two
    assistant turns, system messages aside (docs/qwen-kimi.md); one unit covers its frame."""
    plain = "system" not in headers and "developer" not in headers
    spoken = headers if plain else [h for h in headers if h not in _SYSTEM]
    # The gateway pads a conversation opening on an assistant turn.
    pads = list(map(operator.eq, ["assistant", *spoken[:-1]], spoken))
    if "ipython" in spoken:  # two tool results in a row are not padded
        pads = [pad and h != "ipython" for pad, h in zip(pads, spoken, strict=True)]
    if plain:
        return pads
    after = iter(pads)
    return [False if h in _SYSTEM else next(after) for h in headers]


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
