"""JSON text as Groq's gateway writes it into Llama prompts: Go's ``encoding/json``.

Groq's Llama templates print tool definitions (and Llama 4 re-prints tool-call
arguments) with Go's encoder, so the prompt holds Go's spelling of the JSON, not the
caller's: object keys sorted (the values are Go maps), ``<`` ``>`` ``&`` written
``\\u003c`` ``\\u003e`` ``\\u0026`` and U+2028/U+2029 escaped (HTML escaping is on),
other non-ASCII text raw, and every number a float64 in Go's shortest form (``1.0`` is
``1``, ``1e-5`` is ``0.00001``, ``1e21`` is ``1e+21``). The invariant: for values that
came from JSON, :func:`go_json` is byte for byte what Go's ``json.Marshal`` writes (and
``indent`` what ``Encoder.SetIndent`` writes, without the trailing newline).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..errors import InvalidMessages

__all__ = ["go_json", "go_number"]

_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_NEEDS_HTML_ESCAPE = frozenset(_HTML_ESCAPES)


#: Go reads a lone surrogate escape (``"\\ud800"``, valid JSON) as U+FFFD.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_string(text: str) -> str:
    if not text.isascii():
        text = _LONE_SURROGATE.sub("\ufffd", text)
    out = json.dumps(text, ensure_ascii=False)
    if _NEEDS_HTML_ESCAPE.isdisjoint(text):
        return out
    return "".join(_HTML_ESCAPES.get(ch, ch) for ch in out)


def go_number(value: float) -> str:
    """A JSON number as Go writes a float64: shortest digits, exponent only outside
    [1e-6, 1e21), and the exponent without a leading zero."""
    f = float(value)
    if not math.isfinite(f):
        raise InvalidMessages(f"{value!r} is not a JSON number (Go's encoder rejects it)")
    magnitude = abs(f)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(f)  # Python's shortest digits, always in exponent form here
        mantissa, _, exponent = text.partition("e")
        sign = exponent[0]
        digits = exponent[1:].lstrip("0") or "0"
        if len(digits) < 2 and sign == "+":
            digits = digits.zfill(2)
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{sign}{digits}"
    return format(Decimal(repr(f)).normalize(), "f")


def go_json(value: Any, indent: str | None = None, prefix: str = "") -> str:
    """``value`` (as read from JSON) written by Go's encoder; with ``indent``, as
    ``Encoder.SetIndent(prefix, indent)`` writes it (trailing newline trimmed)."""
    parts: list[str] = []
    _write(value, parts, indent, "\n" + prefix if indent is not None else "")
    return "".join(parts)


def _write(value: Any, out: list[str], indent: str | None, newline: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, (int, float)):
        out.append(go_number(value))
    elif isinstance(value, Mapping):
        if not value:
            out.append("{}")
            return
        inner = newline + indent if indent is not None else ""
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise InvalidMessages(f"JSON object keys must be str, got {key!r}")
            if i:
                out.append(",")
            out.append(inner)
            out.append(_go_string(key))
            out.append(": " if indent is not None else ":")
            _write(value[key], out, indent, inner)
        out.append(newline + "}" if indent is not None else "}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if not value:
            out.append("[]")
            return
        inner = newline + indent if indent is not None else ""
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            out.append(inner)
            _write(item, out, indent, inner)
        out.append(newline + "]" if indent is not None else "]")
    else:
        raise InvalidMessages(
            f"tool definitions are not JSON-serializable ({type(value).__name__} is not a "
            "JSON value)"
        )
