"""Payloads the SDKs cannot send, tried as a new user would: Hypothesis builds valid
requests (tool calls and results, names, images, tool definitions, sampling keywords)
and plants at most one hostile value anywhere in them: a lone surrogate, NaN or
infinity, a set, bytes, an ``object()``, a tuple or ``object()`` key.

Every family's ``count_tokens`` and the guard (``instrument`` on the openai and groq SDKs,
and ``@tg.guard``) against the emulator must then either serve or count the clean request,
or refuse the planted one with a tokenguard error whose ``field`` is the planted path,
before anything is sent (the emulator's log), reserved (the limiter) or charged (the budget).

``TOKENGUARD_FUZZ_TALLY=1`` records every outcome by exception type instead of asserting,
on a fixed sequence of examples (``-s`` prints them): how docs/reliability.md's "before"
column was measured on the code without the check.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import PLANTED_KEY, TrackingLimiter

import tokenguard as tg
from tokenguard.emulator import Emulator, running

pytestmark = pytest.mark.reliability

LLAMA = "llama-3.1-8b-instant"
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
GPT_OSS = "openai/gpt-oss-20b"
QWEN = "qwen/qwen3-32b"
KIMI = "moonshotai/kimi-k2-instruct-0905"
#: One model of every counting family (Llama 3, Llama 4, harmony, Qwen3, estimate).
FAMILIES = (LLAMA, SCOUT, GPT_OSS, QWEN, KIMI)
SERVED = (LLAMA, SCOUT, GPT_OSS)

TALLY = os.environ.get("TOKENGUARD_FUZZ_TALLY") == "1"
FIGURES: Counter[str] = Counter()

_DEFAULT = settings()
SETTINGS = settings(
    deadline=None,
    derandomize=TALLY,
    database=None if TALLY else _DEFAULT.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- a valid request ---------------------------------------------------------------------

words = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
call_ids = st.sampled_from(["call_a", "call_b"])
arguments = st.builds(
    lambda q, n: '{"q": ' + repr(q).replace("'", '"') + f', "n": {n}}}',
    st.text(alphabet="abc xyz", max_size=10),
    st.integers(0, 9),
)


def _tool_round(ident: str, args: str, result: str) -> list[dict[str, Any]]:
    call = {"id": ident, "type": "function", "function": {"name": "lookup", "arguments": args}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": ident, "content": result},
    ]


def _conversation(
    system: str | None, first: str, name: str | None, rounds: list[Any], image: bool
) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
    user: dict[str, Any] = {"role": "user", "content": first or "hi"}
    if name:
        user["name"] = "".join(c for c in name if c.isalnum()) or "ann"
    if image:
        user["content"] = [
            {"type": "text", "text": first or "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]
    msgs.append(user)
    for ident, args, result in rounds:
        msgs.extend(_tool_round(ident, args, result or "ok"))
    return msgs


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q"],
            },
        },
    }
]

conversations = st.builds(
    _conversation,
    st.none() | words,
    words,
    st.none() | st.text(alphabet="abcxyz", max_size=6),
    st.lists(st.tuples(call_ids, arguments, words), max_size=2),
    st.booleans(),
)
keywords = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.1, 1),
        "user": st.text(alphabet="abc-", max_size=8),
        "stop": st.lists(st.text(alphabet="xyz", min_size=1, max_size=3), max_size=2),
        "seed": st.integers(0, 2**31),
        "logit_bias": st.dictionaries(st.integers(0, 50_000), st.floats(-10, 10), max_size=2),
    },
)

# -- hostile values, and where to plant one ------------------------------------------------

LONE = ["\ud800", "\udfff", "\udc00"]
hostile = st.one_of(
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), st.sampled_from(LONE), words),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.builds(set, st.lists(st.integers(0, 3), max_size=2)),
    st.just(b"bytes"),
    st.builds(object),
)
hostile_keys = st.one_of(
    st.just(("a", 1)), st.builds(object), st.builds(lambda s: "k" + s, st.sampled_from(LONE))
)


def _step(key: object) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    assert isinstance(key, str)
    return f".{key}" if key.isidentifier() else f"[{key!r}]"


def _slots(value: Any, path: str) -> Iterator[tuple[Any, Any, str, str]]:
    """Every place a value can be planted: ``(container, key, path of the value, path of
    the container)``; a key planted in a mapping is reported at the mapping's path."""
    if isinstance(value, dict):
        yield value, None, path, path  # a new key in this mapping
        for k, v in value.items():
            yield value, k, path + _step(k), path
            yield from _slots(v, path + _step(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield value, i, f"{path}[{i}]", path
            yield from _slots(v, f"{path}[{i}]")


def plant(body: dict[str, Any], where: int, value: Any, key: Any) -> str:
    """Plant ``value`` (or ``key``, at a mapping) at slot number ``where`` of ``body``;
    returns the path the refusal must name."""
    slots: list[tuple[Any, Any, str, str]] = [("model", body, "model", "model")]
    for name in sorted(body):
        if name != "model":
            if name != "messages":  # a keyword replaced whole (messages: a shape error)
                slots.append((name, body, name, name))
            slots.extend((c, k, p, cp) for c, k, p, cp in _slots(body[name], name))
    container, slot, path, container_path = slots[where % len(slots)]
    if isinstance(container, str):  # a top-level keyword: replaced by the value
        body[container] = value if container != "model" else "llama" + LONE[0]
        return path
    if slot is None:
        container[key] = "x"
        return container_path
    container[slot] = value
    return path


def _request(messages: list[Any], extra: dict[str, Any], tools: bool) -> dict[str, Any]:
    return {"messages": messages, **extra, **({"tools": copy.deepcopy(TOOLS)} if tools else {})}


requests = st.builds(_request, conversations, keywords, st.booleans())
plantings = st.none() | st.tuples(st.integers(0, 10_000), hostile, hostile_keys)


def build(
    model: str, request: dict[str, Any], planting: Any, *, images: bool
) -> tuple[dict[str, Any], str | None]:
    body = {"model": model, **request}
    if not images:  # the emulator serves no vision model
        body["messages"] = [_no_images(m) for m in body["messages"]]
    if planting is None:
        return body, None
    where, value, key = planting
    return body, plant(body, where, value, key)


def _no_images(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    if isinstance(content, list):
        return {**m, "content": content[0]["text"]}
    return m


def tally(outcome: str) -> None:
    FIGURES[outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    print("\nFIGURES payload fuzz:", dict(sorted(FIGURES.items())))


def _refusal_ok(exc: BaseException, planted: str) -> bool:
    if not isinstance(exc, (tg.InvalidMessages, tg.InvalidRequest)):
        return False
    return exc.field == planted


# -- counting, every family -------------------------------------------------------------------


@settings(SETTINGS, max_examples=300)
@given(model=st.sampled_from(FAMILIES), request=requests, planting=plantings)
def test_every_family_counts_a_valid_request_and_names_the_planted_value(
    model: str, request: dict[str, Any], planting: Any
) -> None:
    body, planted = build(model, request, planting, images=True)
    kind = "planted" if planted else "clean"
    refused: Exception | None = None
    try:
        n = tg.count_tokens(**body)
    except Exception as exc:
        refused = exc
    tally(f"count {kind}: {'counted' if refused is None else type(refused).__name__}")
    if TALLY:
        return
    if refused is not None:
        assert planted is not None, f"a valid request was refused: {refused!r}"
        assert _refusal_ok(refused, planted), f"{refused!r} (planted at {planted})"
        return
    assert planted is None, f"a value the SDKs cannot send was counted (at {planted})"
    assert n > 0


# -- the guard, through the real SDKs ------------------------------------------------------------


@pytest.fixture(scope="module")
def em() -> Iterator[Emulator]:
    with running(model=list(SERVED), tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield em


def _client(em: Emulator, sdk: str) -> Any:
    if sdk == "groq":
        return groq.Groq(base_url=em.root_url, api_key=PLANTED_KEY, max_retries=0)
    return openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)


@settings(SETTINGS, max_examples=120)
@given(
    model=st.sampled_from(SERVED),
    request=requests,
    planting=plantings,
    entry=st.sampled_from(["instrument openai", "instrument groq", "guard"]),
)
def test_the_guard_serves_a_valid_request_and_refuses_the_planted_one_before_sending(
    em: Emulator, model: str, request: dict[str, Any], planting: Any, entry: str
) -> None:
    body, planted = build(model, request, planting, images=False)
    lim = TrackingLimiter(tpm=10_000_000, rpm=10_000_000, window=1.0)
    client = _client(em, entry.removeprefix("instrument "))
    if entry == "guard":
        # A decorated function sends what it is given; only counted keywords are read.
        body = {k: v for k, v in body.items() if k in ("model", "messages", "tools")}
        if planted is not None and not planted.startswith(("model", "messages", "tools")):
            planted = None  # planted in a keyword the function no longer sends

        @tg.guard(limiter=lim)
        def ask(messages: Any, model: str, tools: Any = None) -> Any:
            extra = {} if tools is None else {"tools": tools}
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=8, **extra
            )

        call: Any = ask
    else:
        tg.instrument(client, limiter=lim)
        call = client.chat.completions.create
        body["max_tokens"] = 8
    before = len(em.log)
    kind = "planted" if planted else "clean"
    refused: Exception | None = None
    try:
        with tg.budget(tokens=10**9) as spent:
            call(**body)
    except Exception as exc:
        refused = exc
    finally:
        client.close()
    outcome = "served" if refused is None else type(refused).__name__
    if refused is not None:  # what a refusal left behind, if anything
        outcome += " (sent)" if len(em.log) > before else ""
        outcome += " (reserved)" if lim.reservations else ""
        outcome += " (leaked)" if lim.leaked() else ""
    tally(f"{entry} {kind}: {outcome}")
    if TALLY:
        return
    if refused is not None:
        assert planted is not None, f"a valid request failed: {refused!r}"
        assert _refusal_ok(refused, planted), f"{refused!r} (planted at {planted})"
        assert len(em.log) == before, "a refused request reached the server"
        assert lim.reservations == [], "a refused request was admitted by the limiter"
        assert spent.used == 0, "a refused request was charged to the budget"
        return
    assert planted is None, f"a value the SDKs cannot send was served (at {planted})"
    assert len(em.log) == before + 1
    assert lim.leaked() == []


# -- the issue's cases, one by one -------------------------------------------------------------

S = "\ud800"


def _valid_body() -> dict[str, Any]:
    """A request with a tool round, an image part and a tool definition."""
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
    return {"model": LLAMA, "messages": [user, *_tool_round("call_a", "{}", "ok")], "tools": TOOLS}


def _loop() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


#: The issue's cases: where a value the SDKs cannot send is put, the value, and the field
#: the refusal must name.
ISSUE_CASES: dict[str, tuple[str, Any, str]] = {
    "tool arguments": ("messages[1].tool_calls[0].function.arguments", '{"q": "a' + S + '"}', ""),
    "tool arguments dict": ("messages[1].tool_calls[0].function.arguments", {"q": S}, ".q"),
    "nan in arguments": ("messages[1].tool_calls[0].function.arguments", {"n": math.nan}, ".n"),
    "tool_call_id": ("messages[2].tool_call_id", "call_" + S, ""),
    "image url": ("messages[0].content[1].image_url.url", "https://x/" + S, ""),
    "model": ("model", "llama" + S, ""),
    "tool description": ("tools[0].function.description", "Look " + S, ""),
    "set value": ("tools[0].function.parameters.required", {"q"}, ""),
    "user": ("user", "u" + S, ""),
    "a list that contains itself": ("tools[0].function.parameters.enum", _loop(), "[0][0]"),
}
#: Keys JSON cannot spell, put in a mapping: the refusal names the mapping.
KEY_CASES: dict[str, tuple[str, Any]] = {
    "tuple key": ("tools[0].function.parameters", ("a", 1)),
    "object key": ("messages[1]", object()),
}


def _issue_case(name: str) -> tuple[dict[str, Any], type[Exception], str]:
    """The valid body with one case planted, the error and the field it must name."""
    body = copy.deepcopy(_valid_body())
    if name in KEY_CASES:
        where, key = KEY_CASES[name]
        value, field = "x", where
    else:
        where, value, suffix = ISSUE_CASES[name]
        key, field = None, where + suffix
    parts = [p for p in where.replace("[", ".").replace("]", "").split(".") if p]
    container: Any = body
    for part in parts[:-1] if key is None else parts:
        container = container[int(part) if part.isdigit() else part]
    if key is None:
        container[parts[-1]] = value
    else:
        container[key] = value
    error = tg.InvalidMessages if field.startswith("messages") else tg.InvalidRequest
    return body, error, field


def _named(exc: Exception, field: str) -> bool:
    """Whether ``exc`` names ``field`` (a loop: the path down to where the walk gave up)."""
    named = getattr(exc, "field", None)
    if field.endswith("[0][0]"):
        return isinstance(named, str) and named.startswith(field) and "deeper" in str(exc)
    return named == field


CASES = [*ISSUE_CASES, *KEY_CASES]


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("case", CASES)
def test_every_family_refuses_the_issues_payloads_naming_the_field(case: str, model: str) -> None:
    body, error, field = _issue_case(case)
    if body["model"] == LLAMA:
        body["model"] = model
    with pytest.raises(error) as refused:
        tg.count_tokens(**body)
    assert _named(refused.value, field)
    assert "expected" in str(refused.value)


@pytest.mark.parametrize("sdk", ["openai", "groq"])
@pytest.mark.parametrize("case", [c for c in CASES if c != "image url"])  # no vision model
def test_an_instrumented_client_refuses_them_before_holding_or_sending(
    em: Emulator, sdk: str, case: str
) -> None:
    body, error, field = _issue_case(case)
    body["messages"] = [_no_images(m) for m in body["messages"]]
    lim = TrackingLimiter(tpm=10_000_000, rpm=10_000_000, window=1.0)
    client = tg.instrument(_client(em, sdk), limiter=lim)
    before = len(em.log)
    try:
        with pytest.raises(error) as refused, tg.budget(tokens=10**9) as spent:
            client.chat.completions.create(max_tokens=8, **body)
    finally:
        client.close()
    assert _named(refused.value, field)
    assert len(em.log) == before
    assert lim.reservations == []
    assert spent.used == 0


def test_what_the_sdks_do_send_is_served(em: Emulator) -> None:
    """Int keys where JSON allows them, the SDKs' NOT_GIVEN, a reply's message object sent
    back, an escaped lone surrogate inside tool arguments (valid JSON): served, and
    counted as the server counts them."""
    lim = TrackingLimiter(tpm=10_000_000, rpm=10_000_000, window=1.0)
    client = tg.instrument(_client(em, "openai"), limiter=lim)
    try:
        first: Any = client.chat.completions.create(
            model=LLAMA,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            logit_bias={1234: -100},
            seed=openai.NOT_GIVEN,
        )
        for model in SERVED:
            msgs: Any = [
                {"role": "user", "content": "hi"},
                first.choices[0].message,
                *_tool_round("call_a", '{"q": "\\ud800 \\udfff"}', "ok"),
            ]
            reply: Any = client.chat.completions.create(model=model, messages=msgs, max_tokens=8)
            assert reply.usage.prompt_tokens == tg.count_tokens(msgs, model=model)
    finally:
        client.close()
    assert lim.leaked() == []
