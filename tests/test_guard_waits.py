"""Waits that tell the truth, through the guard, tried as a new user would: a call that a
spent day limit would hold for hours fails fast, naming the limit and when it is whole
again, with nothing sent; a call whose wait is not certain waits out ``max_wait``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from emulator_support import client_for

import tokenguard as tg
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def em() -> Iterator[Emulator]:
    # The server's limits are looser: these tests are about the client's waits.
    with running(model=MODEL, tpm=1_000_000, rpm=1_000, tpd=0, rpd=0, window=1.0) as server:
        yield server


@pytest.fixture
def client(em: Emulator) -> openai.OpenAI:
    return client_for(em)


def _chats(em: Emulator) -> int:
    return sum(1 for r in em.log if r.endpoint == "chat")


def test_a_spent_day_limit_fails_fast_naming_it_with_nothing_sent(
    em: Emulator, client: openai.OpenAI
) -> None:
    # A day of 1,440 one-second windows (24 min) and 1,000 tokens; each call holds about
    # 440 (prompt, max_tokens, the guard's allowance): the third one waits for 300 or so
    # to refill, over 7 min, past the default bound of 5 min.
    @tg.guard(tpd=1_000, window=1.0)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 400) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    ask(HELLO)
    ask(HELLO)  # the day's tokens: spent
    sent = _chats(em)
    started = time.monotonic()
    with pytest.raises(tg.RateLimitTimeout) as info:
        ask(HELLO)
    assert time.monotonic() - started < 1.0  # at once, not after minutes
    assert _chats(em) == sent  # nothing sent
    assert info.value.limit_name == "tpd"
    assert info.value.resets_in is not None
    assert info.value.needed_wait is not None
    assert info.value.needed_wait > 300
    message = str(info.value)
    assert "TPD limit (1,000 tokens per 24 min)" in message
    assert "whole again in" in message
    assert "max_day_wait=5 min" in message


def test_max_wait_inf_is_accepted_and_bad_values_are_refused(client: openai.OpenAI) -> None:
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 8) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    assert tg.guard(max_wait=math.inf, tpd=1_000, window=1.0)(ask)(HELLO).usage is not None
    for bad in (-1.0, math.nan, -math.inf):
        with pytest.raises(tg.ConfigurationError, match="max_wait"):
            tg.guard(max_wait=bad)(ask)


def test_a_call_whose_wait_is_not_certain_waits_out_max_wait(
    em: Emulator, client: openai.OpenAI
) -> None:
    # The guard's limiter: 1,000 tokens per 10 s. A reservation in flight holds it all,
    # and may be refunded at any moment: a call then waits out its max_wait.
    lim = tg.Limiter(tpm=1_000, window=10.0)
    held = lim.acquire(1_000)

    @tg.guard(limiter=lim, max_wait=0.3)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 8) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    started = time.monotonic()
    with pytest.raises(tg.RateLimitTimeout, match=r"waited max_wait=0\.3 s"):
        ask(HELLO)
    assert 0.29 <= time.monotonic() - started <= 0.35 + 0.2  # the guard's own work
    held.cancel()  # refunded: the next call goes at once
    assert ask(HELLO).usage is not None
    assert _chats(em) == 1


def test_a_call_that_cannot_fit_after_a_served_one_is_refused_at_once() -> None:
    # A server that keeps unused tokens: one served call of 800 reserved (about 15 used)
    # leaves the bucket about 194, as its headers say. Nothing is in flight or queued
    # then, so the refill is the only course: a call needing 20 s of it cannot be served
    # within max_wait=3 and is refused at once, naming the limit, with nothing sent.
    with running(model=MODEL, tpm=1_000, rpm=100, completion_tokens=5) as server:
        client = client_for(server)
        lim = tg.Limiter(tpm=1_000, rpm=100, window=60.0)
        guarded = tg.instrument(client, limiter=lim, max_wait=3)
        hello: Any = HELLO
        guarded.chat.completions.create(model=MODEL, messages=hello, max_tokens=800)
        sent = _chats(server)
        started = time.monotonic()
        with pytest.raises(tg.RateLimitTimeout) as info:
            guarded.chat.completions.create(model=MODEL, messages=hello, max_tokens=500)
        assert time.monotonic() - started < 1.0  # at once, not after max_wait
        assert _chats(server) == sent
        assert info.value.limit_name == "tpm"
        assert info.value.needed_wait is not None
        assert info.value.needed_wait > 3
        message = str(info.value)
        assert "cannot be admitted within max_wait=3.0 s: the TPM limit" in message
        assert "in flight" not in message
