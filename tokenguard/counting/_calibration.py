"""Learning, per model, how far the conservative estimate sits above the server's count.

Each response's ``usage.prompt_tokens`` bounds the truth of other requests of its script
bucket from above (each part of the raw estimate grows at most by its own ratio); the
calibrated estimate is the smallest such bound, with a headroom each bucket learns, and
a known prefix of the request anchors it. Pure: no clock, no I/O.

Invariant: never below an observation's scaling, so a longer conversation is not
undercounted after short ones. The derivation and measurements:
docs/counting-internals.md.
"""

from __future__ import annotations

import itertools
import math
import operator
import threading
from collections import deque
from collections.abc import Iterable

__all__ = ["BUCKET_EDGES", "Calibration", "bucket_of"]

#: Upper edges of the non-ASCII character share for buckets 0..3; bucket 4 is the rest.
BUCKET_EDGES = (0.02, 0.15, 0.4, 0.7)


def _turns_up(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` lies on or below the segment from ``o`` to ``b`` (not on an upper hull)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]) >= 0


def bucket_of(non_ascii_chars: int, chars: int) -> int:
    """The script bucket of a request with ``non_ascii_chars`` out of ``chars``."""
    if chars <= 0 or non_ascii_chars <= 0:
        return 0
    share = non_ascii_chars / chars
    for i, edge in enumerate(BUCKET_EDGES):
        if share < edge:
            return i
    return len(BUCKET_EDGES)


def _kinks(
    per_bucket: list[tuple[float, float, float]], x_lo: float, x_hi: float, x_f: float
) -> set[float]:
    """The range's ends, ``x_f`` and every shape in between where two of the buckets'
    lines (``s * (1 + x)``, ``a * k``, ``a * x``) cross."""
    lines: list[tuple[float, float]] = []  # (slope, intercept)
    for s, a, k in per_bucket:
        lines.append((s, s))
        if a < math.inf:
            lines += [(0.0, a * k), (a, 0.0)]
    xs = {x_lo, x_hi, x_f}
    for i, (m1, c1) in enumerate(lines):
        for m2, c2 in lines[i + 1 :]:
            if m1 != m2:
                x = (c2 - c1) / (m1 - m2)
                if x_lo < x < x_hi:
                    xs.add(x)
    return xs


def _bound_points(
    per_bucket: list[tuple[float, float, float]], x_lo: float, x_hi: float, x_f: float
) -> list[tuple[float, float]]:
    """The bound per unit of overhead, ``max`` over the buckets of
    ``min(s * (1 + x), a * max(x, k))``, at the range's ends, ``x_f`` and every kink
    (sorted by x). It is piecewise linear with kinks where two lines cross: a line that
    lies on or above it at these points lies above it throughout."""

    def bound(x: float) -> float:
        return max(min(s * (1.0 + x), a * max(x, k)) for s, a, k in per_bucket)

    return [(x, bound(x)) for x in sorted(_kinks(per_bucket, x_lo, x_hi, x_f))]


def _line_above(
    points: list[tuple[float, float]], hull: list[tuple[float, float]], x_f: float
) -> tuple[float, float]:
    """``(slope, intercept)`` of the best line on or above ``points`` at ``x_f``: the
    upper hull's edge over ``x_f``."""
    slope = 0.0
    for (x1, y1), (x2, y2) in itertools.pairwise(hull):
        if x1 <= x_f <= x2:
            slope = (y2 - y1) / (x2 - x1)
            break
    # A flat or rising bound has a rising hull; the intercept is kept at zero or more (a
    # message never has a negative cost) by raising the line, which only loosens it.
    slope = max(slope, 0.0)
    intercept = max(max(y - slope * x for x, y in points), 0.0)
    return slope, intercept


def _upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper convex hull of ``points`` (sorted by x)."""
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2 and _turns_up(hull[-2], hull[-1], p):
            hull.pop()
        hull.append(p)
    return hull


def _columns(
    observations: tuple[tuple[int, int, int], ...],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(actuals, contents, overheads)`` of ``observations``."""
    contents, overheads, actuals = zip(*observations, strict=True)
    return actuals, contents, overheads


class _Bucket:
    __slots__ = (
        "columns",
        "floor",
        "headroom",
        "least",
        "observations",
        "raw_scale",
        "surprises",
    )

    def __init__(self, window: int, headroom: float) -> None:
        self.observations: deque[tuple[int, int, int]] = deque(maxlen=window)
        #: The observations as columns ``(actuals, contents, overheads)`` when none has a
        #: zero part, for bounds worked out by ``map`` (replaced whole, never changed).
        self.columns: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = ((), (), ())
        #: With ``columns``, the least ``actual / content`` and ``actual / overhead`` of
        #: the observations: the bound of a request is at least either times its part.
        self.least: tuple[float, float] | None = None
        self.floor = 0.0
        # For each observation, how far it exceeded what the bucket knew before it.
        self.surprises: deque[float] = deque(maxlen=window)
        self.raw_scale = 1.0
        self.headroom = headroom


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
#: Largest headroom a bucket may learn (its texts' density varies by that much at most).
MAX_HEADROOM = 1.0


class Calibration:
    """Per-model correction of a conservative estimate from the server's counts.

    Thread-safe. Pure: no clock, no I/O.

    Example::

        cal = Calibration(headroom=0.02)
        cal.estimate(content=1_000, overhead=100)                   # 1100: nothing seen yet
        cal.observe(content=1_000, overhead=100, actual=900)
        cal.estimate(content=1_100, overhead=110)                   # 900 * 1.1 * 1.02 -> 1010
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

    def rates(
        self,
        *,
        content: int,
        overhead: int,
        buckets: tuple[int, int] = (0, len(BUCKET_EDGES)),
        shapes: tuple[float, float],
    ) -> tuple[float, float]:
        """Per-token rates ``(r_content, r_overhead)`` that bound estimates linearly.

        For every request, in the current state, whose bucket lies in ``buckets`` and
        whose shape ``content / overhead`` lies in ``shapes`` (both ranges inclusive,
        ``overhead > 0``)::

            estimate(content=C, overhead=V, ...) <= r_content * C + r_overhead * V

        A linear bound is what lets a request's estimate be split into per-message costs
        whose sums bound the estimate of every subset of its messages. Of such bounds,
        this is the tightest for a request of ``content`` and ``overhead`` (given one
        observation per bucket: the one that bounds that request best).
        """
        chosen = self._buckets[buckets[0] : buckets[1] + 1]
        raw_scale = max(b.raw_scale for b in chosen)
        if overhead <= 0:
            return raw_scale, raw_scale
        x_lo, x_hi = shapes
        x_f = min(max(content / overhead, x_lo), x_hi)
        # Per unit of overhead, at shape x = C / V, a bucket estimates at most
        # min(s * (1 + x), a * max(x, k)) for its raw scale s and any observation
        # (a = (1 + headroom) * actual / c_i, k = c_i / v_i). Each is a set of lines.
        per_bucket = [(b.raw_scale, *self._observation_at(b, x_f)) for b in chosen]
        points = _bound_points(per_bucket, x_lo, x_hi, x_f)
        hull = _upper_hull(points)
        if len(hull) == 1:
            # One shape only: the raw parts scaled alike.
            (x, y) = hull[0]
            return y / (1.0 + x), y / (1.0 + x)
        slope, intercept = _line_above(points, hull, x_f)
        if slope * content + intercept * overhead > raw_scale * (content + overhead):
            return raw_scale, raw_scale  # the raw estimate, scaled, bounds every request
        return slope, intercept

    @staticmethod
    def _observation_at(b: _Bucket, x_f: float) -> tuple[float, float]:
        """``(a, k)`` of the observation that bounds a request of shape ``x_f`` best."""
        best = (math.inf, 0.0)
        best_y = math.inf
        for c_i, v_i, actual in tuple(b.observations):
            if c_i <= 0 or v_i <= 0:
                continue
            a = (1.0 + b.headroom) * actual / c_i
            k = c_i / v_i
            y = a * max(x_f, k)
            if y < best_y:
                best, best_y = (a, k), y
        return best

    @staticmethod
    def _bound(b: _Bucket, content: int, overhead: int, skip: int | None = None) -> float:
        columns = b.columns
        if skip is None and columns is not None:
            # The loop below as C-level maps: the same operations on the same operands.
            actuals, cs, vs = columns
            growths = map(
                max,
                map(operator.truediv, itertools.repeat(content), cs),
                map(operator.truediv, itertools.repeat(overhead), vs),
            )
            return min(map(operator.mul, actuals, growths), default=math.inf)
        best = math.inf
        for i, (c_i, v_i, actual) in enumerate(tuple(b.observations)):
            if i == skip:
                continue
            growth = max(
                content / c_i if c_i else (math.inf if content else 0.0),
                overhead / v_i if v_i else (math.inf if overhead else 0.0),
            )
            best = min(best, actual * growth)
        return best

    def _part(self, b: _Bucket, content: int, overhead: int) -> float:
        raw = (content + overhead) * b.raw_scale
        return min(raw, self._bound(b, content, overhead) * (1.0 + b.headroom))

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
        anchored = self._anchored(b, prefixes)
        if anchored is not None and self._floor(b, content, overhead) >= anchored:
            best = anchored  # the request's own bound cannot be lower: not worked out
        else:
            best = self._part(b, content, overhead)
            if anchored is not None:
                best = min(best, anchored)
        # The epsilon keeps float noise from rounding an exact product up by one.
        return math.ceil(best - 1e-9)

    def _anchored(self, b: _Bucket, prefixes: Iterable[tuple[int, int, int]]) -> float | None:
        """The server's count of the longest known prefix plus the rest's part, if any."""
        for key, rest_content, rest_overhead in prefixes:
            known = self._prefixes.get(key)
            if known is not None:
                return known + self._part(b, rest_content, rest_overhead)
        return None

    @staticmethod
    def _floor(b: _Bucket, content: int, overhead: int) -> float:
        """A value never above :meth:`_part` of the request, without its bound: each
        observation's growth is at least either part's own ratio. The margin (far above
        float rounding) keeps it below the part as computed."""
        least = b.least
        if least is None:
            return -math.inf
        raw = (content + overhead) * b.raw_scale
        lowest = max(content * least[0], overhead * least[1]) * (1.0 - 1e-9)
        return min(raw, lowest * (1.0 + b.headroom))

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
            predicted = self._bound(b, content, overhead)
            surprise = max(0.0, actual / predicted - 1.0) if predicted < math.inf else 0.0
            if surprise > b.headroom:
                # The bucket's texts vary more in density than its headroom allowed.
                b.headroom = min(MAX_HEADROOM, surprise + self.headroom)
            b.observations.append((content, overhead, actual))
            kept = tuple(b.observations)
            regular = all(c_i > 0 and v_i > 0 for c_i, v_i, _ in kept)
            b.columns = _columns(kept) if regular else None
            b.least = (
                (min(a / c for c, _, a in kept), min(a / v for _, v, a in kept))
                if regular
                else None
            )
            b.surprises.append(surprise)
            if len(b.observations) >= LEARN_AFTER:
                # Never below a surprise still in the window: the spread measured among
                # similar observations can hide how different the next text may be.
                spread = max(SPREAD_FACTOR * self._spread(b), max(b.surprises), b.floor)
                b.headroom = min(MAX_HEADROOM, spread + self.headroom)
            ratio = actual / (content + overhead)
            if ratio * (1.0 + self.headroom) > b.raw_scale:
                b.raw_scale = ratio * (1.0 + self.headroom)
            if key is not None and self._max_prefixes:
                if len(self._prefixes) >= self._max_prefixes:
                    del self._prefixes[next(iter(self._prefixes))]
                self._prefixes[key] = actual

    def _spread(self, b: _Bucket) -> float:
        """How far each observation exceeds what the others would have estimated for it."""
        worst = 0.0
        for j, (c_j, v_j, actual) in enumerate(tuple(b.observations)):
            predicted = self._bound(b, c_j, v_j, skip=j)
            if predicted < math.inf:
                worst = max(worst, actual / predicted - 1.0)
        return worst

    def samples(self, bucket: int = 0) -> int:
        """How many observations ``bucket`` holds."""
        return len(self._buckets[bucket].observations)
