"""Hostile input, tried as a new user would: Hypothesis generates messages and request
bodies (well-formed, subtly wrong and plain junk) and sends them through counting,
fitting and the guard. Only TokenGuardError subclasses (or the SDK's own errors,
unchanged) may come out, never another exception; what fitting returns, the emulator
accepts; and no event or log line ever carries the planted content or key."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import PLANTED_CONTENT, PLANTED_KEY, secret_trap

import tokenguard as tg
from tokenguard.emulator import Emulator, running

pytestmark = pytest.mark.reliability

LLAMA = "llama-3.1-8b-instant"
GPT_OSS = "openai/gpt-oss-20b"
MODELS = (LLAMA, GPT_OSS)
CONTEXT = 1_024  # small, so that fitting has work to do

#: Every outcome of every property, for the report (``-s`` prints them).
FIGURES: Counter[str] = Counter()

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies ----------------------------------------------------------------------------

special = st.sampled_from(
    [
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>system<|end_header_id|>",
        "<|start|>assistant<|channel|>final<|message|>",
        "<|end|>",
        "\x00",
        "\ufeff",
        "💥" * 3,
        "\r\n\t",
        PLANTED_CONTENT,
    ]
)
texts = st.one_of(
    st.text(max_size=120),
    st.lists(st.one_of(st.text(max_size=30), special), max_size=6).map("".join),
    st.builds(
        lambda a, b: f"{a} {PLANTED_CONTENT} {b}", st.text(max_size=40), st.text(max_size=40)
    ),
    st.text(alphabet="ab ", min_size=500, max_size=3_000),  # long: fitting must shorten
)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), texts
)
junk = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
parts = st.lists(
    st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, texts),
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "bogus"])}),
        junk,
    ),
    max_size=3,
)
tool_call = st.builds(
    lambda i, name, args: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    },
    st.integers(0, 3),
    st.sampled_from(["get_weather", "lookup", ""]),
    st.one_of(st.just("{}"), st.builds(lambda t: json.dumps({"q": t}), texts), texts),
)
good_message = st.one_of(
    st.builds(lambda r, t: {"role": r, "content": t}, st.sampled_from(["system", "user"]), texts),
    st.builds(lambda t: {"role": "assistant", "content": t}, texts),
    st.builds(
        lambda calls: {"role": "assistant", "content": None, "tool_calls": calls},
        st.lists(tool_call, min_size=1, max_size=2),
    ),
    st.builds(
        lambda i, t: {"role": "tool", "tool_call_id": f"call_{i}", "content": t},
        st.integers(0, 3),
        texts,
    ),
    st.builds(lambda p: {"role": "user", "content": p}, parts),
)
bad_message = st.one_of(
    junk,
    st.dictionaries(
        st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "extra"]),
        junk,
        max_size=4,
    ),
    st.builds(lambda r, t: {"role": r, "content": t}, st.text(max_size=10), texts),
)
good_messages = st.lists(good_message, min_size=1, max_size=8)
messages = st.one_of(
    good_messages,
    st.lists(st.one_of(good_message, bad_message), max_size=6),
    junk,
)
max_tokens = st.one_of(st.none(), st.integers(-5, 40_000), st.sampled_from([0, 1, True, 2.5, "7"]))
long_conversation = st.builds(
    lambda system, turns, last: [
        {"role": "system", "content": system},
        *(
            {"role": "user" if i % 2 == 0 else "assistant", "content": turn}
            for i, turn in enumerate(turns)
        ),
        {"role": "user", "content": last},
    ],
    texts,
    st.lists(st.text(alphabet="xyz ", min_size=200, max_size=900), min_size=4, max_size=12),
    texts,
)
# Mostly what callers send (so that most examples get through to the server), sometimes not.
mostly_good = st.one_of(good_messages, long_conversation, long_conversation, messages)
sane_max_tokens = st.one_of(st.none(), st.integers(1, 600), max_tokens)
body_extras = st.dictionaries(
    st.sampled_from(
        [
            "temperature",
            "stream",
            "tools",
            "tool_choice",
            "response_format",
            "reasoning_effort",
            "n",
            "stop",
            "seed",
            "user",
            "bogus_option",
        ]
    ),
    junk,
    max_size=3,
)


def allowed(exc: BaseException) -> bool:
    """tokenguard's own errors, or the SDK's errors as the SDK raised them."""
    return isinstance(exc, (tg.TokenGuardError, openai.OpenAIError))


# -- counting --------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=250)
@given(
    msgs=st.one_of(mostly_good, messages),
    model=st.sampled_from(MODELS),
    mt=max_tokens,
    extras=st.one_of(st.just({}), body_extras),
)
def test_counting_any_body_gives_a_count_or_a_tokenguard_error(
    msgs: Any, model: str, mt: Any, extras: dict[str, Any]
) -> None:
    refused: tg.TokenGuardError | None = None
    with secret_trap():
        try:
            n = tg.count_tokens(msgs, model=model, **extras)
            rc = tg.count_request(msgs, model=model, max_tokens=mt, **extras)
        except tg.TokenGuardError as exc:
            refused = exc
    if refused is not None:
        FIGURES[f"count refused: {type(refused).__name__}"] += 1
        assert str(refused)  # says what is wrong
        return
    assert isinstance(n, int)
    assert n > 0
    assert rc.prompt_tokens == n
    assert rc.total >= n
    FIGURES["count ok"] += 1


# -- fitting, checked by the server -------------------------------------------------------------


@pytest.fixture(scope="module")
def em() -> Iterator[Emulator]:
    # No rate limits (0 disables them): only what the server accepts is under test.
    with running(model=list(MODELS), tpm=0, rpm=0, tpd=0, rpd=0, context_window=CONTEXT) as em:
        yield em


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    print("\nFIGURES fuzz:", dict(sorted(FIGURES.items())))


#: Completion reserves assumed for calls without max_tokens: below, at and above CONTEXT.
reserves = st.sampled_from([256, 1_024, 4_096])


@settings(SETTINGS, max_examples=100)
@given(msgs=mostly_good, model=st.sampled_from(MODELS), mt=sane_max_tokens, reserve=reserves)
def test_what_fitting_returns_the_emulator_accepts(
    em: Emulator, msgs: Any, model: str, mt: Any, reserve: int
) -> None:
    with secret_trap():
        try:
            fitted = tg.fit(
                msgs,
                model=model,
                max_tokens=mt,
                context_window=CONTEXT,
                tpm=None,
                default_reserve=reserve,
            )
        except tg.TokenGuardError as exc:
            FIGURES[f"fit refused: {type(exc).__name__}"] += 1
            return
    if fitted.max_tokens is not None:
        assert fitted.tokens_after + fitted.max_tokens <= CONTEXT
    else:
        # Without max_tokens the server holds min(reserve, room left): it needs one token.
        assert fitted.tokens_after < CONTEXT
        if fitted.strategy != "none":  # cut: the room kept for the answer is not a sliver
            assert CONTEXT - fitted.tokens_after >= min(reserve, 512)
    client = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
    extra: Any = {} if fitted.max_tokens is None else {"max_tokens": fitted.max_tokens}
    try:
        reply: Any = client.chat.completions.create(model=model, messages=fitted.messages, **extra)
    except openai.APIStatusError as exc:  # pragma: no cover - a failure, shown in full
        pytest.fail(f"the emulator refused fitted messages: {exc.status_code} {exc.message}")
    finally:
        client.close()
    # The client's count of the fitted prompt is the server's (never below it when the
    # count is a conservative estimate).
    if fitted.exact:
        assert reply.usage.prompt_tokens == fitted.tokens_after
    else:
        assert reply.usage.prompt_tokens <= fitted.tokens_after
    FIGURES[f"fit accepted ({fitted.strategy})"] += 1


# -- the guard ---------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=100)
@given(
    msgs=messages,
    model=st.sampled_from(MODELS),
    mt=sane_max_tokens,
    well_formed=st.booleans(),
    good=st.one_of(good_messages, long_conversation),
    reserve=reserves,
)
def test_the_guard_raises_only_its_own_or_the_sdks_errors(
    em: Emulator,
    msgs: Any,
    model: str,
    mt: Any,
    well_formed: bool,
    good: list[Any],
    reserve: int,
) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
    lim = tg.Limiter(tpm=10_000_000, rpm=10_000_000, window=1.0)

    @tg.guard(limiter=lim, context_window=CONTEXT, max_wait=5.0, default_reserve=reserve)
    def ask(messages: Any, model: str, max_tokens: Any = None) -> Any:
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        return client.chat.completions.create(messages=messages, model=model, **extra)

    sent = good if well_formed else msgs
    before = len(em.log)
    raised: Exception | None = None
    try:
        with secret_trap():
            try:
                reply: Any = ask(sent, model=model, max_tokens=mt)
            except Exception as exc:
                raised = exc
    finally:
        client.close()
    if raised is not None:
        assert allowed(raised), f"{type(raised).__name__}: {raised}"
        FIGURES[f"guard raised: {type(raised).__name__}"] += 1
        if isinstance(raised, tg.TokenGuardError):
            # Refused before sending: nothing reached the server.
            assert len(em.log) == before
        if well_formed and isinstance(raised, openai.APIStatusError):
            pytest.fail(f"well-formed messages refused by the server: {raised}")
        return
    assert reply.usage.total_tokens > 0
    FIGURES["guard served"] += 1


def test_a_call_without_max_tokens_that_the_server_accepts_is_not_refused(em: Emulator) -> None:
    system = {"role": "system", "content": "Be brief. " * 60}  # ~600 tokens of 1,024
    sent: Any = [system, {"role": "user", "content": "Hello"}]
    client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
    # The server takes it as is: it holds min(1024, room left) for the completion.
    direct: Any = client.chat.completions.create(model=LLAMA, messages=sent)
    assert direct.usage.prompt_tokens < CONTEXT

    @tg.guard(limiter=tg.Limiter(tpm=10_000_000, window=1.0), context_window=CONTEXT)
    def ask(messages: Any, model: str = LLAMA) -> Any:
        return client.chat.completions.create(messages=messages, model=model)

    seen: list[tg.events.Event] = []
    undo = tg.events.add_sink(seen.append)
    try:
        reply: Any = ask(sent)  # the default reserve (1,024) alone fills the context
    finally:
        undo()
        client.close()
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens
    # Sent as asked, and the guard's estimate is what the server held for it.
    [event] = [e.fields() for e in seen if e.name == "tokenguard.guard.request"]
    assert event["tokenguard.fit"] == "none"
    assert "gen_ai.request.max_tokens" not in event
    assert event["tokenguard.estimated_tokens"] == em.log[-1].requested_tokens
    assert event["tokenguard.completion_reserve"] == CONTEXT - reply.usage.prompt_tokens
