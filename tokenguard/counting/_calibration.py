"""Learning, per model, how far the conservative estimate sits above the server's count.

The raw estimate has two parts: ``content`` (text counted with a stand-in tokenizer) and
``overhead`` (an allowance for the template's framing, never below it). Each response's
``usage.prompt_tokens`` bounds the density of its text, so the content of other requests
of its script bucket is scaled by the least density seen (plus a learned headroom); the
overhead is never scaled down, and a known prefix of the request anchors it. Pure: no
clock, no I/O.

Invariant: never below the raw overhead plus the content at the densest text a bucket
allows, so no shape of request (many short messages after a few long ones) is
undercounted by what calibration learned. The derivation: docs/counting-internals.md.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable

__all__ = ["BUCKET_EDGES", "Calibration", "bucket_of"]

#: Upper edges of the non-ASCII character share for buckets 0..3; bucket 4 is the rest.
BUCKET_EDGES = (0.02, 0.15, 0.4, 0.7)


def bucket_of(non_ascii_chars: int, chars: int) -> int:
    """The script bucket of a request with ``non_ascii_chars`` out of ``chars``."""
    if chars <= 0 or non_ascii_chars <= 0:
        return 0
    share = non_ascii_chars / chars
    for i, edge in enumerate(BUCKET_EDGES):
        if share < edge:
            return i
    return len(BUCKET_EDGES)


def _least_density(observations: Iterable[tuple[int, int, int]]) -> float:
    """The least ``actual / content`` of ``observations`` (``inf`` when none has content):
    a bound on the server's tokens per content token, its template's share included."""
    return min((actual / c for c, _, actual in observations if c > 0), default=math.inf)


def _needed_headroom(
    density: float, scale: float, content: int, overhead: int, actual: int
) -> float:
    """The headroom a bucket of ``density`` and raw ``scale`` would have needed to
    estimate ``actual`` for a request of ``content`` and ``overhead`` (0 when none)."""
    if content <= 0 or density == math.inf:
        return 0.0
    return max(0.0, (actual - scale * overhead) / (density * content) - 1.0)


class _Bucket:
    __slots__ = ("density", "floor", "headroom", "observations", "raw_scale", "surprises")

    def __init__(self, window: int, headroom: float) -> None:
        self.observations: deque[tuple[int, int, int]] = deque(maxlen=window)
        #: The least ``actual / content`` of the observations (``inf``: none yet).
        self.density = math.inf
        self.floor = 0.0
        # For each observation, how far it exceeded what the bucket knew before it.
        self.surprises: deque[float] = deque(maxlen=window)
        self.raw_scale = 1.0
        self.headroom = headroom

    def rates(self) -> tuple[float, float]:
        """``(per content token, per overhead token)`` of the bucket's estimate."""
        scale = self.raw_scale
        return min(self.density * (1.0 + self.headroom), scale), scale


#: Starting headroom of the buckets with a noticeable share of non-ASCII text.
NON_LATIN_HEADROOM = 0.25
#: The least headroom those buckets keep once learned: non-Latin texts differ in density
#: (Cyrillic samples: 0.56 to 0.77 Llama 3 tokens per cl100k token) more than a window of
#: observations reliably shows.
NON_LATIN_FLOOR = 0.15
#: Observations a bucket needs before its headroom follows their measured spread.
LEARN_AFTER = 6
#: The learned headroom is this multiple of the measured spread (plus ``headroom``): the
#: next text may be a little denser than any in the window.
SPREAD_FACTOR = 1.5


