"""@tg.guard, tried as a new user would: through the real openai SDK against the emulator.

Decorated functions keep what they were (signature, docstring, coroutine-ness, methods);
calls are counted, fitted, budgeted and reported; bad input is refused with nothing sent.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from emulator_support import client_for
from fake_clock import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard import reset_defaults
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"
SMALL = "llama3-8b-8192"  # context window 8,192


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=[MODEL, SMALL], tpm=100_000, rpm=1_000, window=1.0) as server:
        yield server


def requests(events: list[tg.events.Event]) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == "tokenguard.guard.request"]


def chat_log(em: Emulator) -> list[Any]:
    return [r for r in em.log if r.endpoint == "chat"]


def hello(text: str = "Hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- what a decorated function stays -----------------------------------------------------


def test_signature_docstring_and_coroutine_ness_are_kept() -> None:
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 64) -> Any:
        """Ask the model."""

    async def ask_async(messages: list[Any], model: str = MODEL) -> Any:
        """Ask, asynchronously."""

    g, ga = tg.guard(ask), tg.guard(max_wait=5)(ask_async)
    assert inspect.signature(g) == inspect.signature(ask)
    assert g.__doc__ == "Ask the model."
    assert g.__name__ == "ask"
    assert not inspect.iscoroutinefunction(g)
    assert inspect.iscoroutinefunction(ga)
    assert inspect.signature(ga) == inspect.signature(ask_async)


def test_methods_classmethods_and_staticmethods_sync_and_async(
    em: Emulator, client: openai.OpenAI
) -> None:
    aclient = openai.AsyncOpenAI(base_url=em.base_url, api_key="x")

    class Bot:
        prefix = "Hi"

        @tg.guard
        def ask(self, messages: list[Any], model: str = MODEL) -> Any:
            return client.chat.completions.create(messages=messages, model=model, max_tokens=8)

        @tg.guard(model=MODEL)
        @classmethod
        def ask_cls(cls, messages: list[Any]) -> Any:
            return client.chat.completions.create(messages=messages, model=MODEL, max_tokens=8)

        @tg.guard(model=MODEL)
        @staticmethod
        def ask_static(messages: list[Any], model: str | None = None) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model or MODEL, max_tokens=8
            )

        @tg.guard(model=MODEL)
        async def ask_async(self, messages: list[Any]) -> Any:
            return await aclient.chat.completions.create(
                messages=messages, model=MODEL, max_tokens=8
            )

    bot = Bot()
    assert bot.ask(hello()).usage.prompt_tokens > 0
    assert Bot.ask_cls(hello()).usage.prompt_tokens > 0
    assert Bot.ask_static(hello()).usage.prompt_tokens > 0
    assert inspect.iscoroutinefunction(Bot.ask_async)
    import asyncio

    reply = asyncio.run(bot.ask_async(hello()))
    assert reply.usage.prompt_tokens > 0
    assert list(inspect.signature(Bot.ask_cls).parameters) == ["messages"]
    assert len(chat_log(em)) == 4


# -- the call --------------------------------------------------------------------------


def test_a_call_without_max_tokens_reserves_the_default_and_is_reconciled(
    em: Emulator, client: openai.OpenAI, events: list[tg.events.Event]
) -> None:
    seen: dict[str, Any] = {}

    # The model table says 6,000 TPM: a bare count of a call without max_tokens would
    # reserve the whole context (131,036), which no 6,000 TPM limit can ever admit.
    @tg.guard
    def ask(messages: list[Any], model: str = MODEL, **kw: Any) -> Any:
        seen.update(kw)
        return client.chat.completions.create(messages=messages, model=model, **kw)

    reply = ask(hello())
    assert "max_tokens" not in seen  # what the caller asked is what was sent
    [record] = chat_log(em)
    [event] = requests(events)
    # The guard reserved what the server held: prompt + the default reserve (1,024).
    assert event["tokenguard.estimated_tokens"] == record.requested_tokens
    assert event["tokenguard.completion_reserve"] == 1024
    assert event["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert "gen_ai.request.max_tokens" not in event


def test_cap_max_tokens_is_opt_in_and_sends_an_explicit_max_tokens(
    em: Emulator, client: openai.OpenAI
) -> None:
    @tg.guard(cap_max_tokens=50)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int | None = None) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    ask(hello())
    ask(hello(), max_tokens=500)
    ask(hello(), max_tokens=20)
    first, second, third = chat_log(em)
    assert first.requested_tokens == first.prompt_tokens + 50
    assert second.requested_tokens == second.prompt_tokens + 50
    assert third.requested_tokens == third.prompt_tokens + 20


def test_the_messages_are_found_by_name_in_kwargs_and_model_can_be_fixed(
    em: Emulator, client: openai.OpenAI
) -> None:
    @tg.guard(messages_arg="history", model=SMALL)
    def ask(question: str, **kwargs: Any) -> Any:
        return client.chat.completions.create(
            messages=[*kwargs["history"], {"role": "user", "content": question}],
            model=SMALL,
            max_tokens=8,
        )

    ask("And?", history=hello())
    assert chat_log(em)[0].model == SMALL


def test_a_conversation_far_past_the_window_is_fitted_and_never_refused(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    # max_retries=0, as the README advises for a decorated function, so that 429s reach
    # the guard: the SDK's own retries would hide them from the limiter, which could then
    # never learn that this server keeps unused tokens.
    client = client_for(em)
    sent_sizes: list[int] = []

    @tg.guard(tpm=100_000, rpm=1_000, window=1.0)  # the emulator's limits, not the table's
    def ask(messages: list[Any], model: str = SMALL, max_tokens: int = 256) -> Any:
        sent_sizes.append(len(messages))
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    history: list[dict[str, str]] = [{"role": "system", "content": "Answer briefly."}]
    for turn in range(40):
        history.append({"role": "user", "content": f"Turn {turn}: " + "tell me more " * 400})
        reply = ask(history)
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    total = tg.count_tokens(history, model=SMALL)
    assert total > 5 * 8192
    # Never refused to the caller (every turn above got its answer). The server may have
    # refused one request: without headers the limiter first assumes the server gives back
    # unused tokens (the bucket then admits a request whose estimate only fits thanks to
    # them); this emulator keeps them, and its 429 teaches the limiter so (the guard waits
    # and sends again). Not lending before that lesson would cost a refunding server
    # most of its limit (8 threads, max_tokens 400 with 40 generated: 0.28 of it, not 1.0).
    statuses = [r.status for r in chat_log(em)]
    assert statuses.count(429) <= 1
    assert statuses.count(200) == 40
    assert set(statuses) <= {200, 429}
    fits = [e["tokenguard.fit"] for e in requests(events)]
    assert fits[0] == "none"
    assert fits[-1] == "truncate"
    assert sent_sizes[-1] < len(history)


def test_the_budget_room_is_part_of_what_fitting_may_use(client: openai.OpenAI) -> None:
    @tg.guard
    def ask(messages: list[Any], model: str = SMALL, max_tokens: int = 100) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    history = [{"role": "user", "content": f"note {i}: " + "words " * 100} for i in range(30)]
    with tg.budget(tokens=2_000) as b:
        reply = ask(history)
    assert reply.usage.prompt_tokens + 100 <= 2_000
    assert b.used == reply.usage.total_tokens
    assert b.remaining == 2_000 - reply.usage.total_tokens


# -- budgets ----------------------------------------------------------------------------


def test_budgets_are_charged_with_actual_usage_and_nest(client: openai.OpenAI) -> None:
    @tg.guard
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 64) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    with tg.budget(tokens=10_000, requests=5) as outer:
        a = ask(hello())
        with tg.budget(tokens=1_000) as inner:
            b = ask(hello("Again"))
        assert inner.used == b.usage.total_tokens
    assert outer.used == a.usage.total_tokens + b.usage.total_tokens
    assert outer.requests_used == 2
    assert (outer.reserved, inner.reserved) == (0, 0)


async def test_an_async_budget_is_carried_into_tasks(em: Emulator) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    async def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 16) -> Any:
        return await client.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens
        )

    async with tg.budget(tokens=50_000) as b:
        replies = await asyncio.gather(*(ask(hello(f"q{i}")) for i in range(5)))
    assert b.used == sum(r.usage.total_tokens for r in replies)
    assert b.requests_used == 5


def test_a_call_that_does_not_fit_the_budget_sends_nothing(
    em: Emulator, client: openai.OpenAI
) -> None:
    @tg.guard(on_overflow="error")
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 500) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    with tg.budget(tokens=10_000, requests=1) as b:
        ask(hello())
        with pytest.raises(tg.BudgetExceeded):
            ask(hello())
    assert len(chat_log(em)) == 1
    assert b.requests_used == 1
    assert b.reserved == 0


def test_a_budget_drops_history_but_never_cuts_the_question(
    em: Emulator, client: openai.OpenAI, events: list[tg.events.Event]
) -> None:
    """The README's promise: a call that cannot fit the budget raises BudgetExceeded
    before anything is sent. Dropping history is fitting; shortening the newest user
    message to squeeze it into what the caller chose to spend is not."""

    sent_messages: list[list[Any]] = []

    @tg.guard
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 100) -> Any:
        sent_messages.append(messages)
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    question = {"role": "user", "content": "Summarize this: " + "words " * 600}
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: " + "words " * 100}
        for i in range(10)
    ]
    with tg.budget(tokens=1_500) as b:
        reply = ask([*history, question])
        sent = em.log[-1]
        assert reply.usage.prompt_tokens < tg.count_tokens([*history, question], model=MODEL)
        assert sent_messages[0][-1] is question  # history dropped, the question whole
        with pytest.raises(tg.BudgetExceeded, match="nothing was sent") as refused:
            ask([*history, {"role": "user", "content": "words " * 2_000}])
    assert refused.value.remaining == 1_500 - reply.usage.total_tokens - 100
    assert chat_log(em)[-1] is sent  # the refused call never reached the server
    assert (b.used, b.reserved, b.requests_used) == (reply.usage.total_tokens, 0, 1)
    assert [e["tokenguard.fit"] for e in requests(events)] == ["truncate"]


# -- bad input: a clear error, nothing sent, nothing charged -----------------------------


def test_a_function_without_messages_is_refused_at_decoration() -> None:
    def ask(prompt: str) -> None: ...

    with pytest.raises(tg.ConfigurationError, match="no parameter 'messages'"):
        tg.guard(ask)
    with pytest.raises(tg.ConfigurationError, match="did you mean 'max_wait'"):
        tg.guard(max_wiat=3)  # type: ignore[call-overload]
    with pytest.raises(tg.ConfigurationError, match="on_overflow"):
        tg.guard(on_overflow="drop")  # type: ignore[call-overload]
    with pytest.raises(tg.ConfigurationError, match="summarizer"):
        tg.guard(on_overflow="summarize")(lambda messages: None)
    with pytest.raises(tg.ConfigurationError, match="not both"):
        tg.guard(limiter=tg.Limiter(tpm=100), tpm=50)
    # A string read from the environment is not a switch: "false" must not log content.
    with pytest.raises(tg.ConfigurationError, match="log_content must be True or False"):
        tg.guard(log_content="false")  # type: ignore[call-overload]
    with pytest.raises(tg.ConfigurationError, match="rate_limit must be True or False"):
        tg.guard(rate_limit="no")  # type: ignore[call-overload]
    with pytest.raises(tg.ConfigurationError, match="sleep must be callable"):
        tg.guard(sleep=5)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda ask: ask(None), tg.InvalidMessages, "without 'messages'"),
        (lambda ask: ask("Hello"), tg.InvalidMessages, "must be a list"),
        (lambda ask: ask([]), tg.InvalidMessages, "is empty"),
        (lambda ask: ask([{"role": "user"}]), tg.InvalidMessages, None),
        (lambda ask: ask(hello(), model=None), tg.ConfigurationError, "no model"),
        (lambda ask: ask(hello(), max_tokens=0), tg.InvalidRequest, "max_tokens"),
        (lambda ask: ask(hello(), max_tokens="9"), tg.InvalidRequest, "max_tokens"),
        (lambda ask: ask(hello(), nonsense=1), TypeError, "nonsense"),  # as undecorated
    ],
)
def test_bad_calls_get_a_clear_error_with_nothing_sent_or_charged(
    em: Emulator, client: openai.OpenAI, call: Any, error: type[Exception], match: str | None
) -> None:
    limiter = tg.Limiter(tpm=1_000, window=60.0)

    @tg.guard(limiter=limiter)
    def ask(messages: Any, model: Any = MODEL, max_tokens: Any = 32) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    with tg.budget(tokens=5_000) as b, pytest.raises(error, match=match):
        call(ask)
    assert chat_log(em) == []
    assert (b.used, b.reserved, b.requests_used) == (0, 0, 0)
    limiter.acquire(1_000, max_wait=0).cancel()  # the whole window is still free


def test_an_exception_of_the_wrapped_function_reaches_the_caller_unchanged(
    events: list[tg.events.Event],
) -> None:
    limiter = tg.Limiter(tpm=1_000, window=60.0)
    boom = ValueError("mine")

    @tg.guard(limiter=limiter)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 500) -> Any:
        raise boom

    with tg.budget(tokens=5_000) as b, pytest.raises(ValueError, match="mine") as caught:
        ask(hello())
    assert caught.value is boom
    assert (b.used, b.reserved) == (0, 0)
    limiter.acquire(1_000, max_wait=0).cancel()  # refunded: nothing reached a server
    [event] = requests(events)
    assert event["error.type"] == "other"


# -- cached tokens and events ---------------------------------------------------------------


def test_cached_tokens_are_reported_and_budgets_charge_usage_as_reported(
    events: list[tg.events.Event],
) -> None:
    # A function that posts JSON itself and returns the parsed body (dict) is guarded too.
    @tg.guard(rate_limit=False)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 64) -> Any:
        return {
            "id": "chatcmpl-1",
            "model": model,
            "usage": {
                "prompt_tokens": 900,
                "completion_tokens": 40,
                "total_tokens": 940,
                "prompt_tokens_details": {"cached_tokens": 800},
            },
        }

    with tg.budget(tokens=5_000) as b:
        ask(hello())
    assert b.used == 940
    [event] = requests(events)
    assert event["tokenguard.cached_tokens"] == 800
    assert event["tokenguard.limit_tokens"] == 140
    assert event["gen_ai.response.id"] == "chatcmpl-1"


def test_events_carry_the_genai_fields_and_never_the_content(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key="sk-secret-key")
    secret = "my password is hunter2"

    @tg.guard
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 32) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    reply = ask(hello(secret))
    [event] = requests(events)
    assert event["gen_ai.operation.name"] == "chat"
    assert event["gen_ai.provider.name"] == "groq"
    assert event["gen_ai.request.model"] == MODEL
    assert event["gen_ai.response.model"] == MODEL
    assert event["gen_ai.response.id"] == reply.id
    assert event["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert event["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert event["gen_ai.request.max_tokens"] == 32
    assert event["tokenguard.site"].endswith("ask()")
    for key in ("tokenguard.estimated_tokens", "tokenguard.wait_s", "tokenguard.retries"):
        assert key in event
    assert "error.type" not in event
    text = repr([e.fields() for e in events])
    assert "hunter2" not in text
    assert "sk-secret" not in text


def test_content_is_logged_only_when_asked(
    client: openai.OpenAI, events: list[tg.events.Event]
) -> None:
    @tg.guard(log_content=True)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 8) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    ask(hello("visible on purpose"))
    assert "visible on purpose" in repr(requests(events)[0]["gen_ai.input.messages"])


# -- invariants ---------------------------------------------------------------------------


class _Boom(Exception):
    pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.integers(min_value=0, max_value=4_000),
    calls=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=60),  # words in the message
            st.integers(min_value=1, max_value=400),  # max_tokens
            st.integers(min_value=0, max_value=400),  # completion the "server" reports
            st.booleans(),  # the call fails after being sent
        ),
        max_size=12,
    ),
)
def test_budgets_settle_exactly_whatever_the_calls_do(
    cap: int, calls: list[tuple[int, int, int, bool]]
) -> None:
    """Budgets end with nothing held, charged exactly the usage of the calls that
    succeeded, never above their cap; failures reach the caller as they were raised."""
    reset_defaults()
    clock = FakeClock()
    limiter = tg.Limiter(tpm=50_000, window=60.0, clock=clock, sleep=clock.sleep)

    @tg.guard(limiter=limiter, on_overflow="error", clock=clock, sleep=clock.sleep)
    def ask(
        messages: list[Any],
        model: str = MODEL,
        max_tokens: int = 16,
        fail: bool = False,
        completion: int = 0,
    ) -> Any:
        if fail:
            raise _Boom
        prompt = tg.count_tokens(messages, model=model)
        done = min(completion, max_tokens)
        return {
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": done,
                "total_tokens": prompt + done,
            }
        }

    charged = 0
    with tg.budget(tokens=cap) as b:
        for words, max_tokens, completion, fail in calls:
            try:
                reply = ask(
                    hello("word " * words), max_tokens=max_tokens, fail=fail, completion=completion
                )
            except (tg.BudgetExceeded, tg.ContextOverflow):
                continue
            except _Boom:
                assert fail
                continue
            charged += reply["usage"]["total_tokens"]
        assert b.reserved == 0
        assert b.requests_reserved == 0
        assert b.used == charged
        assert b.used <= cap
    clock.advance(61.0)
    limiter.acquire(50_000, max_wait=0).cancel()  # nothing left held in the limiter
