"""End to end: fitted requests go through the real openai SDK to the emulator, which
counts and limits independently of tokenguard, and are never refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fake_clock import FakeClock
from fitting_support import MODEL, check_invariants, conversations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.emulator import Emulator, running

WINDOW = 8192
TPM = 6000


pytestmark = pytest.mark.usefixtures("logging_off")


@pytest.fixture(scope="module")
def tpm_bound() -> Iterator[Emulator]:
    """Groq's free tier for the model: 6,000 TPM under an 8,192 window (413 above it)."""
    with running(model=MODEL, tpm=TPM, rpm=0, tpd=0, rpd=0) as em:
        yield em


@pytest.fixture(scope="module")
def window_bound() -> Iterator[Emulator]:
    """No rate limits: only the context window (400 context_length_exceeded above it)."""
    with running(model=MODEL, tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield em


def send(em: Emulator, r: tg.FitResult) -> Any:
    client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
    kwargs: dict[str, Any] = {}
    if r.max_tokens is not None:
        kwargs["max_tokens"] = r.max_tokens
    return client.chat.completions.create(model=MODEL, messages=r.messages, **kwargs)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msgs=conversations(max_turns=60),
    max_tokens=st.none() | st.integers(1, 20_000),
    bound=st.sampled_from(["tpm", "context_window"]),
)
def test_every_fitted_request_is_accepted(
    tpm_bound: Emulator,
    window_bound: Emulator,
    msgs: list[Any],
    max_tokens: int | None,
    bound: str,
) -> None:
    em = tpm_bound if bound == "tpm" else window_bound
    tpm = TPM if bound == "tpm" else None
    if max_tokens is not None and max_tokens > WINDOW:
        max_tokens = None if max_tokens % 2 else max_tokens  # also above the model's own limit
    try:
        r = tg.fit(msgs, MODEL, max_tokens=max_tokens, tpm=tpm)
    except tg.ContextOverflow:
        return  # nothing is sent (the invariants test covers when this may happen)
    check_invariants(msgs, r)
    em.reset()  # a full bucket: each example is one request on its own
    reply = send(em, r)
    assert reply.usage is not None
    # Exact unless the request holds what Llama 3 counts as a bound (its tool turns).
    assert reply.usage.prompt_tokens <= r.tokens_after
    if r.exact:
        assert reply.usage.prompt_tokens == r.tokens_after
    assert em.log[-1].status == 200


@pytest.mark.parametrize("strategy", ["truncate", "summarize"])
def test_a_conversation_growing_to_5x_the_window_is_never_refused(strategy: str) -> None:
    clock = FakeClock()
    # Day limits off: 5x the window at ~6,000 tokens a call would pass the free TPD.
    with running(
        model=MODEL, tpm=TPM, rpm=30, tpd=0, rpd=0, clock=clock, completion_tokens=120
    ) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
        inner = tg.ClientSummarizer(client)

        def summarizer(request: tg.SummaryRequest) -> Any:
            # The summary call spends the same TPM; a limiter would wait for the next
            # minute (the guard's job), the fake clock stands in for that wait here.
            clock.advance(60.0)
            summary = inner(request)
            clock.advance(60.0)
            return summary

        cache = tg.SummaryCache()
        history: list[Any] = [{"role": "system", "content": "You answer in detail."}]
        turn = summaries = 0
        while tg.count_tokens(history, MODEL) < 5 * WINDOW:
            question = f"Question {turn}: tell me more about topic {turn}. " + (
                "Привет, как дела? 日本語のテキスト. " if turn % 3 == 0 else "Details please. "
            ) * (turn % 7 + 1)
            history.append({"role": "user", "content": question})
            r = tg.fit(
                history,
                MODEL,
                max_tokens=1024,
                on_overflow=strategy,  # type: ignore[arg-type]
                summarizer=summarizer if strategy == "summarize" else None,
                summary_cache=cache,
            )
            check_invariants(history, r)
            summaries += r.summary_calls
            reply = client.chat.completions.create(
                model=MODEL, messages=r.messages, max_tokens=r.max_tokens
            )
            assert reply.usage is not None
            assert reply.usage.prompt_tokens == r.tokens_after
            history.append({"role": "assistant", "content": reply.choices[0].message.content})
            clock.advance(60.0)  # a new minute: this test is about size, not rate
            turn += 1
        refused = [rec for rec in em.log if rec.status != 200]
        assert refused == []
        assert turn > 50
        chat_calls = [rec for rec in em.log if rec.endpoint == "chat"]
        assert len(chat_calls) == turn + summaries
        if strategy == "summarize":
            assert 0 < summaries < turn / 4
