"""The model table: context window, tokenizer, chat template and Groq limits per model.

Limits and windows change often and models are retired, so they live here as data a
user can override in code, never in logic::

    import tokenguard as tg

    tg.register_model("my-finetune", context_window=32_768, tokenizer="llama3",
                      template="llama3.1")
    tg.get_model("llama-3.1-8b-instant").context_window   # 131072

A model the table does not know still works: :func:`get_model` answers with
conservative defaults (:data:`UNKNOWN_MODEL_DEFAULTS`) and emits one ``unknown_model``
warning event per name on ``structlog.get_logger("tokenguard")``.

Free-tier limits are the values Groq's rate-limit page showed (see shared GROQ.md).
Developer-tier limits are not given: Groq publishes them per organisation and they
change; ``limits["developer"]`` is ``None`` until the user registers their own.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .errors import ConfigurationError
from .events import UnknownModel, emit

__all__ = [
    "EXACT_TEMPLATES",
    "TIERS",
    "UNKNOWN_MODEL_DEFAULTS",
    "Limits",
    "ModelInfo",
    "get_model",
    "is_known_model",
    "known_models",
    "register_model",
    "unregister_model",
]

TIERS = ("free", "developer")
#: Templates whose rendering tokenguard reproduces: Meta's Llama 3 and 3.1 templates
#: (Llama 3 tokenizer), OpenAI's harmony format (o200k_harmony, gpt-oss), Qwen3's template
#: (Qwen's tokenizer) and Kimi K2's, whose tokenizer is not at hand (so never exact: a bound).
EXACT_TEMPLATES = frozenset({"llama3", "llama3.1", "harmony", "qwen3", "kimi"})
# The tokenizer each template is counted exactly with (a template missing here is a bound).
_TEMPLATE_TOKENIZER = {
    "llama3": "llama3",
    "llama3.1": "llama3",
    "harmony": "o200k_harmony",
    "qwen3": "qwen3",
}

Tier = Literal["free", "developer"]


@dataclass(frozen=True)
class Limits:
    """Groq's per-model limits for one tier; ``None`` means not limited or not known.

    Example::

        Limits(tpm=6_000, rpm=30, tpd=500_000, rpd=14_400)
    """

    tpm: int | None = None
    rpm: int | None = None
    tpd: int | None = None
    rpd: int | None = None

    def __post_init__(self) -> None:
        for name in ("tpm", "rpm", "tpd", "rpd"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigurationError(f"Limits.{name} must be an int or None, got {value!r}")
            if value is not None and value <= 0:
                raise ConfigurationError(f"Limits.{name} must be positive, got {value}")


def _limits_map(value: Mapping[str, Limits | None] | None) -> Mapping[str, Limits | None]:
    tiers: dict[str, Limits | None] = dict.fromkeys(TIERS)
    for tier, limits in (value or {}).items():
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigurationError(
                f"limits[{tier!r}] must be a tokenguard.Limits or None, got {type(limits).__name__}"
            )
        tiers[tier] = limits
    return MappingProxyType(tiers)


@dataclass(frozen=True)
class ModelInfo:
    """What tokenguard knows about one model.

    ``tokenizer`` names the tokenizer family: ``"llama3"`` (exact counting when
    ``template`` is ``"llama3"`` or ``"llama3.1"``), ``"o200k_harmony"`` (gpt-oss; exact
    when ``template`` is ``"harmony"``), ``"cl100k_base"``, ``"o200k_base"``, ``"qwen2"``,
    ``"llama4"`` or ``"unknown"``; the others are estimated conservatively (see
    ``tokenguard.counting``).
    ``limits`` maps a tier (``"free"``, ``"developer"``) to its :class:`Limits`.

    Example::

        ModelInfo("llama-3.1-8b-instant", context_window=131_072,
                  max_completion_tokens=131_072, tokenizer="llama3", template="llama3.1",
                  limits={"free": Limits(tpm=6_000, rpm=30, tpd=500_000, rpd=14_400)})
    """

    name: str
    context_window: int
    max_completion_tokens: int
    tokenizer: str = "unknown"
    template: str | None = None
    limits: Mapping[str, Limits | None] = field(default_factory=dict)
    decommissioned: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"ModelInfo.name must be a non-empty str, got {self.name!r}")
        for attr in ("context_window", "max_completion_tokens"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(
                    f"ModelInfo.{attr} of {self.name!r} must be a positive int, got {value!r}"
                )
        if self.template is not None and self.template not in EXACT_TEMPLATES:
            raise ConfigurationError(
                f"ModelInfo.template of {self.name!r} must be one of "
                f"{sorted(EXACT_TEMPLATES)} or None, got {self.template!r}"
            )
        object.__setattr__(self, "limits", _limits_map(self.limits))

    @property
    def exact(self) -> bool:
        """Whether tokenguard counts this model's prompts exactly: a template it reproduces
        with that template's tokenizer (Llama 3 + ``llama3``/``llama3.1``, o200k_harmony +
        ``harmony``), given the tokenizer data is installed."""
        return self.template is not None and _TEMPLATE_TOKENIZER.get(self.template) == (
            self.tokenizer
        )

    def tier_limits(self, tier: str = "free") -> Limits | None:
        """The :class:`Limits` for ``tier``, or ``None`` when not known."""
        if tier not in self.limits:
            raise ConfigurationError(
                f"unknown tier {tier!r}; expected one of {sorted(self.limits)}"
            )
        return self.limits[tier]


#: What an unknown model gets: a small window and a tokenizer family estimated with
#: the widest margin, so that guards err on the side of sending less.
UNKNOWN_MODEL_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "context_window": 8_192,
        "max_completion_tokens": 8_192,
        "tokenizer": "unknown",
        "template": None,
        "limits": {},
        "decommissioned": False,
    }
)


def _free(tpm: int, rpm: int, tpd: int, rpd: int) -> dict[str, Limits | None]:
    return {"free": Limits(tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd), "developer": None}


_BUILTIN: tuple[ModelInfo, ...] = (
    # Retired by Groq in 2025 (replaced by llama-3.1-8b-instant / llama-3.3-70b-versatile);
    # kept because code still names them and their counting is exact.
    ModelInfo(
        "llama3-8b-8192",
        8_192,
        8_192,
        "llama3",
        "llama3",
        _free(6_000, 30, 500_000, 14_400),
        decommissioned=True,
    ),
    ModelInfo(
        "llama3-70b-8192",
        8_192,
        8_192,
        "llama3",
        "llama3",
        _free(6_000, 30, 500_000, 14_400),
        decommissioned=True,
    ),
    ModelInfo(
        "llama-3.1-8b-instant",
        131_072,
        131_072,
        "llama3",
        "llama3.1",
        _free(6_000, 30, 500_000, 14_400),
    ),
    ModelInfo(
        "llama-3.3-70b-versatile",
        131_072,
        32_768,
        "llama3",
        "llama3.1",
        _free(12_000, 30, 100_000, 1_000),
    ),
    ModelInfo("llama-3.1-70b-versatile", 131_072, 32_768, "llama3", "llama3.1", {}, True),
    ModelInfo(
        "openai/gpt-oss-20b",
        131_072,
        65_536,
        "o200k_harmony",
        "harmony",
        _free(8_000, 30, 200_000, 1_000),
    ),
    ModelInfo(
        "openai/gpt-oss-120b",
        131_072,
        65_536,
        "o200k_harmony",
        "harmony",
        _free(8_000, 30, 200_000, 1_000),
    ),
    ModelInfo(
        "qwen/qwen3-32b", 131_072, 40_960, "qwen3", "qwen3", _free(6_000, 60, 500_000, 1_000)
    ),
    ModelInfo(
        "meta-llama/llama-4-scout-17b-16e-instruct",
        131_072,
        8_192,
        "llama4",
        None,
        _free(30_000, 30, 500_000, 1_000),
    ),
    ModelInfo("mixtral-8x7b-32768", 32_768, 32_768, "unknown", None, {}, True),
    ModelInfo("gemma2-9b-it", 8_192, 8_192, "unknown", None, {}, True),
)

_lock = threading.Lock()
# Copy-on-write: readers take the current dict without a lock.
_table: dict[str, ModelInfo] = {m.name: m for m in _BUILTIN}
_warned: set[str] = set()
# Default entries handed out for unknown names, so a hot path does not rebuild them.
_unknown: dict[str, ModelInfo] = {}
_UNKNOWN_MEMO_LIMIT = 1_024


def register_model(model: ModelInfo | str, /, **fields: Any) -> ModelInfo:
    """Add a model to the table or override fields of a known one; returns the new entry.

    Pass a complete :class:`ModelInfo`, or a name and the fields to set (fields not
    given keep the known entry's values, or the unknown-model defaults for a new name).

    Example::

        tg.register_model("llama-3.1-8b-instant",
                          limits={"free": tg.Limits(tpm=6_000, rpm=30),
                                  "developer": tg.Limits(tpm=250_000, rpm=1_000)})
        tg.register_model(tg.ModelInfo("my-llama", 8_192, 2_048, "llama3", "llama3"))
    """
    global _table
    if isinstance(model, ModelInfo):
        if fields:
            model = _replace(model, fields)
        info = model
    elif isinstance(model, str):
        base = _table.get(model)
        if base is None:
            info = ModelInfo(model, **{**UNKNOWN_MODEL_DEFAULTS, **fields})
        else:
            info = _replace(base, fields)
    else:
        raise ConfigurationError(
            f"register_model expects a ModelInfo or a model name, got {type(model).__name__}"
        )
    with _lock:
        table = dict(_table)
        table[info.name] = info
        _table = table
        _unknown.pop(info.name, None)
    return info


def _replace(info: ModelInfo, fields: Mapping[str, Any]) -> ModelInfo:
    allowed = {f.name for f in dataclasses.fields(ModelInfo)} - {"name"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown ModelInfo field(s) {unknown}; expected some of {sorted(allowed)}"
        )
    return dataclasses.replace(info, **fields)


def unregister_model(name: str) -> None:
    """Remove ``name`` from the table (built-in entries included); unknown names are ignored."""
    global _table
    with _lock:
        table = dict(_table)
        table.pop(name, None)
        _table = table
        _warned.discard(name)
        _unknown.pop(name, None)


def is_known_model(name: str) -> bool:
    """Whether the table has an entry for ``name``."""
    return name in _table


def known_models() -> Mapping[str, ModelInfo]:
    """A read-only snapshot of the whole table."""
    return MappingProxyType(dict(_table))


def get_model(name: str) -> ModelInfo:
    """The table entry for ``name``; conservative defaults (and a warning event) if unknown.

    Example::

        tg.get_model("llama-3.3-70b-versatile").max_completion_tokens   # 32768
    """
    info = _table.get(name)
    if info is not None:
        return info
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"model must be a non-empty str, got {name!r}")
    if name not in _warned:
        with _lock:
            first = name not in _warned
            _warned.add(name)
        if first:
            emit(
                UnknownModel(
                    model=name,
                    context_window=int(UNKNOWN_MODEL_DEFAULTS["context_window"]),
                    hint="tokenguard.register_model() sets its context window and tokenizer",
                )
            )
    info = _unknown.get(name)
    if info is None:
        info = ModelInfo(name, **UNKNOWN_MODEL_DEFAULTS)
        if len(_unknown) >= _UNKNOWN_MEMO_LIMIT:
            _unknown.clear()
        _unknown[name] = info
    return info
