"""tg.Conversation: a history whose messages always fit the ceiling, tried as a new user would."""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest
from fake_clock import FakeClock
from fitting_support import check_tool_groups, conversations
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.emulator import running

MODEL = "llama3-8b-8192"


pytestmark = pytest.mark.usefixtures("logging_off")


def words(i: int, n: int = 50) -> str:
    return f"message {i}: " + "word " * n


def test_messages_stay_within_the_ceiling_and_tokens_is_their_count() -> None:
    conv = tg.Conversation(system="You are terse.", model=MODEL, max_prompt_tokens=1500)
    assert conv.messages == [{"role": "system", "content": "You are terse."}]
    assert conv.tokens == tg.count_tokens(conv.messages, model=MODEL)
    for i in range(100):
        conv.add_user(words(i))
        conv.add_assistant(words(i, 20))
        assert conv.tokens == tg.count_tokens(conv.messages, model=MODEL)
        assert conv.tokens <= 1500
        assert conv.messages[0]["role"] == "system"
        assert conv.messages[-1]["content"] == words(i, 20)
    assert len(conv.history) == 201
    assert conv.history[1] == {"role": "user", "content": words(0)}
    assert conv.dropped == 201 - len(conv.messages)
    # Truncation fills the ceiling but for one exchange: the kept history opens with a
    # question (an answer whose question was dropped goes too).
    pair = [{"role": "user", "content": words(99)}, {"role": "assistant", "content": words(99, 20)}]
    assert 1500 - conv.tokens < sum(tg.count_prompt(pair, model=MODEL).messages)
    assert conv.messages[1]["role"] == "user"
    last = conv.last_fit
    assert last is not None
    assert last.strategy == "truncate"


