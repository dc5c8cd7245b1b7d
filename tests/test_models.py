"""The model table: built-in entries, user overrides, unknown models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import tokenguard as tg
from tokenguard import models
from tokenguard.emulator import BUILTIN_MODELS


@pytest.fixture
def restore_table() -> Iterator[None]:
    saved = dict(models._table)
    yield
    models._table = saved
    models._warned.clear()
    models._unknown.clear()


def test_groq_free_tier_values() -> None:
    info = tg.get_model("llama-3.3-70b-versatile")
    assert (info.context_window, info.max_completion_tokens) == (131_072, 32_768)
    assert info.limits["free"] == tg.Limits(tpm=12_000, rpm=30, tpd=100_000, rpd=1_000)
    assert info.limits["developer"] is None  # not published per model; user-supplied
    assert info.exact
    assert tg.get_model("llama3-8b-8192").limits["free"] == tg.Limits(
        tpm=6_000, rpm=30, tpd=500_000, rpd=14_400
    )
    assert tg.get_model("qwen/qwen3-32b").tier_limits("free") == tg.Limits(
        tpm=6_000, rpm=60, tpd=500_000, rpd=1_000
    )
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
