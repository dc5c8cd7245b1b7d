"""The room of a call without ``max_tokens``, tried as a new user would: the server
holds ``min(default reserve, context left)`` for such a call, so a prompt it would take
is never cut, and a prompt that is cut is cut to something it takes with a real answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.fitting import DEFAULT_MIN_COMPLETION, room_for


def server_hold(prompt: int, context: int, reserve: int, max_completion: int | None) -> int:
    """What the emulator reserves for a call without max_tokens (0: it refuses it)."""
    if prompt >= context:
        return 0
    hold = min(reserve, context - prompt)
    return min(hold, max_completion) if max_completion else hold


def test_a_prompt_the_server_takes_keeps_its_size_and_reserves_what_the_server_holds() -> None:
    # 600 of 1,024: the server holds the 424 left, not the 1,024 default.
    r = room_for(600, context_window=1_024)
    assert (r.reserve, r.allowed, r.max_tokens) == (424, 600, None)
    # One token left is enough for the server (it answers in one token).
    r = room_for(1_023, context_window=1_024)
    assert (r.reserve, r.allowed) == (1, 1_023)


def test_a_prompt_that_must_be_cut_leaves_the_whole_default_when_it_can() -> None:
    r = room_for(9_000, context_window=8_192)
    assert (r.reserve, r.allowed) == (1_024, 8_192 - 1_024)
    # The default alone fills the context: the cut leaves min_completion.
    r = room_for(2_000, context_window=1_024)
    assert (r.reserve, r.allowed) == (DEFAULT_MIN_COMPLETION, 1_024 - DEFAULT_MIN_COMPLETION)
    with pytest.raises(tg.ContextOverflow, match="default_reserve"):
        room_for(2_000, context_window=1_024, shrink_max_tokens=False)


def test_under_a_tpm_limit_the_whole_default_is_held() -> None:
    # Below the context window the server holds the full default whatever the prompt,
    # so a request costs prompt + 1,024 against 6,000 TPM (413 otherwise).
    for prompt in (10, 5_000, 7_900):
        r = room_for(prompt, context_window=8_192, tpm=6_000)
        assert (r.reserve, r.allowed, r.bound_by) == (1_024, 6_000 - 1_024, "tpm")
    with pytest.raises(tg.ContextOverflow) as info:
        room_for(10, context_window=8_192, tpm=6_000, default_reserve=6_000)
    assert info.value.limit_name == "tpm"


def test_the_models_completion_limit_caps_the_hold() -> None:
    r = room_for(10, context_window=131_072, default_reserve=40_000, max_completion_tokens=32_768)
    assert r.reserve == 32_768


@given(
    prompt=st.integers(1, 20_000),
    context=st.integers(1, 16_000),
    reserve=st.integers(1, 20_000),
    tpm=st.one_of(st.none(), st.integers(1, 20_000)),
    budget=st.one_of(st.none(), st.integers(1, 20_000)),
    max_completion=st.one_of(st.none(), st.integers(1, 20_000)),
)
def test_no_prompt_the_server_takes_is_cut_and_every_cut_is_taken(
    prompt: int,
    context: int,
    reserve: int,
    tpm: int | None,
    budget: int | None,
    max_completion: int | None,
) -> None:
    limits = [x for x in (tpm, budget) if x is not None]
    hold = server_hold(prompt, context, reserve, max_completion)
    taken = hold >= 1 and all(prompt + hold <= x for x in limits)
    try:
        r = room_for(
            prompt,
            context_window=context,
            tpm=tpm,
            budget=budget,
            default_reserve=reserve,
            max_completion_tokens=max_completion,
        )
    except tg.ContextOverflow:
        assert not taken
        return
    assert r.max_tokens is None  # nothing added to what the caller sends
    if taken:
        assert prompt <= r.allowed
        assert r.reserve == hold  # the estimate is what the server holds
        return
    assert r.allowed < prompt
    # Whatever the prompt is cut to, the server takes it within every limit.
    for cut in {1, r.allowed // 2 or 1, r.allowed}:
        held = server_hold(cut, context, reserve, max_completion)
        assert held >= 1
        assert held <= r.reserve or cut + held <= r.ceiling
        assert all(cut + held <= x for x in limits)


def test_fit_without_max_tokens_keeps_a_conversation_the_server_takes() -> None:
    msgs = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "word " * 60}
        for i in range(6)
    ]
    n = tg.count_tokens(msgs, "llama-3.1-8b-instant")
    r = tg.fit(msgs, "llama-3.1-8b-instant", context_window=n + 10, tpm=None)
    assert (r.strategy, r.messages, r.max_tokens) == ("none", msgs, None)
    # No token left for the answer (the server refuses it): cut, leaving the default.
    r = tg.fit(msgs, "llama-3.1-8b-instant", context_window=n, tpm=None, default_reserve=100)
    assert r.strategy == "truncate"
    assert r.tokens_after <= n - 100
