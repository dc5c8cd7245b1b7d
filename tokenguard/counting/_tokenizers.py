"""Counting text with tiktoken encodings, the way each meter needs it.

* :func:`server_counter` counts text as the server encodes a rendered prompt (special
  tokens recognised), optionally ``strip``-ped as a template renders a message body;
  :func:`server_counter_many` counts many texts so in one step;
* :func:`ordinary_counter` counts text as plain text;
* :func:`estimator` gives what an estimate needs of a text: its tokens, and its
  non-ASCII and total characters (for calibration's script buckets).

All of them count pathological text (a million blanks in a row) in slices rather than
crash.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable

import tiktoken

from ..events import CountingTokenizerMissing, emit

__all__ = [
    "estimator",
    "is_utf8",
    "ordinary_counter",
    "report_missing",
    "server_counter",
    "server_counter_many",
]

_DIGIT = re.compile(r"\d")

# tiktoken's regex engine gives up on pathological text (about a million blank
# characters in a row): a ValueError, or a Rust panic surfacing as pyo3's
# PanicException (a BaseException) after printing a backtrace. Such text is counted in
# slices, as the emulator does; the count may then differ by a token per slice. Long
# blank runs are sliced up front, so the panic is not even attempted.
_SLICE = 50_000
_LONG_BLANK_RUN = re.compile(r"\s{200000}")


def _tokenizer_gave_up(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) or type(exc).__name__ == "PanicException"


def _sliced(encode: Callable[[str], list[int]], text: str) -> int:
    if len(text) < 200_000 or _LONG_BLANK_RUN.search(text) is None:
        try:
            return len(encode(text))
        except BaseException as exc:
            if not _tokenizer_gave_up(exc):
                raise
    return sum(len(encode(text[i : i + _SLICE])) for i in range(0, len(text), _SLICE))


def ordinary_counter(enc: tiktoken.Encoding) -> Callable[[str], int]:
    """Counts ``text`` as plain text (special-token lookalikes are ordinary characters)."""
    encode = enc.encode_ordinary

    def count(text: str) -> int:
        return _sliced(encode, text)

    return count


@functools.cache
def server_counter(
    enc: tiktoken.Encoding,
    *,
    strip: bool = False,
    markers: tuple[str, ...] = ("<|",),
    normalize: Callable[[str], str] | None = None,
) -> Callable[[str], int]:
    """Counts ``text`` as the server encodes a rendered prompt: special tokens recognised.

    With ``strip``, counts ``text.strip()`` (a message body as the template renders it).
    Every special token of ``enc`` starts with one of ``markers`` (text without any takes
    the cheaper call); ``normalize`` is applied first (Qwen's NFC). One function per
    encoding and options, so that what is learnt about a tokenizer is kept with it.
    """
    encode = enc.encode_ordinary
    fast, marked = _plain_calls(enc, markers)
    specials = enc.special_tokens_set

    def encode_special(text: str) -> list[int]:
        return enc.encode(text, allowed_special=specials)

    def count(text: str) -> int:
        if strip:
            text = text.strip()
        if normalize is not None:
            text = normalize(text)
        if marked(text) is not None:
            return _sliced(encode_special, text)
        if len(text) < _SLICE:
            return len(fast(text))
        return _sliced(encode, text)

    return count


@functools.cache
def server_counter_many(
    enc: tiktoken.Encoding, *, markers: tuple[str, ...] = ("<|",)
) -> Callable[[list[str]], list[int]]:
    """:func:`server_counter` (neither stripped nor normalized) of each of ``texts``,
    in one step: one search of them all for the markers of special tokens, then the
    cheaper call for each when none has one. (A marker made of the end of one text and
    the start of the next only sends them the way of one text at a time.)"""
    count = server_counter(enc, markers=markers)
    fast, marked = _plain_calls(enc, markers)

    def count_many(texts: list[str]) -> list[int]:
        if marked("".join(texts)) is None and max(map(len, texts), default=0) < _SLICE:
            return [len(fast(text)) for text in texts]
        return list(map(count, texts))

    return count_many


def _plain_calls(
    enc: tiktoken.Encoding, markers: tuple[str, ...]
) -> tuple[Callable[[str], list[int]], Callable[[str], object]]:
    """The cheapest call that encodes text without special tokens, and a search for
    any of ``markers`` (every special token of ``enc`` starts with one of them)."""
    # The cold path is dominated by this call: skip tiktoken's Python wrapper when the
    # core is reachable (its only extra is a surrogate fallback; surrogates are rejected
    # before counting).
    core = getattr(getattr(enc, "_core_bpe", None), "encode_ordinary", None)
    fast: Callable[[str], list[int]] = core if callable(core) else enc.encode_ordinary
    # One compiled search finds any marker (a third of the cost of testing each in turn).
    return fast, re.compile("|".join(map(re.escape, markers)) or "(?!)").search


def estimator(enc: tiktoken.Encoding, digits_single: bool) -> Callable[[str], tuple[int, int, int]]:
    """Counts ``(tokens, non-ASCII characters, characters)`` of ``text.strip()``; with
    ``digits_single``, one more token per digit (vocabularies that split numbers)."""
    count = ordinary_counter(enc)

    def estimate(text: str) -> tuple[int, int, int]:
        body = text.strip()
        n = count(body)
        if digits_single:
            n += len(_DIGIT.findall(body))
        chars = len(body)
        non_ascii = 0 if body.isascii() else chars - len(body.encode("ascii", "ignore"))
        return n, non_ascii, chars

    return estimate


#: Tokenizers whose missing data was reported (one event per tokenizer per process).
_missing_reported: set[str] = set()
_missing_lock = threading.Lock()


def report_missing(tokenizer: str, model: str, hint: str) -> None:
    """Emit ``tokenguard.counting.tokenizer_missing`` for ``tokenizer``, the first time only."""
    with _missing_lock:
        if tokenizer in _missing_reported:
            return
        _missing_reported.add(tokenizer)
    emit(CountingTokenizerMissing(tokenizer=tokenizer, model=model, hint=hint))


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
