"""A bounded, thread-safe cache of per-text token counts.

Counting a conversation that grew by one message must cost about one message, so every
message body's count is cached, keyed by the body text itself. Two levels: a
least-recently-used map charged ``sys.getsizeof(text) + ENTRY_OVERHEAD`` bytes per
entry, bounded by ``max_bytes``, which takes every new text; and in front of it a
``dict`` read without a lock, which takes a text on its second use (at most
``front_chars`` characters of keys, emptied when full).

Invariant: memory stays within ``max_bytes`` + ``front_chars`` characters, whatever the
input. Why two levels and not ``cachetools``: docs/counting-internals.md.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "TextCache"]

V = TypeVar("V")

#: Bytes charged per entry on top of the key text: dict slot, LRU links, the value.
ENTRY_OVERHEAD = 160


class TextCache(Generic[V]):
    """Maps a text to a value computed from it, within a memory bound.

    Example::

        cache = TextCache(lambda text: len(text.split()), max_bytes=1 << 20)
        cache.get_or_compute("hello world")   # 2
    """

    def __init__(
        self,
        compute: Callable[[str], V],
        *,
        compute_many: Callable[[list[str]], list[V]] | None = None,
        max_bytes: int = 32 << 20,
        front_chars: int = 4 << 20,
    ) -> None:
        self._compute = compute
        # ``compute`` of each of many texts in one step (new texts come in batches).
        self._compute_many = compute_many
        self._lru: _ByteLRU[V] = _ByteLRU(max_bytes)
        self._lock = threading.Lock()
        self.front: dict[str, V] = {}
        self._front_chars = 0
        self._front_limit = front_chars
        self.max_bytes = max_bytes
        self.front_chars = front_chars
        #: How many texts were tokenized (cache misses), for tests and benchmarks.
        self.computed = 0

    def get_or_compute(self, text: str) -> V:
        """The value for ``text``, computed (outside the lock) and cached on a miss."""
        value = self.front.get(text)
        if value is not None:
            return value
        return self.get_many([text])[0]

    def get_many(self, texts: list[str]) -> list[V]:
        """The values for ``texts``: one lock round for lookups, one for insertions.

        A text computed here goes to the LRU level only; it enters the front level when it
        is asked for again (a text counted once never pays for the front's bookkeeping).
        """
        with self._lock:
            values = self._lru.get_many(texts)
            if values:
                self._remember_many(values.items())
        if len(values) < len(texts):
            missing = [text for text in texts if text not in values]
            many = self._compute_many
            computed = list(map(self._compute, missing)) if many is None else many(missing)
            fresh = dict(zip(missing, computed, strict=True))
            with self._lock:
                self.computed += len(fresh)
                self._lru.put_many(fresh)
            values.update(fresh)
        return list(map(values.__getitem__, texts))

    def _remember_many(self, items: Iterable[tuple[str, V]]) -> None:
        front = self.front
        limit = self._front_limit
        chars = self._front_chars
        for text, value in items:
            n = len(text)
            if n > limit or text in front:
                continue
            if chars + n > limit:
                # Emptying is O(1) amortized and keeps the bound; hot texts come back from
                # the LRU level on their next use.
                front = self.front = {}
                chars = 0
            front[text] = value
            chars += n
        self._front_chars = chars

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._lru.clear()
            self.front = {}
            self._front_chars = 0

    @property
    def front_size(self) -> int:
        """Characters of keys currently in the front level (at most ``front_chars``)."""
        return self._front_chars

    @property
    def lru_bytes(self) -> int:
        """Bytes currently charged to the LRU level (at most ``max_bytes``)."""
        return self._lru.currsize

    def __len__(self) -> int:
        return len(self._lru)


class _ByteLRU(Generic[V]):
    """Text -> value, each entry charged ``sys.getsizeof(text) + ENTRY_OVERHEAD`` bytes
    (worked out again on eviction rather than kept), least recently used first out when
    the charges exceed ``max_bytes``. Not locked: :class:`TextCache` holds its lock
    around every call."""

    __slots__ = ("_data", "currsize", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._data: OrderedDict[str, V] = OrderedDict()
        self.max_bytes = max_bytes
        self.currsize = 0

    def get_many(self, texts: Iterable[str]) -> dict[str, V]:
        """The values of those of ``texts`` that are kept, now the most recently used."""
        data = self._data
        found: dict[str, V] = {}
        for text in texts:
            hit = data.get(text)
            if hit is not None:
                data.move_to_end(text)
                found[text] = hit
        return found

    def put_many(self, items: dict[str, V]) -> None:
        """Keep ``items`` (a text's value never changes: one kept already stays)."""
        data = self._data
        keep = data.setdefault
        currsize = self.currsize
        limit = self.max_bytes
        for text, value in items.items():
            size = sys.getsizeof(text) + ENTRY_OVERHEAD
            if size > limit:
                continue
            kept = len(data)
            keep(text, value)
            if len(data) > kept:
                currsize += size
            else:
                data.move_to_end(text)  # kept by another thread meanwhile
        # Least recently used first out: the same entries stay as when evicting after
        # each insertion (what stays is the longest recent run within the bound).
        while currsize > limit:
            text, _ = data.popitem(last=False)
            currsize -= sys.getsizeof(text) + ENTRY_OVERHEAD
        self.currsize = currsize

    def clear(self) -> None:
        self._data.clear()
        self.currsize = 0

    def __len__(self) -> int:
        return len(self._data)