class Calibration:
    """Per-model correction of a conservative estimate from the server's counts.

    Thread-safe. Pure: no clock, no I/O.

    Example::

        cal = Calibration(headroom=0.02)
        cal.estimate(content=1_000, overhead=100)         # 1100: nothing seen yet
        cal.observe(content=1_000, overhead=100, actual=900)
        cal.estimate(content=1_100, overhead=110)         # 1100 * 0.9 * 1.02 + 110 -> 1120
    """

    def __init__(self, *, window: int = 16, headroom: float = 0.03, prefixes: int = 64) -> None:
        if window < 1 or headroom < 0 or prefixes < 0:
            raise ValueError(
                "Calibration needs window >= 1, headroom >= 0 and prefixes >= 0, got "
                f"{window}, {headroom}, {prefixes}"
            )
        self.window = window
        self.headroom = headroom
        # Text that is not mostly ASCII varies far more in density between tokenizers
        # (Cyrillic samples: +-15% against cl100k_base), so it starts with more headroom.
        self._buckets = [
            _Bucket(window, headroom if i == 0 else max(headroom, NON_LATIN_HEADROOM))
            for i in range(len(BUCKET_EDGES) + 1)
        ]
        for b in self._buckets[1:]:
            b.floor = NON_LATIN_FLOOR
        self._prefixes: dict[int, int] = {}
        self._max_prefixes = prefixes
        self._lock = threading.Lock()

    @property
    def knows_prefixes(self) -> bool:
        """Whether the server's count of some request is kept (see :meth:`estimate`)."""
        return bool(self._prefixes)

    def headroom_of(self, bucket: int = 0) -> float:
        """The headroom ``bucket`` currently applies (grows when its texts vary in density)."""
        return self._buckets[bucket].headroom

    def rates(self, *, buckets: tuple[int, int] = (0, len(BUCKET_EDGES))) -> tuple[float, float]:
        """Per-token rates ``(r_content, r_overhead)`` that bound estimates linearly.

        For every request, in the current state, whose bucket lies in ``buckets`` (an
        inclusive range)::

            estimate(content=C, overhead=V, ...) <= r_content * C + r_overhead * V

        A linear bound is what lets a request's estimate be split into per-message costs
        whose sums bound the estimate of every subset of its messages. For one bucket it
        is the estimate itself.
        """
        chosen = [b.rates() for b in self._buckets[buckets[0] : buckets[1] + 1]]
        return max(rc for rc, _ in chosen), max(rv for _, rv in chosen)

    @staticmethod
    def _part(b: _Bucket, content: int, overhead: int) -> float:
        rc, rv = b.rates()
        return rc * content + rv * overhead

    def estimate(
        self,
        *,
        content: int,
        overhead: int,
        bucket: int = 0,
        prefixes: Iterable[tuple[int, int, int]] = (),
    ) -> int:
        """The calibrated estimate for a request with raw parts ``content`` and ``overhead``.

        ``prefixes`` optionally gives, longest first, ``(key, rest content, rest overhead)``
        for the request's leading messages: when the server's count of such a prefix is
        known, the estimate is that count plus the estimate of the rest alone.
        """
        b = self._buckets[bucket]
        best = self._part(b, content, overhead)
        for key, rest_content, rest_overhead in prefixes:
            known = self._prefixes.get(key)
            if known is not None:
                best = min(best, known + self._part(b, rest_content, rest_overhead))
                break
        # The epsilon keeps float noise from rounding an exact product up by one.
        return math.ceil(best - 1e-9)

    def observe(
        self,
        *,
        content: int,
        overhead: int,
        actual: int,
        bucket: int = 0,
        key: int | None = None,
    ) -> None:
        """Learn from one request: its raw parts, the server's ``prompt_tokens`` and,
        optionally, a ``key`` naming the exact request (see ``prefixes`` of :meth:`estimate`)."""
        if actual <= 0 or content < 0 or overhead < 0 or content + overhead <= 0:
            return
        with self._lock:
            b = self._buckets[bucket]
            surprise = _needed_headroom(b.density, b.raw_scale, content, overhead, actual)
            b.observations.append((content, overhead, actual))
            b.surprises.append(surprise)
            b.density = _least_density(b.observations)
            ratio = actual / (content + overhead)
            b.raw_scale = max(b.raw_scale, ratio * (1.0 + self.headroom))
            # Each request kept is estimated at its own count or more, whatever the
            # least density became: a sparser text seen later must not hide a denser one.
            kept = max(_needed_headroom(b.density, b.raw_scale, *o) for o in b.observations)
            if len(b.observations) < LEARN_AFTER:
                b.headroom = max(b.headroom, kept + self.headroom)
            else:
                # Never below a surprise still in the window: the spread measured among
                # similar observations can hide how different the next text may be.
                spread = SPREAD_FACTOR * self._spread(b)
                b.headroom = max(spread, max(b.surprises), b.floor, kept) + self.headroom
            if key is not None and self._max_prefixes:
                if len(self._prefixes) >= self._max_prefixes:
                    del self._prefixes[next(iter(self._prefixes))]
                self._prefixes[key] = actual

    @staticmethod
    def _spread(b: _Bucket) -> float:
        """The most headroom any observation needs against the density of the others."""
        kept = tuple(b.observations)
        return max(
            _needed_headroom(_least_density(kept[:j] + kept[j + 1 :]), b.raw_scale, *kept[j])
            for j in range(len(kept))
        )

    def samples(self, bucket: int = 0) -> int:
        """How many observations ``bucket`` holds."""
        return len(self._buckets[bucket].observations)
