"""What the guard does when the server still says no: 429, 413, a smaller context
window than the table says, 5xx, connection errors. The emulator and the guard share a
fake clock, so every wait is exact and instant."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import openai
import pytest
from emulator_support import HELLO, Serve, client_for
from fake_clock import FakeClock

import tokenguard as tg
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"


def named(events: list[tg.events.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == name]


def chat(em: Emulator) -> list[Any]:
    return [r for r in em.log if r.endpoint == "chat"]


def test_an_unguarded_client_spends_the_quota_and_guarded_calls_wait_without_error(
    events: list[tg.events.Event],
) -> None:
    clock = FakeClock()
    with running(model=MODEL, tpm=1_000, rpm=1_000, window=10.0, clock=clock) as em:
        lim = tg.Limiter(tpm=1_000, rpm=1_000, window=10.0, clock=clock, sleep=clock.sleep)
        guarded = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="x"),
            limiter=lim,
            clock=clock,
            sleep=clock.sleep,
        )
        other = client_for(em)
        for _ in range(10):
            clock.advance(10.0)  # a full bucket again
            # Someone else empties the bucket the guard cannot see...
            other.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=700)
            # ...and the guarded call still succeeds: the 429 is waited out.
            reply: Any = guarded.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=400
            )
            assert reply.usage.completion_tokens > 0
        refused = [r for r in chat(em) if r.status == 429]
    assert refused  # the server did refuse the guarded calls at first
    retries = named(events, "tokenguard.guard.retry")
    assert {r["kind"] for r in retries} == {"rate_limited"}
    waits = named(events, "tokenguard.guard.wait")
    assert waits
    assert all(w["wait_s"] >= 1.0 for w in waits)
    done = named(events, "tokenguard.guard.request")
    assert len(done) == 10
    assert all("error.type" not in e for e in done)
    assert max(e["tokenguard.retries"] for e in done) >= 1


def _after_another_client_spent(serve: Serve, clock: FakeClock, **options: Any) -> Any:
    """A client instrumented with ``options`` on ``clock``, beside an unguarded client that
    has just spent 900 of the server's 1,000 tokens per minute (the guard did not see it)."""
    em = serve(model=MODEL, tpm=1_000, rpm=1_000, window=60.0, clock=clock)
    guarded = tg.instrument(
        openai.OpenAI(base_url=em.base_url, api_key="x"),
        limiter=tg.Limiter(tpm=1_000, window=60.0, clock=clock, sleep=clock.sleep),
        clock=clock,
        sleep=clock.sleep,
        **options,
    )
    client_for(em).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=900)
    return em, guarded


def test_a_429_that_would_pass_max_wait_raises_rate_limit_timeout(
    serve: Serve, clock: FakeClock
) -> None:
    _, guarded = _after_another_client_spent(serve, clock, max_wait=5.0)
    with tg.budget(tokens=10_000) as b, pytest.raises(tg.RateLimitTimeout) as caught:
        guarded.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=500)
    assert caught.value.max_wait == 5.0
    assert (b.used, b.reserved) == (0, 0)


def test_a_smaller_context_window_than_the_table_is_learned_and_the_call_succeeds(
    events: list[tg.events.Event],
) -> None:
    # The table says 131,072 tokens; this server's model only takes 4,096.
    with running(model=MODEL, tpm=100_000, rpm=1_000, window=1.0, context_window=4_096) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="x"), tpm=100_000, window=1.0
        )
        history: Any = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: " + "word " * 300}
            for i in range(30)
        ]
        reply: Any = client.chat.completions.create(model=MODEL, messages=history, max_tokens=256)
        assert reply.usage.prompt_tokens + 256 <= 4_096
        statuses = [r.status for r in chat(em)]
        assert statuses == [400, 200]
        # Learned once: the next call is fitted at once.
        client.chat.completions.create(model=MODEL, messages=history, max_tokens=256)
        assert [r.status for r in chat(em)] == [400, 200, 200]
    [learned] = named(events, "tokenguard.guard.limit_learned")
    assert (learned["limit"], learned["learned"], learned["source"]) == (
        "context_window",
        4_096,
        "models_endpoint",
    )


def test_a_413_teaches_the_real_tpm_and_the_request_is_refitted_once(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, tpm=3_000, rpm=1_000, window=1.0) as em:
        # The guard is told the table's 6,000 TPM; the server's limit is 3,000.
        client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), window=1.0)
        history: Any = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: " + "word " * 300}
            for i in range(20)
        ]
        reply: Any = client.chat.completions.create(model=MODEL, messages=history, max_tokens=256)
        assert reply.usage.prompt_tokens + 256 <= 3_000
        assert [r.status for r in chat(em)] == [413, 200]
    [learned] = named(events, "tokenguard.guard.limit_learned")
    assert (learned["limit"], learned["learned"]) == ("tpm", 3_000)


