"""The emulator's request log and checks over it ("never admitted more than a bucket allows")."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RequestRecord", "max_requests_in_any_window", "max_tokens_in_any_window"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it.

    ``t`` is the emulator clock at arrival; ``status`` the HTTP status; the token fields are
    0 when the request was rejected before they were known. ``requested_tokens`` is what the
    buckets were charged at admission (prompt + max tokens or the default reservation),
    ``charged_tokens`` what stayed charged after a refund (equal without ``refund_unused``).
    ``error`` is Groq's error code (``"rate_limit_exceeded"``, ``"context_length_exceeded"``,
    ...), ``error_type`` its type (``"tokens"``, ``"requests"``, ``"invalid_request_error"``),
    ``limit`` the limit named by a 413/429 (``"TPM"``, ``"RPM"``, ``"TPD"``, ``"RPD"``).
    ``endpoint`` is ``"chat"``, ``"models"``, ``"model"`` or ``"unknown"``.
    """

    t: float
    model: str | None
    status: int
    prompt_tokens: int = 0
    requested_tokens: int = 0
    completion_tokens: int = 0
    charged_tokens: int = 0
    error: str | None = None
    error_type: str | None = None
    limit: str | None = None
    endpoint: str = "chat"
    path: str = ""
    stream: bool = False
    request_id: str | None = None

    @property
    def admitted(self) -> bool:
        """True when a chat request passed the buckets (and was charged)."""
        return self.endpoint == "chat" and self.status == 200

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


def _admitted(log: Iterable[RequestRecord], model: str | None) -> list[RequestRecord]:
    return sorted(
        (r for r in log if r.admitted and (model is None or r.model == model)),
        key=lambda r: r.t,
    )


def _max_in_window(points: list[tuple[float, int]], window: float) -> int:
    """Largest sum of weights with times inside any half-open interval ``[s, s + window)``."""
    best = 0
    total = 0
    lo = 0
    for hi in range(len(points)):
        total += points[hi][1]
        while points[hi][0] - points[lo][0] >= window:
            total -= points[lo][1]
            lo += 1
        best = max(best, total)
    return best


def max_tokens_in_any_window(
    log: Iterable[RequestRecord],
    window: float,
    *,
    model: str | None = None,
    field: str = "requested_tokens",
) -> int:
    """Most tokens admitted within any ``window`` seconds (by arrival time).

    ``field`` picks what a request weighs: ``"requested_tokens"`` (what was reserved),
    ``"charged_tokens"`` (after refunds) or ``"prompt_tokens"``. A token bucket of
    capacity ``L`` and period ``P`` admits at most ``L + L * window / P`` in such a window;
    a client-side sliding window of ``L`` per ``P`` keeps this at most ``L`` for ``window=P``.

    Example::

        assert max_tokens_in_any_window(em.log, 60.0) <= 6000
    """
    points = [(r.t, int(getattr(r, field))) for r in _admitted(log, model)]
    return _max_in_window(points, window)


def max_requests_in_any_window(
    log: Iterable[RequestRecord], window: float, *, model: str | None = None
) -> int:
    """Most requests admitted within any ``window`` seconds (by arrival time)."""
    return _max_in_window([(r.t, 1) for r in _admitted(log, model)], window)
