"""Models the table lacks, asked of the server's GET /models/{model}: tried as a new user
would, through the real openai and groq clients (and a decorated function) against the
emulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
from emulator_support import client_for
from fake_clock import FakeClock

import tokenguard as tg
from tokenguard import _discovery
from tokenguard._discovery import MAX_TOKENS, ModelDirectory
from tokenguard.emulator import Emulator, ModelSpec, running

NEW = "acme/long-context-model"  # served by the emulator, unknown to the table
WINDOW = 262_144
SPEC = ModelSpec(NEW, WINDOW, "llama3.1", 0, 0, 0, 0, max_completion_tokens=16_384)


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(models=[SPEC]) as server:
        yield server


def lookups(em: Emulator) -> list[str | None]:
    """The models the emulator was asked about on GET /models/{model}."""
    return [r.model for r in em.log if r.endpoint == "model"]


def named(events: list[tg.events.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == name]


def make(kind: str, em: Emulator, *, is_async: bool = False) -> Any:
    if kind == "openai":
        cls: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(base_url=em.base_url, api_key="x")
    cls = groq.AsyncGroq if is_async else groq.Groq
    return cls(base_url=em.root_url, api_key="x")


def long_conversation(turns: int) -> list[dict[str, str]]:
    # About 20,000 tokens: far past the 8,192 an unknown model would get.
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 25
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: {text}"}
        for i in range(turns)
    ]


@pytest.mark.parametrize("kind", ["openai", "groq"])
def test_an_unknown_model_gets_its_real_window_from_the_server(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make(kind, em))
    messages = long_conversation(60)
    reply = client.chat.completions.create(model=NEW, messages=messages, max_tokens=8)
    assert reply.usage.prompt_tokens > 20_000  # sent whole: not cut to 8,192
    (found,) = named(events, "tokenguard.models.discovered")
    assert (found["model"], found["context_window"], found["max_completion_tokens"]) == (
        NEW,
        WINDOW,
        16_384,
    )
    assert found["base_url"] == em.base_url
    assert named(events, "tokenguard.models.unknown") == []
    (request,) = named(events, "tokenguard.guard.request")
    assert request["tokenguard.fit"] == "none"
    # Asked once: the next calls use what the server said.
    client.chat.completions.create(model=NEW, messages=messages, max_tokens=8)
    assert lookups(em) == [NEW]


@pytest.mark.parametrize("kind", ["openai", "groq"])
async def test_async_clients_discover_too(
    kind: str, em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make(kind, em, is_async=True))
    reply = await client.chat.completions.create(
        model=NEW, messages=long_conversation(60), max_tokens=8
    )
    assert reply.usage.prompt_tokens > 20_000
    assert [e["context_window"] for e in named(events, "tokenguard.models.discovered")] == [WINDOW]


def test_a_window_over_the_server_s_is_still_fitted(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = tg.instrument(make("openai", em))
    messages = long_conversation(800)  # about 270,000 tokens: more than the window
    reply = client.chat.completions.create(model=NEW, messages=messages, max_tokens=8)
    assert 200_000 < reply.usage.prompt_tokens <= WINDOW - 8
    assert named(events, "tokenguard.guard.request")[0]["tokenguard.fit"] == "truncate"


def test_a_decorated_function_asks_the_guard_s_base_url(
    em: Emulator, events: list[tg.events.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "test-key")
    client = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard(base_url=em.base_url)
    def ask(messages: Any, model: str = NEW, max_tokens: int = 8) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    reply = ask(long_conversation(60))
    assert reply.usage.prompt_tokens > 20_000
    assert lookups(em) == [NEW]
    assert [e["context_window"] for e in named(events, "tokenguard.models.discovered")] == [WINDOW]


def test_without_a_key_the_decorated_lookup_is_refused_and_says_so(
    em: Emulator, events: list[tg.events.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    info = ModelDirectory().discover(em.base_url, NEW)
    (failed,) = named(events, "tokenguard.models.discovery_failed")
    assert (failed["reason"], failed["status"]) == ("refused", 401)
    assert info.context_window == failed["context_window"] == 8_192


def test_reset_defaults_forgets_discovered_models(em: Emulator) -> None:
    _discovery.discover(em.base_url, NEW, openai.OpenAI(base_url=em.base_url, api_key="x"))
    assert _discovery.model_info(em.base_url, NEW).context_window == WINDOW
    tg.reset_defaults()
    assert _discovery.default_directory().due(em.base_url, NEW)


def test_the_table_wins_and_is_never_looked_up(em: Emulator) -> None:
    client = tg.instrument(make("openai", em))
    tg.register_model(NEW, context_window=100_000, max_completion_tokens=4_096)
    try:
        client.chat.completions.create(model=NEW, messages=[{"role": "user", "content": "Hi"}])
        assert lookups(em) == []
        assert _discovery.model_info(em.base_url, NEW).context_window == 100_000
    finally:
        tg.models.unregister_model(NEW)


def test_lookups_are_cached_per_base_url_and_model_for_a_bounded_time(em: Emulator) -> None:
    clock = FakeClock()
    directory = ModelDirectory(ttl=600.0, failure_ttl=30.0, clock=clock)
    client = client_for(em)
    assert directory.discover(em.base_url, NEW, client).context_window == WINDOW
    clock.advance(599.0)
    directory.discover(em.base_url, NEW, client)
    assert lookups(em) == [NEW]
    # Another endpoint is another server: asked on its own.
    other = em.base_url.replace("127.0.0.1", "localhost")
    directory.discover(other, NEW, openai.OpenAI(base_url=other, api_key="x", max_retries=0))
    assert lookups(em) == [NEW, NEW]
    clock.advance(1.0)  # the first answer's lifetime is over: asked again
    assert directory.discover(em.base_url, NEW, client).context_window == WINDOW
    assert lookups(em) == [NEW, NEW, NEW]


def test_a_404_is_an_event_and_the_documented_defaults(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    clock = FakeClock()
    directory = ModelDirectory(failure_ttl=30.0, clock=clock)
    client = client_for(em)
    info = directory.discover(em.base_url, "acme/no-such-model", client)
    assert info.context_window == tg.models.UNKNOWN_MODEL_DEFAULTS["context_window"]
    (failed,) = named(events, "tokenguard.models.discovery_failed")
    assert (failed["reason"], failed["status"], failed["retry_s"]) == ("not_found", 404, 30.0)
    assert [e["model"] for e in named(events, "tokenguard.models.unknown")] == [
        "acme/no-such-model"
    ]
    directory.discover(em.base_url, "acme/no-such-model", client)
    clock.advance(30.0)
    directory.discover(em.base_url, "acme/no-such-model", client)
    assert lookups(em) == ["acme/no-such-model"] * 2  # retried once the failure expired


def test_a_base_url_s_credentials_never_reach_an_event(events: list[tg.events.Event]) -> None:
    with running(models=[SPEC]) as server:
        secret = server.base_url.replace("://", "://svc:S3cretP4ss@") + "?key=S3cretK3y"
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        ModelDirectory().discover(secret, NEW, client)
        ModelDirectory().discover(secret, "acme/no-such-model", client)
    shown = [
        e.fields()["base_url"] for e in events if e.name.startswith("tokenguard.models.discover")
    ]
    assert shown == [server.base_url] * 2
    assert not [e for e in events if "s3cret" in repr(e.fields()).lower()]


@pytest.mark.parametrize("with_client", [True, False])
async def test_an_unreachable_server_is_an_event_and_the_defaults(
    with_client: bool, events: list[tg.events.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "test-key")
    with running(models=[SPEC]) as gone:
        base = gone.base_url
    client = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) if with_client else None
    info = await ModelDirectory().discover_async(base, NEW, client)
    assert info.context_window == 8_192
    (failed,) = named(events, "tokenguard.models.discovery_failed")
    assert (failed["reason"], failed["status"]) == ("unreachable", None)


@pytest.mark.parametrize(
    "window", [MAX_TOKENS + 1, 1 << 40], ids=["just-over-the-ceiling", "a-terabyte"]
)
def test_a_hostile_window_is_refused(window: int, events: list[tg.events.Event]) -> None:
    hostile = ModelSpec(NEW, window, "llama3.1", 0, 0, 0, 0)
    with running(models=[hostile]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        info = ModelDirectory().discover(server.base_url, NEW, client)
    assert info.context_window == 8_192
    (failed,) = named(events, "tokenguard.models.discovery_failed")
    assert failed["reason"] == "invalid"
    assert named(events, "tokenguard.models.discovered") == []


def test_a_window_at_the_ceiling_is_believed(events: list[tg.events.Event]) -> None:
    big = ModelSpec(NEW, MAX_TOKENS, "llama3.1", 0, 0, 0, 0, max_completion_tokens=1 << 30)
    with running(models=[big]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        info = ModelDirectory().discover(server.base_url, NEW, client)
    # A completion limit past the ceiling is refused and the window used instead.
    assert (info.context_window, info.max_completion_tokens) == (MAX_TOKENS, MAX_TOKENS)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"context_window": "131072"},
        {"context_window": True},
        {"context_window": 0},
        {"context_window": -5},
        {"context_window": 131_072.0},
    ],
)
def test_answers_without_a_usable_window_are_refused(payload: object) -> None:
    with pytest.raises(_discovery._Failed, match="invalid"):
        _discovery._info_from(NEW, payload)


def test_a_completion_limit_is_bounded_by_the_window() -> None:
    info = _discovery._info_from(NEW, {"context_window": 4_096, "max_completion_tokens": 8_192})
    assert (info.context_window, info.max_completion_tokens) == (4_096, 4_096)
    info = _discovery._info_from(NEW, {"context_window": 4_096})
    assert info.max_completion_tokens == 4_096
