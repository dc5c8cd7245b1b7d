"""Summarization: incremental, cached, bounded; falls back to truncation; a real summarizer
(the openai SDK against the emulator, sync and async) and plain callables."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import Any

import openai
import pytest
from fitting_support import MODEL, check_invariants

import tokenguard as tg
from tokenguard.emulator import Emulator, running
from tokenguard.emulator._completion import completion_text

# The fit events of thousands of examples stay out of the application's logging.
pytestmark = pytest.mark.usefixtures("logging_off")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=0, rpm=0, tpd=0, rpd=0, completion_tokens=40) as em:
        yield em


class Recorder:
    """A plain-function summarizer that says what it folded in (deterministic)."""

    def __init__(self) -> None:
        self.requests: list[tg.SummaryRequest] = []

    def __call__(self, request: tg.SummaryRequest) -> str:
        self.requests.append(request)
        before = len(request.previous.split(";")) if request.previous else 0
        return ";".join(f"part {i}" for i in range(before + 1))


def chat(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "word " * 60}
        for i in range(start, start + n)
    ]


SYSTEM = {"role": "system", "content": "You are terse."}


def _options(summarizer: Any, options: dict[str, Any]) -> dict[str, Any]:
    options.setdefault("summary_cache", tg.SummaryCache())
    return {"max_tokens": 200, "on_overflow": "summarize", "summarizer": summarizer, **options}


def summarized(history: list[Any], summarizer: Any, **options: Any) -> tg.FitResult:
    """A summarizing fit with a fresh cache unless one is given."""
    return tg.fit(history, MODEL, **_options(summarizer, options))


async def summarized_async(history: list[Any], summarizer: Any, **options: Any) -> tg.FitResult:
    """:func:`summarized` through ``fit_async``."""
    return await tg.fit_async(history, MODEL, **_options(summarizer, options))


def test_the_dropped_prefix_becomes_one_summary_after_the_system_message() -> None:
    history = [SYSTEM, *chat(200), {"role": "user", "content": "So?"}]
    rec = Recorder()
    r = summarized(history, rec)
    assert (r.strategy, r.requested, r.fallback) == ("summarize", "summarize", None)
    assert r.messages[0] is SYSTEM
    assert r.messages[1]["role"] == "system"
    assert r.messages[1]["content"] == tg.fitting.SUMMARY_PREFIX + str(r.summary)
    assert r.summarized + len(r.messages) - 1 == len(history)  # every message accounted for
    check_invariants(history, r)
    # Headroom: the verbatim tail leaves room for the next turns.
    assert r.tokens_after <= 0.8 * r.allowed
    # A long prefix is folded in steps, each carrying the summary so far.
    assert r.summary_calls == len(rec.requests) >= 2
    assert rec.requests[0].previous is None
    for before, after in zip(rec.requests, rec.requests[1:], strict=False):
        assert after.previous is not None
        assert before.messages[-1] is not after.messages[0]
    folded = [m for req in rec.requests for m in req.messages]
    assert folded == history[1 : 1 + r.summarized]
    for req in rec.requests:
        # Each summary request fits the model's room itself.
        previous = tg.count_tokens([{"role": "user", "content": req.previous or ""}], MODEL)
        needed = tg.count_tokens(list(req.messages), MODEL) + previous + req.max_tokens
        assert needed <= 6000 - 100


def test_summaries_are_reused_and_a_growing_conversation_is_rarely_resummarized() -> None:
    rec = Recorder()
    cache = tg.SummaryCache()
    history: list[Any] = [SYSTEM]
    overflowing = calls = 0
    for turn in range(400):
        history.extend(chat(1, start=turn))
        r = summarized(history, rec, summary_cache=cache)
        check_invariants(history, r)
        calls += r.summary_calls
        if r.strategy != "none":
            overflowing += 1
            assert r.strategy == "summarize"
    assert overflowing > 300
    # Each summary leaves half the room free: one call per many overflowing turns.
    assert calls == len(rec.requests)
    assert calls <= overflowing / 10, (calls, overflowing)
    print(f"{calls} summary calls over {overflowing} overflowing turns")
    # The same history again: from the cache, no call.
    again = summarized(history, rec, summary_cache=cache)
    assert (again.summary_calls, again.strategy) == (0, "summarize")


def _fit_with(summarizer: Any, events: list[tg.events.Event]) -> tg.FitResult:
    history = [SYSTEM, *chat(200), {"role": "user", "content": "So?"}]
    r = summarized(history, summarizer)
    check_invariants(history, r)
    return r


def test_a_failing_summarizer_falls_back_to_truncation(events: list[tg.events.Event]) -> None:
    def broken(request: tg.SummaryRequest) -> str:
        raise TimeoutError("the summary call timed out")

    r = _fit_with(broken, events)
    assert (r.strategy, r.requested) == ("truncate", "summarize")
    assert r.fallback is not None
    assert "TimeoutError" in r.fallback
    assert r.fill >= 0.95
    [event] = [e for e in events if e.name.startswith("tokenguard.fit")]
    assert event.name == "tokenguard.fit.fallback"
    assert event.level == "warning"
    assert event.fields()["fallback"] == r.fallback


@pytest.mark.parametrize(
    ("reply", "why"),
    [("blah " * 20_000, "did not fit"), ("   ", "empty summary")],
)
def test_a_summary_that_does_not_help_falls_back(
    reply: str, why: str, events: list[tg.events.Event]
) -> None:
    r = _fit_with(lambda request: reply, events)
    assert r.strategy == "truncate"
    assert r.fallback is not None
    assert why in r.fallback


def test_a_summarizer_returning_garbage_is_a_clear_error(events: list[tg.events.Event]) -> None:
    with pytest.raises(tg.ConfigurationError, match="returned int; expected the summary"):
        _fit_with(lambda request: 42, events)


def test_an_async_summarizer_needs_fit_async(events: list[tg.events.Event]) -> None:
    async def summarize(request: tg.SummaryRequest) -> str:
        return "short"

    with pytest.raises(tg.ConfigurationError, match="fit_async"):
        _fit_with(summarize, events)


async def test_fit_async_awaits_an_async_summarizer() -> None:
    seen: list[tg.SummaryRequest] = []

    async def summarize(request: tg.SummaryRequest) -> str:
        seen.append(request)
        return "the user and the assistant counted words"

    history = [SYSTEM, *chat(100), {"role": "user", "content": "So?"}]
    r = await summarized_async(history, summarize)
    assert r.strategy == "summarize"
    assert r.summary == "the user and the assistant counted words"
    assert r.summary_calls == len(seen)
    check_invariants(history, r)


def test_client_summarizer_through_the_openai_sdk(emulator: Emulator) -> None:
    client = openai.OpenAI(base_url=emulator.base_url, api_key="test", max_retries=0)
    emulator.reset()
    summarizer = tg.ClientSummarizer(client, model=MODEL)
    history = [SYSTEM, *chat(100), {"role": "user", "content": "So?"}]
    r = summarized(history, summarizer)
    assert r.strategy == "summarize"
    # The emulator's completions are deterministic: 40 known tokens.
    assert r.summary == completion_text(40).strip()
    calls = [rec for rec in emulator.log if rec.endpoint == "chat"]
    assert len(calls) == r.summary_calls >= 1
    assert all(rec.status == 200 for rec in calls)
    # The summary request was bounded by its max_tokens.
    assert all(rec.requested_tokens - rec.prompt_tokens <= 512 for rec in calls)
    # And the fitted request itself is accepted.
    reply = client.chat.completions.create(
        model=MODEL, messages=r.messages, max_tokens=r.max_tokens
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == r.tokens_after


async def test_client_summarizer_with_an_async_client(emulator: Emulator) -> None:
    client = openai.AsyncOpenAI(base_url=emulator.base_url, api_key="test", max_retries=0)
    summarizer = tg.ClientSummarizer(client)
    history = [SYSTEM, *chat(100), {"role": "user", "content": "So?"}]
    pending = summarizer(tg.SummaryRequest(tuple(history[1:3]), None, 64, MODEL))
    assert isinstance(pending, Awaitable)
    assert (await pending).strip() == completion_text(40).strip()
    r = await summarized_async(history, summarizer)
    assert r.strategy == "summarize"
    assert r.summary == completion_text(40).strip()
    await client.close()


def test_client_summarizer_through_the_groq_sdk(emulator: Emulator) -> None:
    import groq

    with groq.Groq(base_url=emulator.root_url, api_key="test", max_retries=0) as client:
        history = [SYSTEM, *chat(100), {"role": "user", "content": "So?"}]
        r = summarized(history, tg.ClientSummarizer(client, model=MODEL))
    assert r.strategy == "summarize"
    assert r.summary == completion_text(40).strip()


def test_client_summarizer_needs_a_chat_client() -> None:
    with pytest.raises(tg.ConfigurationError, match=r"chat\.completions\.create"):
        tg.ClientSummarizer(object())
    with pytest.raises(tg.ConfigurationError, match="exactly one"):
        tg.ClientSummarizer()


def test_client_summarizer_takes_a_create_function(emulator: Emulator) -> None:
    client = openai.OpenAI(base_url=emulator.base_url, api_key="test", max_retries=0)
    sent: list[dict[str, Any]] = []

    def create(**kwargs: Any) -> Any:  # stands where a guarded create would
        sent.append(kwargs)
        return client.chat.completions.create(**kwargs)

    summarizer = tg.ClientSummarizer(create=create, model=MODEL, temperature=0)
    text = summarizer(tg.SummaryRequest(({"role": "user", "content": "hi"},), None, 32, MODEL))
    assert isinstance(text, str)
    assert text.strip() == completion_text(32).strip()
    assert sent[0]["max_tokens"] == 32
    assert sent[0]["temperature"] == 0
    assert sent[0]["messages"][-1] == {"role": "user", "content": "user: hi"}


def test_transcript_names_roles_and_tool_calls() -> None:
    request = tg.SummaryRequest(
        (
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "4 C"},
        ),
        "earlier: greetings",
        100,
        MODEL,
    )
    assert tg.fitting.transcript(request) == (
        "(summary so far) earlier: greetings\nuser: weather?\nassistant: [calls w({})]\ntool: 4 C"
    )
