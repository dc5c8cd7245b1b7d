"""Shortening one message inside: keep its beginning and its end, mark the cut visibly.

Used when a message that must be kept (the newest question, or a tool result of the
current turn) is too large on its own: the model still sees how the text starts and
how it ends (where the question usually is), and the marker tells it text is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._layout import content_of, with_content

__all__ = ["MARKER", "shorten"]

#: Put where text was cut; ``{chars}`` is the number of characters left out.
MARKER = "\n\n[... {chars:,} characters cut here to fit the context ...]\n\n"

_TRIES = 8


def _text_and_rest(content: Any) -> tuple[str, list[Any]] | None:
    """The text of ``content`` and its non-text parts (images), or ``None`` if no text."""
    if isinstance(content, str):
        return content, []
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts: list[str] = []
        rest: list[Any] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                rest.append(part)
        return "".join(texts), rest
    return None


def _rebuild(original: Any, text: str, rest: list[Any]) -> Any:
    if isinstance(original, str):
        return text
    return [{"type": "text", "text": text}, *rest]


def shorten(
    message: Any, target: int, cost_of: Callable[[Any], int]
) -> tuple[dict[str, Any], int] | None:
    """``message`` cut inside so that ``cost_of`` it is at most ``target`` tokens.

    Returns the new message (a dict copy) and its cost; when even the marker alone costs
    more than ``target``, the message cut to the marker; ``None`` when it has no text to
    cut (tool calls only). The cut is sized
    from the text's own characters-per-token ratio and corrected by counting, so the
    result lands within a few tokens of ``target`` whatever the script.

    Example::

        short, cost = shorten({"role": "user", "content": "word " * 10_000}, 500, cost_of)
        # short["content"] == "word word ... [... 48,460 characters cut here ...] ... word"
    """
    content = content_of(message)
    split = _text_and_rest(content)
    if split is None:
        return None
    text, rest = split
    full = cost_of(message)
    if full <= target:
        return with_content(message, content), full

    def build(keep: int) -> dict[str, Any]:
        keep = max(0, min(keep, len(text)))
        head = (keep + 1) // 2
        tail = keep // 2
        cut = len(text) - head - tail
        body = text[:head] + MARKER.format(chars=cut) + (text[len(text) - tail :] if tail else "")
        return with_content(message, _rebuild(content, body, rest))

    bare = build(0)
    floor = cost_of(bare)
    if floor >= target:
        # As short as it gets; the caller looks for the rest elsewhere.
        return bare, floor
    per_token = len(text) / max(1, full - floor)
    keep = int((target - floor) * per_token)
    best: tuple[dict[str, Any], int] = (bare, floor)
    for _ in range(_TRIES):
        if keep <= 0:
            break
        candidate = build(keep)
        cost = cost_of(candidate)
        if cost <= target:
            if cost > best[1]:
                best = (candidate, cost)
            if target - cost <= max(2, (target - floor) // 100):
                break
            # Room left: grow by what the remaining tokens are worth.
            keep += max(1, int((target - cost) * per_token))
        else:
            # Over: shrink in proportion to the overshoot, a little more to converge.
            keep = int(keep * (target - floor) / max(1, cost - floor) * 0.98)
    return best
