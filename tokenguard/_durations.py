"""Durations: Go-style as Groq writes them in ``x-ratelimit-reset-*`` headers and 429
bodies (``6s``, ``1.559999999s``, ``120ms``, ``1m26.4s``, ``1h4m48s``), and rounded for
people in messages (``1.2 s``, ``4 min``, ``3 h 10 min``). Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import math
import re

__all__ = ["for_people", "format_go_duration", "parse_go_duration"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``"1m26.4s"`` -> ``86.4``); a bare number is seconds.

    Raises ``ValueError`` naming the text when it is not a duration.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration; expected e.g. '6s', '1m26.4s' or '120ms'")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration {text!r} is not a finite non-negative number")
        return value
    pos = 0
    total = 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a Go duration; expected e.g. '6s', '1m26.4s', '120ms'")
    if not math.isfinite(total):  # "1e400" digits written out: no wait anyone can keep
        raise ValueError(f"duration {text!r} is not finite")
    return total


def format_go_duration(seconds: float) -> str:
    """Write ``seconds`` as Groq does: ``0.5`` -> ``"500ms"``, ``86.4`` -> ``"1m26.4s"``,
    ``3888`` -> ``"1h4m48s"``, ``0`` -> ``"0s"``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and >= 0, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = round(seconds * 1000, 3)
        return f"{_trim(ms)}ms"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    out = ""
    if hours >= 1:
        out += f"{int(hours)}h"
    if hours >= 1 or minutes >= 1:
        out += f"{int(minutes)}m"
    out += f"{_trim(round(secs, 3))}s"
    return out


def _trim(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def for_people(seconds: float) -> str:
    """``seconds`` rounded for a message, to two units at most: ``0.05`` -> ``"50 ms"``,
    ``1.23`` -> ``"1.2 s"``, ``42.4`` -> ``"42 s"``, ``95`` -> ``"1 min 35 s"``,
    ``250`` -> ``"4 min 10 s"``, ``1500`` -> ``"25 min"``, ``11400`` -> ``"3 h 10 min"``,
    ``200000`` -> ``"2 d 8 h"``; ``inf`` -> ``"forever"``."""
    if math.isinf(seconds) and seconds > 0:
        return "forever"
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and >= 0, got {seconds!r}")
    if seconds == 0:
        return "0 s"
    if seconds < 0.1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    # Round to the unit shown first, so that 59.6 s reads "1 min", not "60 s".
    for unit, size, small, small_size, whole in (
        ("s", 1, "", 0, 60),
        ("min", 60, "s", 1, 10),
        ("min", 60, "", 0, 60),
        ("h", 3600, "min", 60, 48),
        ("d", 86400, "h", 3600, math.inf),
    ):
        step = small_size or size
        total = round(seconds / step)
        big, rest = divmod(total * step, size)
        if big < whole:
            if small and rest:
                return f"{int(big)} {unit} {int(rest // small_size)} {small}"
            return f"{int(big)} {unit}"
    raise AssertionError("unreachable")  # the last unit takes any size
