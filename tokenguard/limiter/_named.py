"""A limit named in a 429 or 413 body, adopted by a limiter state.

Groq reports TPM and RPD in headers only; a refusal's body names the limit that bound
it ("tokens per day (TPD): Limit 500000, Used 499950, Requested 120"). This module
takes such a limit into the buckets or the window, as a header's limit is taken: the
capacity set (added when the limiter did not count that limit), and the room brought
down to what the server said was left. Pure: ``now`` is passed in.

Invariant: the room is only ever lowered by a body, never raised (a stale or repeated
refusal cannot free anything); the values are checked by the caller
(:func:`believable`) before they reach a state.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._bucket import Buckets, _Level
from ._headers import MAX_LIMIT
from ._window import Ledger, Window

__all__ = ["LIMIT_NAMES", "adopt_named", "believable"]

#: The limits a body may name, in the order of the Lua scripts' buckets (1..4).
LIMIT_NAMES = ("tpm", "rpm", "tpd", "rpd")


def believable(name: str, limit: int, used: int | None) -> str | None:
    """Why a named limit cannot be believed, or ``None`` when it can: a known name, a
    limit in ``1..MAX_LIMIT`` (as a header's), ``used`` within ``0..limit``."""
    if name not in LIMIT_NAMES:
        return f"unknown limit {name!r}"
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        return f"limit {limit!r} outside 1..{MAX_LIMIT}"
    if used is not None and (
        isinstance(used, bool) or not isinstance(used, int) or not 0 <= used <= limit
    ):
        return f"used {used!r} outside 0..{limit}"
    return None


def adopt_named(state: Any, name: str, limit: int, used: int | None, now: float) -> bool:
    """Take ``name``'s ``limit`` (and, with ``used``, the room ``limit - used`` less what
    is in flight) into ``state`` (call ``expire(now)`` first); the change goes to its
    ``limit_changes``. True if anything changed."""
    if isinstance(state, Buckets):
        return _adopt_buckets(state, name, limit, used, now)
    assert isinstance(state, Window)
    return _adopt_window(state, name, limit, used, now)


def _adopt_buckets(b: Buckets, name: str, limit: int, used: int | None, now: float) -> bool:
    tokens = name.startswith("t")
    lv: _Level | None = getattr(b, name)
    changed = False
    if lv is None:
        period = b.window if name.endswith("m") else b.limits.day
        lv = _Level(limit, period, tokens=tokens)  # full: the body says how much is used
        setattr(b, name, lv)
        b.levels.append(lv)
        b.limit_changes.append((name, None, limit))
        changed = True
    elif lv.cap != limit:
        b.limit_changes.append((name, round(lv.cap), limit))
        changed = lv.limit_to(limit)
    if used is not None:
        # What is in flight is in the server's "Used" too (as for a header taken as
        # current), and is charged to this level again when it settles.
        if b.header_lag > 0:
            seen_t, seen_r = b._seen(now, None)
        else:
            seen_t, seen_r = b.open_tokens, b.open_requests
        target = float(limit - used) + (seen_t if tokens else seen_r)
        if lv.level > target:
            lv.level = target
            changed = True
    return changed


def _adopt_window(w: Window, name: str, limit: int, used: int | None, now: float) -> bool:
    minute = name.endswith("m")
    ledger = w.minute if minute else w.day
    if ledger is None:
        ledger = Ledger(w.limits.window) if minute else Ledger(w.limits.day, bucket=w.limits.window)
        if minute:
            w.minute = ledger
        else:
            w.day = ledger
    old: int | None = getattr(w.limits, name)
    changed = False
    if old != limit:
        w.limit_changes.append((name, old, limit))
        w.limits = replace(w.limits, **{name: limit})
        changed = True
    if used is not None:
        seen_t, seen_r = w.seen_mark(now)
        unit = "tokens" if name.startswith("t") else "requests"
        unseen = w.admitted_tokens - seen_t if unit == "tokens" else w.admitted_requests - seen_r
        ledger.expire(now)
        held = ledger.adopt(
            now,
            limit=limit,
            unit=unit,
            remaining=limit - used,
            server_limit=limit,
            reset=None,
            unseen=unseen,
        )
        changed |= held > 0
    return changed
