"""Go-style durations as Groq writes them in ``x-ratelimit-reset-*`` headers and 429 bodies.

Examples: ``6s``, ``1.559999999s``, ``120ms``, ``1m26.4s``, ``2m59.56s``, ``1h4m48s``.
Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_go_duration", "parse_go_duration"]

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
