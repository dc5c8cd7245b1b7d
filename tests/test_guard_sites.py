"""What a guarded call site works out once and reuses, tried as a new user would.

A decorated function or instrumented client keeps, per model and ``max_tokens``, the
model's entry, its limiter and the largest prompt it can send as it is; a call within
that room, with no budget open, is sent as asked without fitting. These tests check
that the shortcut never changes what is sent or charged: a prompt past the room is
still fitted, an open budget still bounds the call, and a reset or a learned limit
reaches a site that already made calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fitting_support import conversations
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard import reset_defaults
from tokenguard._drive import run_sync
from tokenguard._guard._options import make_options
from tokenguard._guard._pipeline import _as_asked, _fit_plan, fits_as_is
from tokenguard._guard._request import ChatRequest
from tokenguard._guard._site import Guard, Site, fits_as_asked
from tokenguard.emulator import Emulator, running
from tokenguard.fitting import room_for

MODEL = "llama-3.1-8b-instant"
SMALL = "llama3-8b-8192"  # context window 8,192
SHORT = [{"role": "user", "content": "Hello"}]
#: About 20,000 tokens: more than SMALL's context window.
LONG = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: " + "word " * 400}
    for i in range(40)
]


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=[MODEL, SMALL], tpm=1_000_000, rpm=1_000, window=1.0) as server:
        yield server


def fits(events: list[tg.events.Event]) -> list[str]:
    return [e.fields()["tokenguard.fit"] for e in events if e.name == "tokenguard.guard.request"]


def chat_prompts(em: Emulator) -> list[int]:
    return [r.prompt_tokens for r in em.log if r.endpoint == "chat"]


@pytest.mark.parametrize(("max_tokens", "reserve"), [(256, 256), (None, 1_024)])
def test_a_site_sends_as_asked_until_a_prompt_outgrows_its_room(
    em: Emulator,
    client: openai.OpenAI,
    events: list[tg.events.Event],
    max_tokens: int | None,
    reserve: int,
) -> None:
    """The room is the context window less the reservation: ``max_tokens``, or without it
    the server's default hold (1,024) while the window leaves it. Prompts within it go as
    asked (the same list object), a longer one is fitted."""
    sent: list[list[Any]] = []

    @tg.guard(tpm=1_000_000, rpm=1_000, window=1.0)
    def ask(messages: list[Any], model: str = SMALL, max_tokens: int | None = None) -> Any:
        sent.append(messages)
        asked: Any = {} if max_tokens is None else {"max_tokens": max_tokens}
        return client.chat.completions.create(messages=messages, model=model, **asked)

    short, long = [*SHORT], [*LONG]
    assert tg.count_tokens(long, model=SMALL) > 8_192
    for messages in (short, long, short):
        ask(messages, max_tokens=max_tokens)
    assert fits(events) == ["none", "truncate", "none"]
    assert sent[0] is short
    assert sent[2] is short
    assert len(sent[1]) < len(long)
    assert chat_prompts(em)[1] + reserve <= 8_192
    reserves = [
        e.fields()["tokenguard.completion_reserve"]
        for e in events
        if e.name == "tokenguard.guard.request"
    ]
    assert reserves[0] == reserves[2] == reserve


def test_an_open_budget_bounds_a_call_the_site_would_send_as_asked(
    client: openai.OpenAI, events: list[tg.events.Event]
) -> None:
    @tg.guard(tpm=1_000_000, rpm=1_000, window=1.0)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 100) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    history = [{"role": "user", "content": f"note {i}: " + "words " * 100} for i in range(30)]
    ask(history)  # no budget: sent as asked
    with tg.budget(tokens=2_000) as b:
        reply = ask(history)
    assert fits(events) == ["none", "truncate"]
    assert reply.usage.prompt_tokens + 100 <= 2_000
    assert b.used == reply.usage.total_tokens
    assert (b.reserved, b.requests_used) == (0, 1)


def test_a_reset_gives_a_site_that_made_calls_the_new_default_limiter(
    em: Emulator, client: openai.OpenAI
) -> None:
    hello = [{"role": "user", "content": "Hello"}]
    # Each call reserves all but one token of a 300-token minute: a second call must
    # wait for the first one's tokens to come back, which max_wait=0 does not allow.
    max_tokens = 300 - tg.count_tokens(hello, model=MODEL) - 1

    @tg.guard(tpm=300, window=60.0, max_wait=0)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = max_tokens) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    ask(hello)
    with pytest.raises(tg.RateLimitTimeout):
        ask(hello)  # the site's limiter remembers the first call
    reset_defaults()
    ask(hello)  # a new default limiter, with the whole minute free
    assert len(chat_prompts(em)) == 2


async def test_an_instrumented_async_site_sends_as_asked_and_fits_past_its_room(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(
        openai.AsyncOpenAI(base_url=em.base_url, api_key="x"), tpm=1_000_000, window=1.0
    )
    short: Any = [{"role": "user", "content": "Hello"}]
    long: Any = [{"role": "user", "content": f"{i}: " + "word " * 400} for i in range(40)]
    await client.chat.completions.create(model=SMALL, messages=short, max_tokens=64)
    await client.chat.completions.create(model=SMALL, messages=long, max_tokens=64)
    await client.chat.completions.create(model=SMALL, messages=tuple(short), max_tokens=64)
    assert fits(events) == ["none", "truncate", "none"]
    prompts = chat_prompts(em)
    assert prompts[0] == prompts[2]
    assert prompts[1] + 64 <= 8_192


# -- the room a site works out once agrees with fitting's, prompt by prompt ------------


@given(
    window=st.integers(min_value=1, max_value=200_000),
    tpm=st.none() | st.integers(min_value=1, max_value=200_000),
    max_tokens=st.none() | st.integers(min_value=1, max_value=50_000),
    max_completion=st.none() | st.integers(min_value=1, max_value=200_000),
    default_reserve=st.integers(min_value=0, max_value=5_000),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_a_prompt_within_the_site_room_is_one_fitting_would_send_as_asked(
    window: int,
    tpm: int | None,
    max_tokens: int | None,
    max_completion: int | None,
    default_reserve: int,
    data: st.DataObject,
) -> None:
    """Calls whose prompt is within the room a site worked out skip fitting, with or
    without max_tokens: fitting's room for each such prompt must take it as it is, with
    the same reservation and max_tokens."""
    limits: dict[str, Any] = {
        "context_window": window,
        "tpm": tpm,
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion,
        "default_reserve": default_reserve,
    }
    fits = fits_as_asked(**limits)
    if fits is None:
        return
    empty = room_for(0, **limits)
    for prompt in {0, fits, data.draw(st.integers(min_value=0, max_value=fits))}:
        r = room_for(prompt, **limits)
        assert prompt <= r.allowed
        assert not r.lowered
        assert (r.max_tokens, r.reserve) == (max_tokens, empty.reserve)


# -- a request that needs no fitting is sent as fitting would send it ------------------


@given(
    msgs=conversations(huge=False, max_turns=12),
    window=st.sampled_from([2_048, 8_192, 131_072]),
    tpm=st.none() | st.integers(min_value=500, max_value=30_000),
    budget=st.none() | st.integers(min_value=100, max_value=20_000),
    max_tokens=st.none() | st.integers(min_value=1, max_value=10_000),
    default_reserve=st.integers(min_value=1, max_value=4_000),
)
@settings(max_examples=150, deadline=None)
def test_the_shortcut_for_a_request_that_fits_decides_as_fitting(
    msgs: list[Any],
    window: int,
    tpm: int | None,
    budget: int | None,
    max_tokens: int | None,
    default_reserve: int,
) -> None:
    """The guard takes a request that fits as it is without fitting's per-message
    breakdown: whenever it does, fitting would send the same messages with the same
    room, max_tokens and reservation."""
    info = tg.get_model(MODEL)
    req = ChatRequest(messages=msgs, model=MODEL, max_tokens=max_tokens)
    count = tg.default_counter().count_request(
        msgs, info, max_tokens=max_tokens, default_reserve=default_reserve
    )
    limits: dict[str, Any] = {
        "context_window": window,
        "tpm": tpm,
        "budget": budget,
        "max_tokens": max_tokens,
        "default_reserve": default_reserve,
    }
    quick = fits_as_is(req, count, info, {**limits, "on_overflow": "truncate"})
    try:
        full = tg.fit(msgs, info, **limits)
    except tg.ContextOverflow:
        assert quick is None
        return
    if quick is None:
        assert full.changed
        return
    assert quick.messages == full.messages == msgs
    assert (quick.strategy, quick.tokens_after) == (full.strategy, full.tokens_after)
    assert (quick.allowed, quick.bound_by) == (full.allowed, full.bound_by)
    assert (quick.max_tokens, quick.max_tokens_requested) == (
        full.max_tokens,
        full.max_tokens_requested,
    )


# -- the plain step for a request sent as asked decides as the fitting step ------------


@given(
    msgs=conversations(huge=False, max_turns=12),
    window=st.sampled_from([2_048, 8_192, 131_072]),
    tpm=st.none() | st.integers(min_value=500, max_value=30_000),
    budget=st.none() | st.integers(min_value=100, max_value=20_000),
    max_tokens=st.none() | st.integers(min_value=1, max_value=10_000),
    default_reserve=st.integers(min_value=1, max_value=4_000),
)
@settings(max_examples=150, deadline=None)
def test_a_request_the_pipeline_sends_as_asked_is_the_one_its_fitting_step_would_send(
    msgs: list[Any],
    window: int,
    tpm: int | None,
    budget: int | None,
    max_tokens: int | None,
    default_reserve: int,
) -> None:
    """The pipeline counts a request and, when the site's room holds it and no budget caps
    tokens, sends it without entering the fitting step (a plain call, no effect): the
    fitting step would send the same messages, max_tokens, count and reservations, as
    fitted by no strategy."""
    g = Guard(opts=make_options(default_reserve=default_reserve), base_url="", site="ask()")
    info = tg.get_model(MODEL)
    fits = fits_as_asked(
        context_window=window,
        tpm=tpm,
        max_tokens=max_tokens,
        max_completion_tokens=info.max_completion_tokens,
        default_reserve=default_reserve,
    )
    site = Site(info, None, window, tpm, max_tokens, generation=0, fits=fits)
    req = ChatRequest(messages=msgs, model=MODEL, max_tokens=max_tokens)
    count = tg.default_counter().count_request(
        msgs, info, max_tokens=max_tokens, default_reserve=default_reserve
    )
    with tg.budget(tokens=budget) if budget is not None else contextlib.nullcontext():
        quick = _as_asked(g, req, site, count)
        if budget is not None:
            assert quick is None  # an open budget's room is the fitting step's to apply
        if quick is None:
            return
        try:
            full = run_sync(_fit_plan(g, req, site, count))
        except tg.ContextOverflow as exc:
            raise AssertionError(f"sent as asked, yet fitting refuses it: {exc}") from exc
    assert full.fitted is not None
    assert full.fitted.strategy == "none"
    assert quick.fitted is None
    assert quick.messages == full.messages == msgs
    assert quick._replace(fitted=None) == full._replace(fitted=None)
