"""Deterministic completion text whose Llama 3 token count is known without encoding it.

Every word below is one Llama 3 token with its leading space, and the tokenizer's split
pattern never merges across a space-letter boundary, so ``n`` words are exactly ``n``
tokens (the tests check this with the real encoder).
"""

from __future__ import annotations

__all__ = ["WORDS", "completion_pieces", "completion_text"]

WORDS: tuple[str, ...] = (
    " hello",
    " world",
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
)


def completion_pieces(n: int) -> list[str]:
    """``n`` one-token pieces, cycling through ``WORDS``."""
    return [WORDS[i % len(WORDS)] for i in range(max(0, n))]


def completion_text(n: int) -> str:
    """Text of exactly ``n`` Llama 3 tokens."""
    return "".join(completion_pieces(n))