def test_tool_calls_and_results_are_kept_together() -> None:
    conv = tg.Conversation(system="Use tools.", model=MODEL, max_prompt_tokens=900)
    for i in range(40):
        conv.add_user(words(i, 10))
        conv.add_assistant(
            tool_calls=[
                {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]
        )
        conv.add_tool_result(f"c{i}", "result " * 30)
        conv.add_assistant(f"answer {i}")
        check_tool_groups(conv.messages)
        assert conv.tokens <= 900


def test_summarizing_conversation_calls_the_summarizer_rarely() -> None:
    calls: list[tg.SummaryRequest] = []

    def summarize(request: tg.SummaryRequest) -> str:
        calls.append(request)
        return f"summary {len(calls)}: the user sent numbered messages"

    conv = tg.Conversation(
        system="You are terse.",
        model=MODEL,
        max_prompt_tokens=2000,
        on_overflow="summarize",
        summarizer=summarize,
    )
    for i in range(300):
        conv.add_user(words(i))
        assert conv.tokens <= 2000
        assert conv.tokens == tg.count_tokens(conv.messages, model=MODEL)
    assert conv.summary_calls == len(calls)
    assert 0 < conv.summary_calls <= 30
    assert conv.summary == f"summary {len(calls)}: the user sent numbered messages"
    assert conv.messages[1]["content"].endswith(conv.summary)
    assert conv.summarized + len(conv.messages) - 1 == len(conv.history)
    assert conv.fallbacks == 0


async def test_an_async_summarizer_is_awaited_by_add_async() -> None:
    async def summarize(request: tg.SummaryRequest) -> str:
        return "earlier: numbered messages"

    conv = tg.Conversation(
        model=MODEL, max_prompt_tokens=1000, on_overflow="summarize", summarizer=summarize
    )
    for i in range(60):
        await conv.add_async({"role": "user", "content": words(i)})
        assert conv.tokens <= 1000
    assert conv.summary == "earlier: numbered messages"
    for i in range(60):
        if conv.tokens + 200 > 1000:
            break
        conv.add_user(words(i))
    # The next message overflows: the async summarizer cannot be awaited by add_user.
    with pytest.raises(tg.ConfigurationError, match="fit_async"):
        conv.add_user(words(99, 200))


def test_shared_by_threads() -> None:
    conv = tg.Conversation(system="Shared.", model=MODEL, max_prompt_tokens=1200)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(40):
                conv.add_user(f"thread {k} " + words(i, 15))
                view = conv.messages
                assert tg.count_tokens(view, model=MODEL) <= 1200
                assert view[0]["role"] == "system"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(conv.history) == 1 + 8 * 40
    assert conv.tokens == tg.count_tokens(conv.messages, model=MODEL)
    # The view is the newest state: it ends with the last message added.
    assert conv.messages[-1] is conv.history[-1]
    # Each thread's messages appear in its own order.
    for k in range(8):
        mine = [m["content"] for m in conv.history if m["content"].startswith(f"thread {k} ")]
        assert mine == [f"thread {k} " + words(i, 15) for i in range(40)]


def test_bad_input_is_refused_and_nothing_is_added() -> None:
    conv = tg.Conversation(system="s", model=MODEL, max_prompt_tokens=500)
    with pytest.raises(tg.InvalidMessages):
        conv.add({"role": "wizard", "content": "x"})
    with pytest.raises(tg.InvalidMessages):
        conv.add_user(42)
    with pytest.raises(tg.ConfigurationError):
        conv.add_assistant()
    with pytest.raises(tg.ConfigurationError):
        conv.add_tool_result("", "x")
    assert len(conv.history) == 1
    with pytest.raises(tg.ConfigurationError):
        tg.Conversation(model=MODEL, max_prompt_tokens=0)
    with pytest.raises(tg.ConfigurationError):
        tg.Conversation(model=MODEL, on_overflow="summarize")
    with pytest.raises(tg.ContextOverflow):
        tg.Conversation(system="rule " * 1000, model=MODEL, max_prompt_tokens=200)


def test_the_ceiling_is_named_max_prompt_tokens_and_fits_say_it_bound() -> None:
    conv = tg.Conversation(system="s", model=MODEL, max_prompt_tokens=300)
    conv.add_user(words(0, 500))
    assert conv.last_fit is not None
    assert (conv.last_fit.bound_by, conv.last_fit.allowed) == ("max_prompt_tokens", 300)
    assert conv.tokens <= 300
    # A ceiling at the context window is the context window's.
    conv = tg.Conversation(model=MODEL)
    conv.add_user("x " * 20_000)
    assert conv.last_fit is not None
    assert conv.last_fit.bound_by == "context_window"


def test_the_old_name_max_tokens_still_works_and_warns() -> None:
    with pytest.warns(DeprecationWarning, match="max_prompt_tokens") as warned:
        conv = tg.Conversation(model=MODEL, max_tokens=300)
    assert warned[0].filename == __file__  # the warning points at the caller's line
    assert conv.max_prompt_tokens == 300
    with pytest.warns(DeprecationWarning, match="max_prompt_tokens"):
        assert conv.max_tokens == 300
    with pytest.raises(tg.ConfigurationError, match="max_prompt_tokens only"):
        tg.Conversation(model=MODEL, max_tokens=300, max_prompt_tokens=300)


def test_the_ceiling_is_at_most_the_context_window() -> None:
    conv = tg.Conversation(model=MODEL, max_prompt_tokens=1_000_000)
    assert conv.max_prompt_tokens == 8192
    conv.add_user("x " * 20_000)  # shortened inside: the newest question is never dropped
    assert conv.tokens <= 8192
    assert conv.last_fit is not None
    assert conv.last_fit.shortened == 1


def test_a_conversation_growing_to_5x_the_window_against_the_emulator() -> None:
    clock = FakeClock()
    with running(model=MODEL, tpm=6000, rpm=30, tpd=0, rpd=0, clock=clock) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
        conv = tg.Conversation(system="You are helpful.", model=MODEL, max_prompt_tokens=6000 - 256)
        total = 0
        turn = 0
        while total < 5 * 8192:
            question = f"Question {turn}: " + "Привет, как дела? 日本語. Tell me more. " * 10
            conv.add_user(question)
            reply = client.chat.completions.create(
                model=MODEL, messages=conv.messages, max_tokens=256
            )
            usage: Any = reply.usage
            assert usage.prompt_tokens == conv.tokens
            conv.add(reply.choices[0].message)  # the SDK's own message object
            total = tg.count_tokens(list(conv.history), model=MODEL)
            clock.advance(60.0)
            turn += 1
        assert all(rec.status == 200 for rec in em.log)
        assert len(em.log) == turn


@settings(max_examples=60, deadline=None)
@given(msgs=conversations(max_turns=30), ceiling=st.integers(300, 8192))
def test_any_conversation_added_message_by_message_stays_within_the_ceiling(
    msgs: list[Any], ceiling: int
) -> None:
    conv = tg.Conversation(model=MODEL, max_prompt_tokens=ceiling)
    added: list[Any] = []
    for m in msgs:
        try:
            conv.add(m)
        except tg.ContextOverflow:
            # Refused: nothing was added. What follows (e.g. the results of a refused
            # tool call) would no longer make a valid conversation: stop here.
            assert list(conv.history) == added
            break
        added.append(m)
        assert conv.tokens == tg.count_tokens(conv.messages, model=MODEL)
        assert conv.tokens <= ceiling
        assert conv.messages[-1] is m or "cut here" in str(conv.messages[-1]["content"])
        check_tool_groups(conv.messages)
    assert list(conv.history) == added


def test_a_summarizing_conversation_through_an_instrumented_client() -> None:
    # Generous limits: this is about the summary call going through the same guard.
    with running(model=MODEL, tpm=1_000_000, rpm=10_000, tpd=0, rpd=0) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0),
            tpm=1_000_000,
            rpm=10_000,
        )
        conv = tg.Conversation(
            system="You are helpful.",
            model=MODEL,
            max_prompt_tokens=3000,
            on_overflow="summarize",
            summarizer=tg.ClientSummarizer(client, model=MODEL),
        )
        for turn in range(40):
            conv.add_user(f"Question {turn}: " + "tell me more about the weather " * 20)
            reply = client.chat.completions.create(
                model=MODEL, messages=conv.messages, max_tokens=128
            )
            usage: Any = reply.usage
            assert usage.prompt_tokens == conv.tokens <= 3000
            conv.add_assistant(reply.choices[0].message.content)
        chat_calls = [rec for rec in em.log if rec.endpoint == "chat"]
        assert all(rec.status == 200 for rec in chat_calls)
        assert len(chat_calls) == 40 + conv.summary_calls
        assert 0 < conv.summary_calls < 10
        assert conv.summary is not None