@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_5xx_is_retried_as_the_client_says_then_reaches_the_caller_unchanged(
    max_retries: int, events: list[tg.events.Event]
) -> None:
    clock = FakeClock()
    with running(model=MODEL, tpm=100_000, rpm=1_000, window=1.0, clock=clock) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=max_retries),
            tpm=100_000,
            window=1.0,
            clock=clock,
            sleep=clock.sleep,
        )
        em.fail_next(503, count=1)
        with tg.budget(tokens=10_000) as b:
            if max_retries:
                reply: Any = client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=8
                )
                assert b.used == reply.usage.total_tokens
                assert [r.status for r in chat(em)] == [503, 200]
            else:
                with pytest.raises(openai.InternalServerError) as caught:
                    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
                assert caught.value.status_code == 503
                assert (b.used, b.reserved) == (0, 0)  # nothing charged to budgets
                assert [r.status for r in chat(em)] == [503]
    done = named(events, "tokenguard.guard.request")
    assert len(done) == 1
    assert done[0].get("error.type") == (None if max_retries else "503")


def test_a_connection_error_refunds_the_reservation_and_reaches_the_caller() -> None:
    lim = tg.Limiter(tpm=1_000, window=60.0)
    with running(model=MODEL) as em:
        url = em.base_url
    client = tg.instrument(
        openai.OpenAI(base_url=url, api_key="x", max_retries=0), limiter=lim
    )  # the server is gone
    with tg.budget(tokens=5_000) as b, pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=500)
    assert (b.used, b.reserved) == (0, 0)
    lim.acquire(1_000, max_wait=0).cancel()  # nothing reached a server: all refunded


def test_a_decorated_function_learns_a_smaller_window_from_the_error_alone(
    events: list[tg.events.Event],
) -> None:
    with running(model=MODEL, tpm=100_000, rpm=1_000, window=1.0, context_window=4_096) as em:
        client = client_for(em)

        @tg.guard(tpm=100_000, window=1.0)
        def ask(messages: Any, model: str = MODEL, max_tokens: int = 256) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        history: Any = [{"role": "user", "content": f"{i}: " + "word " * 300} for i in range(20)]
        reply = ask(history)
        assert reply.usage.prompt_tokens + 256 <= 4_096
    [learned] = named(events, "tokenguard.guard.limit_learned")
    assert learned["source"] == "estimate"


def test_with_retries_zero_the_servers_429_reaches_the_caller_unchanged(
    serve: Serve, clock: FakeClock
) -> None:
    em, guarded = _after_another_client_spent(serve, clock, retries=0)
    with tg.budget(tokens=10_000) as b, pytest.raises(openai.RateLimitError) as caught:
        guarded.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=500)
    assert caught.value.status_code == 429
    assert (b.used, b.reserved) == (0, 0)
    # One request reached the server: the guard did not retry, nor did the SDK.
    assert [r.status for r in chat(em)] == [200, 429]


class _Gate:
    """The emulator's latency as a gate, not a clock: the first ``hold`` answers wait
    until the test releases them (so a client timeout fires, and no test sleeps)."""

    def __init__(self, hold: int) -> None:
        self._hold = hold
        self._lock = threading.Lock()
        self.released = threading.Event()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            blocked = self._hold > 0
            self._hold -= 1
        if blocked:
            self.released.wait(30)


