"""The count cache: incremental cost, bounded memory, thread safety."""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import pytest
from counting_samples import SAMPLES

import tokenguard as tg
from tokenguard.counting._cache import ENTRY_OVERHEAD, TextCache
from tokenguard.emulator import count_prompt_tokens


def reference_count(messages: list[Any], template: str) -> int:
    """The emulator's whole-string count (Groq's Llama templates, rendered apart)."""
    return count_prompt_tokens(messages, None, template)


def _conversation(n: int, salt: str = "") -> list[dict[str, Any]]:
    texts = SAMPLES["english"]
    roles = ("user", "assistant")
    return [
        {"role": roles[i % 2], "content": f"{salt}{i}: {texts[i % len(texts)]}"} for i in range(n)
    ]


@pytest.mark.parametrize("model", ["llama-3.1-8b-instant", "llama3-8b-8192", "qwen/qwen3-32b"])
def test_a_conversation_grown_by_one_message_tokenizes_one_message(model: str) -> None:
    counter = tg.Counter()
    messages = _conversation(50)
    counter.count(messages, model=model)
    before = counter.cache_stats()["computed"]
    messages.append({"role": "user", "content": "And one more question, please."})
    counter.count(messages, model=model)
    assert counter.cache_stats()["computed"] == before + 1
    counter.count(messages, model=model)
    assert counter.cache_stats()["computed"] == before + 1


def test_the_warm_path_agrees_with_the_general_path() -> None:
    counter = tg.Counter()
    messages = _conversation(20)
    cold = counter.count(messages, model="llama-3.1-8b-instant")
    warm = counter.count(messages, model="llama-3.1-8b-instant")
    general = counter.count_request(messages, model="llama-3.1-8b-instant").prompt_tokens
    assert cold == warm == general == reference_count(messages, "llama3.1")


def test_memory_stays_within_the_bounds() -> None:
    counter = tg.Counter(cache_bytes=200_000, front_chars=20_000)
    for batch in range(40):
        counter.count(_conversation(30, salt=f"batch {batch} "), model="llama-3.1-8b-instant")
        stats = counter.cache_stats()
        assert stats["lru_bytes"] <= 200_000
        assert stats["front_chars"] <= 20_000
    assert counter.cache_stats()["entries"] < 40 * 30  # old entries were evicted


def test_a_text_larger_than_the_bound_is_counted_but_not_kept() -> None:
    cache: TextCache[int] = TextCache(len, max_bytes=1_000, front_chars=100)
    assert cache.get_or_compute("x" * 5_000) == 5_000
    assert len(cache) == 0
    assert cache.front_size == 0
    assert cache.get_or_compute("small") == 5
    assert cache.lru_bytes >= ENTRY_OVERHEAD


def test_a_text_enters_the_front_level_on_its_second_use() -> None:
    cache: TextCache[int] = TextCache(len, max_bytes=1 << 20, front_chars=1_000)
    assert cache.get_many(["once", "twice", "once"]) == [4, 5, 4]
    assert cache.front == {}  # counted once: kept in the LRU level only
    assert cache.computed == 2
    assert cache.get_or_compute("twice") == 5
    assert cache.front == {"twice": 5}
    assert cache.computed == 2  # served from the LRU level
    assert len(cache) == 2
    assert cache.lru_bytes == 2 * ENTRY_OVERHEAD + sys.getsizeof("once") + sys.getsizeof("twice")


def test_the_lru_level_keeps_hot_texts_when_the_front_is_emptied() -> None:
    cache: TextCache[int] = TextCache(len, max_bytes=1 << 20, front_chars=10)
    cache.get_or_compute("hot text")
    cache.get_or_compute("other text")  # over the front bound: the front is emptied
    computed = cache.computed
    assert cache.get_or_compute("hot text") == 8
    assert cache.computed == computed  # served from the LRU level, not recomputed


def test_counting_is_thread_safe_under_eviction() -> None:
    counter = tg.Counter(cache_bytes=50_000, front_chars=5_000)
    conversations = [_conversation(random.Random(i).randrange(1, 30), f"t{i} ") for i in range(40)]
    expected = {i: reference_count(c, "llama3.1") for i, c in enumerate(conversations)}
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            i = rng.randrange(len(conversations))
            got = counter.count(conversations[i], model="llama-3.1-8b-instant")
            if got != expected[i]:
                errors.append(f"conversation {i}: {got} != {expected[i]}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counter.cache_stats()["lru_bytes"] <= 50_000


def test_clear_caches_forgets_counts() -> None:
    counter = tg.Counter()
    messages = _conversation(5)
    counter.count(messages, model="llama3-8b-8192")
    counter.clear_caches()
    assert counter.cache_stats()["entries"] == 0
    assert counter.count(messages, model="llama3-8b-8192") == reference_count(messages, "llama3")


def test_the_lru_level_evicts_the_least_recently_used_text_first() -> None:
    import sys

    texts = [f"text {i}" for i in range(4)]
    per_entry = sys.getsizeof(texts[0]) + ENTRY_OVERHEAD
    # Room for three entries; the front level holds nothing, so every hit is the LRU's.
    cache: TextCache[int] = TextCache(len, max_bytes=3 * per_entry, front_chars=0)
    for text in texts[:3]:
        cache.get_or_compute(text)
    cache.get_or_compute(texts[0])  # used again: now the most recent
    cache.get_or_compute(texts[3])  # evicts texts[1], the least recently used
    assert len(cache) == 3
    assert cache.lru_bytes == 3 * per_entry
    computed = cache.computed
    cache.get_or_compute(texts[0])
    cache.get_or_compute(texts[2])
    assert cache.computed == computed
    cache.get_or_compute(texts[1])
    assert cache.computed == computed + 1


@pytest.mark.parametrize(
    "model",
    [
        "llama-3.1-8b-instant",
        "llama3-8b-8192",
        "openai/gpt-oss-20b",
        "qwen/qwen3-32b",
        "moonshotai/kimi-k2-instruct-0905",
    ],
)
def test_a_front_level_emptied_while_counting_leaves_the_count_as_it_was(model: str) -> None:
    # The front level holds about three of these texts: counting the new ones of a
    # request empties it, and the texts seen before must still be found.
    texts = [f"message number {i} of a conversation, long enough." for i in range(12)]
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
    counter = tg.Counter(front_chars=150)
    counter.count(messages[::3], model=model)
    assert counter.count(messages, model=model) == tg.Counter().count(messages, model=model)
    assert counter.count_prompt(messages, model=model) == tg.Counter().count_prompt(
        messages, model=model
    )
