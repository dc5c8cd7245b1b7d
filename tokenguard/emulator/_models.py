"""The models the emulator serves: context window, chat template and Groq limits.

The table holds Groq's published free-tier values (see GROQ.md). It lives inside the
emulator on purpose: the emulator plays the server, so it must not share data with the
client-side model table it is meant to check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "ModelSpec", "Template", "builtin_model"]

#: ``harmony`` is gpt-oss's prompt format, counted with o200k_harmony (``_harmony``);
#: ``llama4`` is Groq's Llama 4 template, counted with the Llama 4 tokenizer (``_llama4``);
#: ``qwen3`` and ``kimi`` are those models' chat templates (``_chatml``).
Template = Literal["llama3", "llama3.1", "llama4", "harmony", "qwen3", "kimi"]
_TEMPLATES = ("llama3", "llama3.1", "llama4", "harmony", "qwen3", "kimi")


@dataclass(frozen=True)
class ModelSpec:
    """One model served by the emulator, with its own limits and buckets.

    A limit of ``None`` or ``0`` means the emulator does not enforce that limit (and sends
    no header for it). ``max_completion_tokens`` caps ``max_tokens`` as Groq does for some
    models (400 when exceeded). ``decommissioned`` models answer 400 ``model_decommissioned``.

    Example::

        ModelSpec(name="llama3-8b-8192", context_window=8192, template="llama3",
                  tpm=6000, rpm=30, tpd=500_000, rpd=14_400)
    """

    name: str
    context_window: int = 8192
    template: Template = "llama3"
    tpm: int | None = 6000
    rpm: int | None = 30
    tpd: int | None = 500_000
    rpd: int | None = 14_400
    max_completion_tokens: int | None = None
    decommissioned: bool = False
    owned_by: str = "Meta"

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if self.template not in _TEMPLATES:
            raise ValueError(
                f"ModelSpec.template must be one of {_TEMPLATES}, got {self.template!r}"
            )
        if self.context_window < 1:
            raise ValueError(f"context_window must be >= 1, got {self.context_window}")
        for field in ("tpm", "rpm", "tpd", "rpd", "max_completion_tokens"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValueError(f"ModelSpec.{field} must be >= 0 or None, got {value}")

    def replace(self, **changes: object) -> ModelSpec:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        kept = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **kept)  # type: ignore[arg-type]


_CTX_128K = 131_072

# Groq free tier (GROQ.md). gpt-oss, Llama 4 and Qwen3 are counted as Groq does; Kimi K2
# with its template and o200k_base for its tokenizer (no Kimi tokenizer is at hand).
BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("llama3-8b-8192", 8192, "llama3", 6000, 30, 500_000, 14_400),
        ModelSpec("llama3-70b-8192", 8192, "llama3", 6000, 30, 500_000, 14_400),
        ModelSpec("llama-3.1-8b-instant", _CTX_128K, "llama3.1", 6000, 30, 500_000, 14_400),
        ModelSpec(
            "llama-3.3-70b-versatile",
            _CTX_128K,
            "llama3.1",
            12_000,
            30,
            100_000,
            1_000,
            max_completion_tokens=32_768,
        ),
        *(
            ModelSpec(
                name,
                _CTX_128K,
                "harmony",
                8000,
                30,
                200_000,
                1_000,
                max_completion_tokens=65_536,
                owned_by="OpenAI",
            )
            for name in (
                "openai/gpt-oss-20b",
                "openai/gpt-oss-120b",
                "openai/gpt-oss-safeguard-20b",
            )
        ),
        ModelSpec(
            "qwen/qwen3-32b",
            _CTX_128K,
            "qwen3",
            6000,
            60,
            500_000,
            1_000,
            max_completion_tokens=40_960,
            owned_by="Alibaba Cloud",
        ),
        *(
            ModelSpec(
                name,
                262_144 if name.endswith("0905") else _CTX_128K,
                "kimi",
                10_000,
                60,
                300_000,
                1_000,
                max_completion_tokens=16_384,
                owned_by="Moonshot AI",
            )
            for name in ("moonshotai/kimi-k2-instruct-0905", "moonshotai/kimi-k2-instruct")
        ),
        ModelSpec(
            "meta-llama/llama-4-scout-17b-16e-instruct",
            _CTX_128K,
            "llama4",
            30_000,
            30,
            500_000,
            1_000,
            max_completion_tokens=8192,
        ),
        ModelSpec(
            "meta-llama/llama-4-maverick-17b-128e-instruct",
            _CTX_128K,
            "llama4",
            6000,
            30,
            500_000,
            1_000,
            max_completion_tokens=8192,
        ),
        # Groq's compound systems have no TPD; their server-side tools' prompt tokens are
        # what EmulatorConfig.hidden_prompt_tokens plays.
        ModelSpec(
            "groq/compound",
            _CTX_128K,
            "harmony",
            70_000,
            30,
            None,
            250,
            max_completion_tokens=8192,
            owned_by="Groq",
        ),
        ModelSpec(
            "mixtral-8x7b-32768", 32_768, "llama3", decommissioned=True, owned_by="Mistral AI"
        ),
    )
}

DEFAULT_MODEL = "llama3-8b-8192"


def builtin_model(name: str) -> ModelSpec:
    """The built-in spec for ``name``; an unknown name gets Llama 3.1 defaults
    (131,072 context, 6,000 TPM, 30 RPM, 500,000 TPD, 14,400 RPD)."""
    spec = BUILTIN_MODELS.get(name)
    if spec is not None:
        return spec
    return ModelSpec(name, _CTX_128K, "llama3.1", 6000, 30, 500_000, 14_400)
