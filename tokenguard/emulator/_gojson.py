"""The emulator's own spelling of Go's ``encoding/json`` (the server writes tool JSON so).

Keys sorted, ``<`` ``>`` ``&`` U+2028 U+2029 escaped, numbers as Go prints a float64.
Kept apart from the client's counting code on purpose: the emulator is the reference
the counter is tested against.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

__all__ = ["go_dumps"]

_ESCAPED: tuple[tuple[str, str], ...] = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"))
_ESCAPED += (("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _go_float(f: float) -> str:
    if f == 0 or 1e-6 <= abs(f) < 1e21:
        return format(Decimal(repr(f)).normalize(), "f")
    mantissa, exponent = repr(f).split("e")
    mantissa = mantissa.removesuffix(".0")
    sign, digits = exponent[0], exponent[1:]
    if sign == "-":
        digits = str(int(digits))
    return f"{mantissa}e{sign}{digits}"


def _numbers_as_markers(value: Any, found: list[str]) -> Any:
    """``value`` with every number replaced by a marker string naming its Go spelling."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        found.append(_go_float(float(value)))
        return f"\x00{len(found) - 1}\x00"
    if isinstance(value, dict):
        return {k: _numbers_as_markers(v, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_markers(v, found) for v in value]
    raise TypeError(f"{type(value).__name__} is not JSON")


def go_dumps(value: Any, *, indent: int | None = None, prefix: str = "") -> str:
    """What Go's encoder writes for ``value`` (``SetIndent(prefix, " " * indent)`` when
    ``indent`` is given, without the trailing newline)."""
    numbers: list[str] = []
    marked = _numbers_as_markers(value, numbers)
    if indent is None:
        text = json.dumps(marked, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    else:
        text = json.dumps(marked, ensure_ascii=False, sort_keys=True, indent=indent)
        text = text.replace("\n", "\n" + prefix)
    for plain, escaped in _ESCAPED:
        text = text.replace(plain, escaped)
    for i, number in enumerate(numbers):
        text = text.replace(f'"\\u0000{i}\\u0000"', number, 1)
    return text
