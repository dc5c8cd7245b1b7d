"""A bounded, thread-safe cache of per-text token counts.

Counting a conversation that grew by one message must cost about one message, so
every message body's count is cached, keyed by the body text itself (a ``str`` caches
its own hash, so looking up a body that was seen before costs no rehashing).

Two levels, because the warm path has about 0.3 microseconds per message:

* a front ``dict`` read without a lock (a single ``dict.get`` is atomic under the GIL);
  it holds at most ``front_chars`` characters of keys and is simply emptied when full;
* behind it a ``cachetools.LRUCache`` bounded by ``max_bytes``: each entry is charged
  ``sys.getsizeof(text) + ENTRY_OVERHEAD`` bytes, so the texts it keeps alive plus its
  bookkeeping stay under the bound. Texts larger than the bound are never cached.

Memory is therefore bounded by ``max_bytes`` + ``front_chars`` characters
(+ per-entry overhead of the front dict), whatever the input.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import cachetools

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
        max_bytes: int = 32 << 20,
        front_chars: int = 4 << 20,
    ) -> None:
        self._compute = compute
        self._lru: cachetools.LRUCache[str, tuple[V, int]] = cachetools.LRUCache(
            maxsize=max_bytes, getsizeof=_charge
        )
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
        with self._lock:
            hit = self._lru.get(text)
        if hit is not None:
            value = hit[0]
        else:
            value = self._compute(text)
            size = sys.getsizeof(text) + ENTRY_OVERHEAD
            with self._lock:
                self.computed += 1
                if size <= self.max_bytes:
                    self._lru[text] = (value, size)
        self._remember(text, value)
        return value

    def get_many(self, texts: list[str]) -> list[V]:
        """The values for ``texts``: one lock round for lookups, one for insertions."""
        with self._lock:
            lru_get = self._lru.get
            found = {text: lru_get(text) for text in texts}
        values: dict[str, V] = {}
        fresh: list[tuple[str, V, int]] = []
        for text, hit in found.items():
            if hit is not None:
                values[text] = hit[0]
            else:
                value = self._compute(text)
                values[text] = value
                fresh.append((text, value, sys.getsizeof(text) + ENTRY_OVERHEAD))
        with self._lock:
            self.computed += len(fresh)
            for text, value, size in fresh:
                if size <= self.max_bytes:
                    self._lru[text] = (value, size)
            for text, value in values.items():
                self._remember_locked(text, value)
        return [values[text] for text in texts]

    def _remember(self, text: str, value: V) -> None:
        with self._lock:
            self._remember_locked(text, value)

    def _remember_locked(self, text: str, value: V) -> None:
        n = len(text)
        if n > self._front_limit or text in self.front:
            return
        if self._front_chars + n > self._front_limit:
            # Emptying is O(1) amortized and keeps the bound; hot texts come back from
            # the LRU level on their next use.
            self.front = {}
            self._front_chars = 0
        self.front[text] = value
        self._front_chars += n

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
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)


def _charge(entry: tuple[object, int]) -> int:
    return entry[1]
