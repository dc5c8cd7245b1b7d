"""The model table: built-in entries, user overrides, unknown models."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import structlog

import tokenguard as tg
from tokenguard import models
from tokenguard.emulator import BUILTIN_MODELS, running


@pytest.fixture
def restore_table() -> Iterator[None]:
    saved = dict(models._table)
    yield
    models._table = saved
    models._warned.clear()
    models._unknown.clear()


# Every chat model Groq lists (shared GROQ.md, "Models Groq lists", late 2026).
GROQ_CHAT_MODELS = (
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
    "meta-llama/llama-4-scout-17b-16e-instruct",
    "meta-llama/llama-4-maverick-17b-128e-instruct",
    "qwen/qwen3-32b",
    "moonshotai/kimi-k2-instruct-0905",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "openai/gpt-oss-safeguard-20b",
    "groq/compound",
    "groq/compound-mini",
)

# The tokenizer and template identifiers the counters build against.
FAMILIES = {
    "llama-3.1-8b-instant": ("llama3", "llama3.1"),
    "llama-3.3-70b-versatile": ("llama3", "llama3.1"),
    "llama3-8b-8192": ("llama3", "llama3"),
    "llama3-70b-8192": ("llama3", "llama3"),
    "meta-llama/llama-4-scout-17b-16e-instruct": ("llama4", "llama4"),
    "meta-llama/llama-4-maverick-17b-128e-instruct": ("llama4", "llama4"),
    "qwen/qwen3-32b": ("qwen3", "qwen3"),
    "moonshotai/kimi-k2-instruct": ("kimi", "kimi"),
    "moonshotai/kimi-k2-instruct-0905": ("kimi", "kimi"),
    "openai/gpt-oss-20b": ("o200k_harmony", "harmony"),
    "openai/gpt-oss-120b": ("o200k_harmony", "harmony"),
    "openai/gpt-oss-safeguard-20b": ("o200k_harmony", "harmony"),
    "groq/compound": ("unknown", "compound"),
    "groq/compound-mini": ("unknown", "compound"),
}


def test_every_chat_model_groq_lists_is_in_the_table_with_its_family() -> None:
    for name in GROQ_CHAT_MODELS:
        assert models.is_known_model(name), name
        assert not tg.get_model(name).decommissioned, name
    for name, family in FAMILIES.items():
        info = tg.get_model(name)
        assert (info.tokenizer, info.template) == family, name


def test_every_entry_is_valid() -> None:
    builtin = {info.name for info in models._BUILTIN}
    for name, info in models.known_models().items():
        if name not in builtin and info.name not in builtin:
            continue  # registered by the tests (conftest), not Groq's table
        assert info.name == name
        assert 0 < info.max_completion_tokens <= info.context_window <= 262_144, name
        assert info.template is None or info.template in models.TEMPLATES, name
        if info.decommissioned:
            continue
        free, developer = info.limits["free"], info.limits["developer"]
        assert free is not None, name
        assert None not in (free.tpm, free.rpm, free.rpd), name
        if developer is not None:  # the paid plan: more of everything, no TPD
            assert developer.tpd is None, name
            for attr in ("tpm", "rpm", "rpd"):
                assert getattr(developer, attr) > getattr(free, attr), (name, attr)


def test_groq_published_values() -> None:
    info = tg.get_model("llama-3.3-70b-versatile")
    assert (info.context_window, info.max_completion_tokens) == (131_072, 32_768)
    assert info.limits["free"] == tg.Limits(tpm=12_000, rpm=30, tpd=100_000, rpd=1_000)
    assert info.limits["developer"] == tg.Limits(tpm=300_000, rpm=1_000, rpd=500_000)
    assert info.exact
    assert tg.get_model("llama-3.1-8b-instant").tier_limits("free") == tg.Limits(
        tpm=6_000, rpm=30, tpd=500_000, rpd=14_400
    )
    kimi = tg.get_model("moonshotai/kimi-k2-instruct-0905")
    assert (kimi.context_window, kimi.max_completion_tokens) == (262_144, 16_384)
    assert kimi.tier_limits("free") == tg.Limits(tpm=10_000, rpm=60, tpd=300_000, rpd=1_000)
    assert kimi.tier_limits("developer") is None  # not published: the user registers it
    assert tg.get_model("qwen/qwen3-32b").tier_limits("free") == tg.Limits(
        tpm=6_000, rpm=60, tpd=500_000, rpd=1_000
    )
    safeguard = tg.get_model("openai/gpt-oss-safeguard-20b")
    assert safeguard.exact  # harmony over o200k, as gpt-oss
    assert safeguard.tier_limits("developer") == tg.Limits(tpm=150_000, rpm=1_000, rpd=500_000)
    compound = tg.get_model("groq/compound")
    assert compound.tier_limits("free") == tg.Limits(tpm=70_000, rpm=30, rpd=250)
    assert compound.tier_limits("developer") == tg.Limits(tpm=200_000, rpm=200, rpd=20_000)
    assert not compound.exact
    assert tg.get_model("openai/gpt-oss-20b").exact  # harmony over o200k
    assert tg.get_model("openai/gpt-oss-20b").limits["free"] == tg.Limits(
        tpm=8_000, rpm=30, tpd=200_000, rpd=1_000
    )
    assert tg.get_model("openai/gpt-oss-120b").context_window == 131_072
    assert tg.get_model("qwen/qwen3-32b").exact
    assert tg.get_model("mixtral-8x7b-32768").decommissioned


def test_table_agrees_with_the_emulator_where_both_know_a_model() -> None:
    for name, spec in BUILTIN_MODELS.items():
        if not models.is_known_model(name):
            continue
        info = tg.get_model(name)
        assert info.context_window == spec.context_window, name
        assert info.max_completion_tokens == (spec.max_completion_tokens or spec.context_window)
        assert info.decommissioned == spec.decommissioned or name.startswith("llama3-"), name
        if spec.tpm and info.limits["free"] is not None:
            free = info.limits["free"]
            assert (free.tpm, free.rpm, free.tpd, free.rpd) == (
                spec.tpm,
                spec.rpm,
                spec.tpd,
                spec.rpd,
            ), name


def test_exact_means_a_known_template_with_its_tokenizer() -> None:
    pairs = {
        ("llama3", "llama3"),
        ("llama3", "llama3.1"),
        ("llama4", "llama4"),
        ("o200k_harmony", "harmony"),
        ("qwen3", "qwen3"),
    }
    for name, info in models.known_models().items():
        assert info.exact == ((info.tokenizer, info.template) in pairs), name
    assert {n for n, i in models.known_models().items() if i.exact} >= {
        "llama3-8b-8192",
        "llama3-70b-8192",
        "llama-3.1-8b-instant",
        "llama-3.3-70b-versatile",
        "openai/gpt-oss-20b",
        "openai/gpt-oss-120b",
    }
    # A template with another family's tokenizer is not exact (and not counted as such).
    assert not tg.ModelInfo("m", 8_192, 8_192, "llama3", "harmony").exact
    assert not tg.ModelInfo("m", 8_192, 8_192, "o200k_harmony", "llama3.1").exact


@pytest.mark.usefixtures("restore_table")
def test_register_overrides_fields_and_adds_models() -> None:
    developer = tg.Limits(tpm=250_000, rpm=1_000)
    info = tg.register_model(
        "llama-3.1-8b-instant",
        limits={"free": tg.Limits(tpm=6_000, rpm=30), "developer": developer},
    )
    assert tg.get_model("llama-3.1-8b-instant") is info
    assert info.context_window == 131_072  # kept
    assert info.tier_limits("developer") == developer

    added = tg.register_model(tg.ModelInfo("my-model", 4_096, 1_024, "llama3", "llama3"))
    assert tg.get_model("my-model") is added
    assert tg.count_tokens([{"role": "user", "content": "Hello"}], model="my-model") == 11

    fresh = tg.register_model("another-model", context_window=16_384)
    assert (fresh.context_window, fresh.tokenizer, fresh.exact) == (16_384, "unknown", False)


@pytest.mark.usefixtures("restore_table")
def test_counting_follows_a_changed_entry() -> None:
    messages = [{"role": "user", "content": "Hello"}]
    tg.register_model(
        "switching-model", context_window=8_192, tokenizer="llama3", template="llama3"
    )
    assert tg.count_tokens(messages, model="switching-model") == 11
    tg.register_model("switching-model", template="llama3.1")
    assert tg.count_tokens(messages, model="switching-model") == 36


@pytest.mark.usefixtures("restore_table")
def test_unknown_models_get_defaults_and_one_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        first = tg.get_model("mystery-model")
        second = tg.get_model("mystery-model")
    assert first is second
    assert first.context_window == models.UNKNOWN_MODEL_DEFAULTS["context_window"]
    assert [e["event"] for e in logs] == ["tokenguard.models.unknown"]
    assert logs[0]["model"] == "mystery-model"
    assert not models.is_known_model("mystery-model")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"context_window": 0}, "context_window"),
        ({"context_window": "big"}, "context_window"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"template": "chatml"}, "template"),
        ({"limits": {"free": {"tpm": 5}}}, "limits"),
        ({"flavour": "vanilla"}, "unknown ModelInfo field"),
    ],
)
@pytest.mark.usefixtures("restore_table")
def test_bad_entries_raise_configuration_error(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(tg.ConfigurationError, match=fragment):
        tg.register_model("llama3-8b-8192", **kwargs)


def test_bad_limits_and_tiers() -> None:
    with pytest.raises(tg.ConfigurationError, match="tpm must be positive"):
        tg.Limits(tpm=0)
    with pytest.raises(tg.ConfigurationError, match="rpm must be an int"):
        tg.Limits(rpm=1.5)  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigurationError, match="unknown tier 'enterprise'"):
        tg.get_model("llama3-8b-8192").tier_limits("enterprise")
    with pytest.raises(tg.ConfigurationError, match="expects a ModelInfo"):
        tg.register_model(42)  # type: ignore[arg-type]


def test_entries_are_frozen() -> None:
    info = tg.get_model("llama3-8b-8192")
    with pytest.raises(AttributeError):
        info.context_window = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.limits["free"] = None  # type: ignore[index]


@pytest.mark.usefixtures("restore_table")
def test_aliases_resolve_to_the_same_entry_and_overrides_still_win() -> None:
    info = tg.register_model(
        tg.ModelInfo("acme/model-v2", 32_768, 4_096, "llama3", "llama3.1", aliases=("acme/model",))
    )
    assert tg.get_model("acme/model") is info is tg.get_model("acme/model-v2")
    assert models.is_known_model("acme/model")
    assert "acme/model" not in models.known_models()  # listed once, by name
    messages = [{"role": "user", "content": "Hello"}]
    assert tg.count_tokens(messages, model="acme/model") == tg.count_tokens(
        messages, model="acme/model-v2"
    )
    # An override through the alias changes the model's entry, under both names.
    wider = tg.register_model("acme/model", context_window=65_536)
    assert wider.name == "acme/model-v2"
    assert tg.get_model("acme/model") is wider is tg.get_model("acme/model-v2")
    # A new entry without the alias drops it; unregistering drops name and aliases.
    tg.register_model(dataclasses.replace(wider, aliases=("acme/model-latest",)))
    assert not models.is_known_model("acme/model")
    assert tg.get_model("acme/model-latest").context_window == 65_536
    models.unregister_model("acme/model-latest")
    assert not models.is_known_model("acme/model-v2")
    assert not models.is_known_model("acme/model-latest")


@pytest.mark.usefixtures("restore_table")
def test_a_built_in_entry_is_overridden_by_register_model() -> None:
    name = "moonshotai/kimi-k2-instruct-0905"
    mine = tg.register_model(name, context_window=131_072, limits={"developer": tg.Limits(tpm=1)})
    assert tg.get_model(name) is mine
    assert (mine.context_window, mine.max_completion_tokens) == (131_072, 16_384)
    assert mine.tier_limits("developer") == tg.Limits(tpm=1)


@pytest.mark.parametrize(
    ("aliases", "fragment"),
    [
        ("acme/model", "aliases"),
        (("",), "aliases"),
        ((3,), "aliases"),
        (("llama-3.1-8b-instant",), "is the name of another model"),
    ],
)
@pytest.mark.usefixtures("restore_table")
def test_bad_aliases_raise_configuration_error(aliases: object, fragment: str) -> None:
    with pytest.raises(tg.ConfigurationError, match=fragment):
        tg.register_model(
            tg.ModelInfo("acme/model", 8_192, 8_192, aliases=aliases)  # type: ignore[arg-type]
        )
    assert tg.get_model("llama-3.1-8b-instant").name == "llama-3.1-8b-instant"


# Real requests with the prompt_tokens Groq billed (copies of shared groq-cases/).
CASES = ("gptoss_cases.json", "other_models_cases.json")


def _billed_cases() -> list[Any]:
    cases: list[Any] = []
    for name in CASES:
        path = pathlib.Path(__file__).parent / name
        for case in json.loads(path.read_text(encoding="utf-8")):
            body = dict(case["request"])
            tools = "tools" if body.get("tools") else "plain"
            name = f"{body['model']}-{tools}"
            cases.append(pytest.param(body, case["prompt_tokens"], id=name))
    return cases


@pytest.mark.parametrize(("body", "billed"), _billed_cases())
def test_every_table_entry_counts_billed_requests_never_below_the_server(
    body: dict[str, Any], billed: int
) -> None:
    # Exact families meet the bill; Kimi K2 (no tokenizer at hand) and compound are
    # bounds: never below what Groq billed.
    body = dict(body)
    messages, model = body.pop("messages"), body.pop("model")
    for key in ("stream", "n", "stream_options", "max_tokens", "max_completion_tokens"):
        body.pop(key, None)
    assert models.is_known_model(model)
    assert tg.count_tokens(messages, model=model, **body) >= billed


def test_compound_reserves_its_unseen_prompt_until_usage_teaches_the_counter(
    events: list[tg.events.Event],
) -> None:
    # The emulator bills 6,000 tokens of "server-side tool" text on every prompt, as
    # Groq's compound systems do (4,000-14,000 for a one-line question).
    limits: dict[str, Any] = {"tpm": 200_000, "rpm": 1_000, "window": 1.0}
    with running(model="groq/compound", hidden_prompt_tokens=6_000, **limits) as em:
        client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x"), **limits)
        with tg.budget(tokens=1_000_000) as b:
            for question in ("What is the weather in Paris today?", "Who won the 2022 final?"):
                client.chat.completions.create(
                    model="groq/compound",
                    messages=[{"role": "user", "content": question}],
                    max_tokens=16,
                )
        calls = [e for e in events if isinstance(e, tg.events.GuardRequest)]
    first, second = calls
    assert first.input_tokens is not None
    assert second.input_tokens is not None
    assert first.input_tokens > 6_000
    # Before any usage: the visible estimate plus the documented allowance, above the bill.
    assert first.estimated_tokens >= models.COMPOUND_UNSEEN_PROMPT_TOKENS
    assert first.estimated_tokens >= first.input_tokens + 16
    # After one usage: learned (no allowance), still never below the bill, and tighter.
    assert second.input_tokens + 16 <= second.estimated_tokens < first.estimated_tokens
    # Charged by usage: the budget and the limiter hold what the server billed.
    billed = [first.input_tokens + 16, second.input_tokens + 16]
    assert [first.output_tokens, second.output_tokens] == [16, 16]
    assert b.used == sum(billed)
    assert [first.limit_tokens, second.limit_tokens] == billed


def test_the_unseen_allowance_stops_once_the_count_has_learned() -> None:
    compound = tg.get_model("groq/compound")
    assert models.unseen_prompt_allowance(compound, 150, 150) == 14_000
    assert models.unseen_prompt_allowance(compound, 7_000, 150) == 0  # learned from usage
    plain = tg.get_model("llama-3.1-8b-instant")
    assert models.unseen_prompt_allowance(plain, 150, 150) == 0
    with pytest.raises(tg.ConfigurationError, match="unseen_prompt_tokens"):
        tg.ModelInfo("m", 8_192, 8_192, unseen_prompt_tokens=-1)
