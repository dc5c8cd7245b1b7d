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
    """Indices into the message list: ``system`` and ``turn`` are kept; ``units`` (oldest
    first) are what truncation and summarization may take away, each whole."""

    system: tuple[int, ...]
    units: tuple[tuple[int, ...], ...]
    turn: tuple[int, ...]


def layout(messages: Sequence[Any]) -> Layout:
    """Lay ``messages`` out into pinned system messages, droppable units and the current turn.

    The current turn starts at the newest ``user`` message (at the newest non-system
    message when there is no user message at all). Tool results that follow no call
    stay attached to whatever precedes them, so dropping never creates an orphan.

    Example::

        >>> msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
        ...         {"role": "assistant", "content": None, "tool_calls": [...]},
        ...         {"role": "tool", "tool_call_id": "1", "content": "r"},
        ...         {"role": "user", "content": "b"}]
        >>> layout(msgs)
        Layout(system=(0,), units=((1,), (2, 3)), turn=(4,))
    """
    roles = [role_of(m) for m in messages]
    system = tuple(i for i, r in enumerate(roles) if r in _PINNED_ROLES)
    anchor = None
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            anchor = i
            break
    if anchor is None:
        for i in range(len(roles) - 1, -1, -1):
            if roles[i] not in _PINNED_ROLES:
                anchor = i
                break
    if anchor is None:
        return Layout(system, (), ())
    units: list[list[int]] = []
    for i in range(anchor):
        role = roles[i]
        if role in _PINNED_ROLES:
            continue
        if role in _RESULT_ROLES and units:
            # Results join the unit before them: their call's group, or (for a result
            # that follows no call) whatever precedes it, so dropping creates no orphan.
            units[-1].append(i)
        else:
            units.append([i])
    turn = tuple(i for i in range(anchor, len(roles)) if roles[i] not in _PINNED_ROLES)
    return Layout(system, tuple(tuple(u) for u in units), turn)
