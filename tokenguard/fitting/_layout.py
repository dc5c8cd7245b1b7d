"""Which messages of a conversation may go, and in which groups.

A conversation is laid out as: system messages (always kept), the current turn (the
newest user message and everything after it: kept, shortened inside if it must), and
before it the droppable *units*: single messages, or an assistant message carrying
``tool_calls`` together with the tool results that follow it (kept or dropped whole,
so that no tool result loses its call and no call loses its results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["Layout", "content_of", "layout", "role_of", "with_content"]

# Roles kept whatever it costs: instructions, not history.
_PINNED_ROLES = frozenset({"system", "developer"})
_RESULT_ROLES = frozenset({"tool", "function"})


def role_of(message: Any) -> Any:
    """The ``role`` of a dict message or an SDK message object (``None`` if absent)."""
    if type(message) is dict or isinstance(message, Mapping):
        return message.get("role")
    return getattr(message, "role", None)


def content_of(message: Any) -> Any:
    """The ``content`` of a dict message or an SDK message object."""
    if isinstance(message, Mapping):
        return message.get("content")
    return getattr(message, "content", None)


def with_content(message: Any, content: Any) -> dict[str, Any]:
    """A copy of ``message`` as a dict, with ``content`` replaced (the original is untouched)."""
    if isinstance(message, Mapping):
        copy = dict(message)
    else:
        dump = getattr(message, "model_dump", None)
        copy = dict(dump(exclude_none=True)) if callable(dump) else {"role": role_of(message)}
    copy["content"] = content
    return copy


class Layout(NamedTuple):
    """Indices into the message list: ``system`` and ``turn`` (the newest user message and
    the newest exchange) are kept; ``units`` (oldest first) are what truncation and
    summarization may take away, each whole."""

    system: tuple[int, ...]
    units: tuple[list[int], ...]
    turn: tuple[int, ...]


def layout(messages: Sequence[Any]) -> Layout:
    """Lay ``messages`` out into pinned system messages, droppable units and the current turn.

    The kept ``turn`` is the newest ``user`` message and the newest unit (a tool call
    with its results, or one message); without a user message, the newest unit alone.
    Tool results that follow no call stay attached to whatever precedes them, so
    dropping never creates an orphan.

    Example::

        >>> msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
        ...         {"role": "assistant", "content": None, "tool_calls": [...]},
        ...         {"role": "tool", "tool_call_id": "1", "content": "r"},
        ...         {"role": "user", "content": "b"}]
        >>> layout(msgs)
        Layout(system=(0,), units=([1], [2, 3]), turn=(4,))
    """
    # One pass, plain dicts (the common case) read inline: this runs on every fit.
    system: list[int] = []
    units: list[list[int]] = []
    new_unit = units.append
    last_user = last_other = -1  # positions of the newest user / non-system message
    for i, m in enumerate(messages):
        role = m.get("role") if type(m) is dict else role_of(m)
        if role in _PINNED_ROLES:
            system.append(i)
            continue
        last_other = i
        if role == "user":
            last_user = i
        if role in _RESULT_ROLES and units:
            # Results join the unit before them: their call's group, or (for a result
            # that follows no call) whatever precedes it, so dropping creates no orphan.
            units[-1].append(i)
        else:
            new_unit([i])
    if last_other < 0:
        return Layout(tuple(system), (), ())
    # Kept whatever it costs: the unit of the newest user message and the newest unit
    # (the exchange in progress, e.g. a tool call and its results). Any units between
    # them can go like older history, newest kept first.
    last = units[-1]
    if last_user >= 0:
        k = len(units) - 1
        while units[k][0] > last_user:
            k -= 1
        asked = units[k]
        pinned = asked if asked is last else asked + last
        rest = [u for u in units if u is not asked and u is not last]
    else:
        pinned, rest = last, units[:-1]
    return Layout(tuple(system), tuple(rest), tuple(pinned))
