"""Whether a request's values can be sent: one walk, as the SDKs' JSON encoder sees them.

The openai and groq SDKs send a body with ``json.dumps(..., ensure_ascii=False,
allow_nan=False)`` and UTF-8: a lone surrogate, a non-finite float, a key JSON cannot
spell or a value that is not JSON (a set, bytes, an ``object()``) makes them raise a raw
``UnicodeEncodeError``, ``ValueError`` or ``TypeError`` after tokenguard has counted and
reserved. :func:`check_messages` and :func:`check_field` refuse such values up front with
the path of the first one (``messages[2].tool_calls[0].function.arguments``).

Invariant: a value that passes is one both SDKs serialize (pydantic models are walked
through their dump, as the SDKs send them); a walk that passes builds no path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidMessages, InvalidRequest

__all__ = ["MAX_DEPTH", "check_field", "check_messages", "check_text_field"]

#: Nesting deeper than this is refused (a list or dict that contains itself never ends).
MAX_DEPTH = 100

_JSON_TYPES = "a JSON value (str, int, float, bool, None, list or dict)"


class _Unsendable(Exception):
    """The first value that cannot be sent; ``path`` is filled in, innermost first, as
    the walk unwinds (so a successful walk builds no path)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.path: list[str] = []


def _surrogate(text: str) -> _Unsendable | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _Unsendable(
            f"contains a lone surrogate {text[exc.start]!r} at character {exc.start}; "
            "expected text that UTF-8 can encode"
        )
    return None


def _key_step(key: object) -> str:
    if isinstance(key, str):
        if key.isidentifier():
            return f".{key}"
        shown = repr(key)
        return f"[{shown if len(shown) <= 40 else shown[:37] + '...'}]"
    if key is None or isinstance(key, (int, float)):
        return f"[{key!r}]"
    return f"[<{type(key).__name__} key>]"  # its repr may be long or carry content


def _check_key(key: object, str_keys: bool) -> None:
    if isinstance(key, str):
        if not key.isascii() and (bad := _surrogate(key)) is not None:
            bad.problem = "has a key that " + bad.problem
            raise bad
    elif str_keys:
        # What is counted is read as the server reads JSON: an int key would have to be
        # spelled as json.dumps spells it ("1") for the count to hold.
        shown = f" ({key!r})" if key is None or isinstance(key, (int, float)) else ""
        raise _Unsendable(f"has a key of type {type(key).__name__}{shown}; expected str keys")
    elif isinstance(key, float):
        if not math.isfinite(key):
            raise _Unsendable(f"has the key {key!r}; expected str keys (JSON has no NaN or inf)")
    elif not (key is None or isinstance(key, int)):
        # json.dumps spells int, float, bool and None keys as strings; nothing else.
        raise _Unsendable(f"has a key of type {type(key).__name__}; expected str keys")


#: Values that need no look beyond their type (an ASCII str is checked in the loops).
_PLAIN = frozenset({int, bool, type(None)})


def _walk(value: Any, depth: int, str_keys: bool) -> None:
    t = type(value)
    if t is str:
        if not value.isascii() and (bad := _surrogate(value)) is not None:
            raise bad
    elif t in _PLAIN:
        return
    elif t is dict or (t is not list and t is not tuple and isinstance(value, Mapping)):
        _walk_mapping(value, depth, str_keys)
    elif t is list or t is tuple or isinstance(value, (list, tuple)):
        _walk_items(value, depth, str_keys)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Unsendable(f"is {value!r}; expected a finite number (JSON has no NaN or inf)")
    elif isinstance(value, str):  # a subclass (an enum): sent as its text
        if not value.isascii() and (bad := _surrogate(value)) is not None:
            raise bad
    elif not isinstance(value, int):  # an int subclass (an enum) is sent as a number
        _walk_other(value, depth, str_keys)


def _too_deep(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Unsendable(
            f"is nested deeper than {MAX_DEPTH} levels (a list or dict that contains "
            f"itself?); expected at most {MAX_DEPTH}"
        )


def _walk_mapping(value: Mapping[Any, Any], depth: int, str_keys: bool) -> None:
    _too_deep(depth)
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            _check_key(key, str_keys)  # a problem of this mapping, not of the item
        t = type(item)
        if (t is str and item.isascii()) or t in _PLAIN:
            continue  # most values: no call needed
        try:
            _walk(item, depth + 1, str_keys)
        except _Unsendable as exc:
            exc.path.append(_key_step(key))
            raise


def _walk_items(value: list[Any] | tuple[Any, ...], depth: int, str_keys: bool) -> None:
    _too_deep(depth)
    for i, item in enumerate(value):
        t = type(item)
        if (t is str and item.isascii()) or t in _PLAIN:
            continue
        try:
            _walk(item, depth + 1, str_keys)
        except _Unsendable as exc:
            exc.path.append(f"[{i}]")
            raise


def _walk_other(value: Any, depth: int, str_keys: bool) -> None:
    """A pydantic model (the SDKs send its dump) or a value JSON has no form for."""
    if type(value).__name__ in ("NotGiven", "Omit"):
        return  # the SDKs' "not given" sentinels: left out of the body
    dump = getattr(value, "model_dump", None)
    if not callable(dump) or isinstance(value, type):
        raise _Unsendable(f"has type {type(value).__name__}; expected {_JSON_TYPES}")
    try:
        dumped = dump(exclude_unset=True, by_alias=True)
    except Exception as exc:  # a broken model is the caller's input problem
        raise _Unsendable(
            f"has type {type(value).__name__} and could not be read ({exc!r})"
        ) from None
    _walk(dumped, depth, str_keys)


def _path(exc: _Unsendable) -> str:
    return "".join(reversed(exc.path))


def check_messages(messages: Sequence[Any]) -> None:
    """Refuse the first value of ``messages`` the SDKs cannot send, naming its path.

    Example::

        >>> check_messages([{"role": "user", "content": "Hi", "name": "\\ud800"}])
        Traceback (most recent call last):
        ...
        tokenguard.errors.InvalidMessages: messages[0]: name contains a lone surrogate ...
    """
    for i, message in enumerate(messages):
        try:
            _walk(message, 1, True)
        except _Unsendable as exc:
            inner = _path(exc)
            raise InvalidMessages(
                f"{inner.removeprefix('.') or 'message'} {exc.problem}",
                index=i,
                field=f"messages[{i}]{inner}",
            ) from None


def check_field(value: object, field: str, *, str_keys: bool = True) -> None:
    """Refuse ``value`` (the request's ``field``) when the SDKs cannot send it; with
    ``str_keys`` (what is counted) only ``str`` keys, else also those ``json.dumps``
    spells as strings (``logit_bias={1234: -100}``)."""
    try:
        _walk(value, 0, str_keys)
    except _Unsendable as exc:
        path = field + _path(exc)
        raise InvalidRequest(f"{path} {exc.problem}", field=path) from None


def check_text_field(text: str, field: str) -> None:
    """:func:`check_field` for a ``str`` already known to be one (a model name)."""
    if not text.isascii() and (bad := _surrogate(text)) is not None:
        raise InvalidRequest(f"{field} {bad.problem}", field=field)
