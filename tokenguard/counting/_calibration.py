"""Learning, per model, how far the conservative estimate sits above the server's count.

For a model whose tokenizer is not at hand, the raw estimate is built to be high
(cl100k_base plus a margin, see ``_estimate``). Each response's ``usage.prompt_tokens``
is an exact measurement of the truth for one request, so the estimate is scaled by a
factor learned from those measurements:

* requests are put in a *script bucket* by the share of non-ASCII characters in their
  text (English and code, a little accented text, ..., mostly non-Latin), because the
  ratio between two tokenizers depends mostly on the script, and a factor learned on
  Hindi must not be applied to English;
* a bucket's factor is the *largest* ratio ``actual / raw`` among its last ``window``
  observations times ``1 + headroom``: every recent request would have been estimated
  at or above its true count, not just the average one;
* the factor goes up at once (one observation that the estimate was low is enough),
  and down only when ``min_samples`` observations agree; it never goes below ``floor``.

So the estimate converges to a few percent above the truth for the kind of text a model
sees, and drops below the truth only when a request's ratio exceeds every ratio seen
in its bucket recently by more than ``headroom`` (a new kind of text in an old bucket);
the next response then raises the factor.
"""

from __future__ import annotations

import math
import threading
from collections import deque

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


class _Bucket:
    __slots__ = ("factor", "ratios")

    def __init__(self, window: int) -> None:
        self.ratios: deque[float] = deque(maxlen=window)
        self.factor = 1.0


class Calibration:
    """Per-model correction of a conservative estimate from the server's counts.

    Thread-safe. Pure: no clock, no I/O.

    Example::

        cal = Calibration()
        cal.observe(raw=1_100, actual=1_000)
        cal.observe(raw=2_200, actual=2_000)
        cal.apply(raw=1_100)          # 1_000 * 1.03, rounded up: 1_030
    """

    def __init__(
        self,
        *,
        window: int = 32,
        headroom: float = 0.03,
        min_samples: int = 2,
        floor: float = 0.25,
    ) -> None:
        if window < 1 or min_samples < 1 or headroom < 0 or not 0 < floor <= 1:
            raise ValueError(
                "Calibration needs window >= 1, min_samples >= 1, headroom >= 0, 0 < floor <= 1"
            )
        self.window = window
        self.headroom = headroom
        self.min_samples = min_samples
        self.floor = floor
        self._buckets = [_Bucket(window) for _ in range(len(BUCKET_EDGES) + 1)]
        self._lock = threading.Lock()

    def factor(self, bucket: int = 0) -> float:
        """The factor currently applied to raw estimates in ``bucket``."""
        return self._buckets[bucket].factor

    def apply(self, raw: int, bucket: int = 0) -> int:
        """The calibrated estimate for a raw estimate ``raw``."""
        # A tiny epsilon keeps float noise from rounding an exact product up by one.
        return math.ceil(raw * self._buckets[bucket].factor - 1e-9)

    def observe(self, *, raw: int, actual: int, bucket: int = 0) -> None:
        """Learn from one request: its raw estimate and the server's ``prompt_tokens``."""
        if raw <= 0 or actual <= 0:
            return
        ratio = actual / raw
        with self._lock:
            b = self._buckets[bucket]
            b.ratios.append(ratio)
            wanted = max(self.floor, max(b.ratios) * (1.0 + self.headroom))
            if wanted > b.factor or len(b.ratios) >= self.min_samples:
                b.factor = wanted

    def samples(self, bucket: int = 0) -> int:
        """How many observations ``bucket`` holds."""
        return len(self._buckets[bucket].ratios)