@pytest.mark.parametrize("entry", ["instrument", "decorator"])
def test_a_timeout_keeps_the_estimate_in_the_limiter_charges_no_budget_and_reaches_the_caller(
    entry: str, events: list[tg.events.Event]
) -> None:
    clock = FakeClock()
    gate = _Gate(hold=1)
    lim = tg.Limiter(tpm=10_000, window=60.0, clock=clock, sleep=clock.sleep)
    with running(model=MODEL, tpm=100_000, rpm=1_000, latency=5.0, sleep=gate) as em:
        sdk = client_for(em, timeout=0.2)
        try:
            call: Callable[[], Any]
            if entry == "instrument":
                client = tg.instrument(sdk, limiter=lim, clock=clock, sleep=clock.sleep)
                call = functools.partial(
                    client.chat.completions.create, model=MODEL, messages=HELLO, max_tokens=500
                )
            else:

                @tg.guard(limiter=lim, clock=clock, sleep=clock.sleep)
                def ask(messages: Any = HELLO, model: str = MODEL, max_tokens: int = 500) -> Any:
                    return sdk.chat.completions.create(
                        messages=messages, model=model, max_tokens=max_tokens
                    )

                call = ask
            with tg.budget(tokens=5_000) as b, pytest.raises(openai.APITimeoutError) as caught:
                call()
        finally:
            gate.released.set()
    assert type(caught.value) is openai.APITimeoutError  # the SDK's own exception, as is
    assert (b.used, b.reserved) == (0, 0)  # nothing charged to budgets
    [done] = named(events, "tokenguard.guard.request")
    assert done["error.type"] == "timeout"
    assert "gen_ai.usage.input_tokens" not in done
    assert not named(events, "tokenguard.guard.retry")  # max_retries=0: sent once
    # The request reached the server, which may have charged it: the limiter keeps the
    # estimate (prompt + max_tokens), neither refunded nor more.
    estimate = done["tokenguard.estimated_tokens"]
    assert estimate > 500
    lim.acquire(10_000 - estimate, max_wait=0).cancel()
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(10_000 - estimate + 1, max_wait=0)


def test_a_timeout_is_retried_as_the_clients_max_retries_say_and_only_usage_is_budgeted(
    events: list[tg.events.Event],
) -> None:
    clock = FakeClock()
    gate = _Gate(hold=1)  # the first answer is late; the second is on time
    with running(model=MODEL, tpm=100_000, rpm=1_000, latency=5.0, sleep=gate) as em:
        try:
            client = tg.instrument(
                openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=1, timeout=0.2),
                tpm=100_000,
                window=60.0,
                clock=clock,
                sleep=clock.sleep,
            )
            start = clock()
            with tg.budget(tokens=5_000) as b:
                reply: Any = client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=500
                )
        finally:
            gate.released.set()
    assert b.used == reply.usage.total_tokens  # the timed-out attempt charged nothing
    assert b.reserved == 0
    [retry] = named(events, "tokenguard.guard.retry")
    assert (retry["kind"], retry["status"], retry["attempt"]) == ("timeout", None, 1)
    # The SDK's first backoff (0.5 s less up to a quarter of jitter), on the fake clock.
    assert clock() - start == pytest.approx(retry["wait_s"])
    assert 0.375 <= retry["wait_s"] <= 0.5
    [done] = named(events, "tokenguard.guard.request")
    assert "error.type" not in done
    assert done["tokenguard.retries"] == 1


def test_a_served_response_whose_body_cannot_be_read_leaves_nothing_held(
    events: list[tg.events.Event],
) -> None:
    # The function hands back a response it has already closed: the SDK's own error
    # reaches the caller unchanged, and the served request is charged, not left held.
    with running(model=MODEL, tpm=100_000, rpm=1_000, window=1.0) as em:
        client = client_for(em)

        @tg.guard(tpm=100_000, window=1.0)
        def ask(messages: Any = HELLO, model: str = MODEL, max_tokens: int = 32) -> Any:
            with client.chat.completions.with_streaming_response.create(
                messages=messages, model=model, max_tokens=max_tokens
            ) as raw:
                return raw

        with tg.budget(tokens=10_000) as b:
            with pytest.raises(Exception, match="stream has been closed") as caught:
                ask()
            assert b.reserved == 0
        assert [r.status for r in chat(em)] == [200]
    assert "StreamClosed" in type(caught.value).__name__  # the SDK's error, as it is
    [done] = named(events, "tokenguard.guard.request")
    assert b.used == done["tokenguard.estimated_tokens"]  # it may have cost that much


def test_a_sink_that_raises_takes_nothing_from_the_caller() -> None:
    def broken(event: tg.events.Event) -> None:
        raise RuntimeError("the sink is broken")

    undo = tg.events.add_sink(broken)
    try:
        with running(model=MODEL, tpm=100_000, rpm=1_000, window=1.0) as em:
            client = tg.instrument(
                openai.OpenAI(base_url=em.base_url, api_key="x"), tpm=100_000, window=1.0
            )
            with tg.budget(tokens=10_000) as b:
                reply: Any = client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=8
                )
                stream = client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=8, stream=True
                )
                chunks = list(stream)
            # A failed call's own error is not replaced either.
            once = tg.instrument(
                client_for(em),
                tpm=100_000,
                window=1.0,
            )
            em.fail_next(503)
            with pytest.raises(openai.InternalServerError):
                once.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    finally:
        undo()
    streamed = tg._adapters.usage_of(chunks[-1])
    assert streamed is not None
    assert b.used == reply.usage.total_tokens + streamed.total_tokens
