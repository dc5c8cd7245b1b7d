"""The model table: context window, tokenizer, chat template and Groq limits per model.

Limits change often and models are retired, so they are data a user can override in
code (:func:`register_model`, which always wins), never logic; a model the table lacks
gets conservative defaults (:data:`UNKNOWN_MODEL_DEFAULTS`). This module does no I/O.
Sources and dates: docs/models.md; unknown models and compound systems:
docs/internals.md ("The model table").

Example::

    tg.register_model("my-finetune", context_window=32_768, tokenizer="llama3",
                      template="llama3.1")
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .errors import ConfigurationError
from .events import ModelsUnknown, emit

__all__ = [
    "COMPOUND_UNSEEN_PROMPT_TOKENS",
    "DEFAULT_RESERVE",
    "EXACT_TEMPLATES",
    "TEMPLATES",
    "TIERS",
    "UNKNOWN_MODEL_DEFAULTS",
    "Limits",
    "ModelInfo",
    "get_model",
    "is_known_model",
    "known_models",
    "register_model",
    "table_entry",
    "unregister_model",
    "unseen_prompt_allowance",
]

TIERS = ("free", "developer")

#: Completion tokens held for a call that gives no ``max_tokens`` (capped by the room
#: left in the context window). What Groq holds then is not documented; this is the
#: emulator's default, what the guard reserves and what ``count_request`` counts.
DEFAULT_RESERVE = 1024
#: Templates whose rendering tokenguard reproduces: Groq's Llama 3, 3.1 and Llama 4
#: templates (Llama 3 and Llama 4 tokenizers), OpenAI's harmony format (o200k_harmony,
#: gpt-oss), Qwen3's template (Qwen's tokenizer) and Kimi K2's, whose tokenizer is not at
#: hand (so never exact: a bound).
EXACT_TEMPLATES = frozenset({"llama3", "llama3.1", "llama4", "harmony", "qwen3", "kimi"})
#: Every chat template a table entry may name: the rendered ones, plus ``compound``
#: (Groq's compound systems, whose server-side tools add prompt text no client sees),
#: which is estimated conservatively and calibrated from the server's usage.
TEMPLATES = EXACT_TEMPLATES | {"compound"}
# The tokenizer each template is counted exactly with (a template missing here is a bound).
_TEMPLATE_TOKENIZER = {
    "llama3": "llama3",
    "llama3.1": "llama3",
    "llama4": "llama4",
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
    ``template`` is one of :data:`TEMPLATES` (or ``None``): ``"llama3"``, ``"llama3.1"``,
    ``"llama4"``, ``"qwen3"``, ``"kimi"``, ``"harmony"``, ``"compound"``.
    ``limits`` maps a tier (``"free"``, ``"developer"``) to its :class:`Limits`.
    ``aliases`` are other names Groq accepts for the same model: :func:`get_model` answers
    them with this entry. ``unseen_prompt_tokens`` is an allowance for prompt text the
    server adds that no client can see (Groq's compound systems bill their tools' results
    as prompt): the guard reserves it on top of the count until the counter has learned
    the model from the server's usage (see :func:`unseen_prompt_allowance`).

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
    aliases: tuple[str, ...] = ()
    unseen_prompt_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"ModelInfo.name must be a non-empty str, got {self.name!r}")
        for attr in ("context_window", "max_completion_tokens"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(
                    f"ModelInfo.{attr} of {self.name!r} must be a positive int, got {value!r}"
                )
        if self.template is not None and self.template not in TEMPLATES:
            raise ConfigurationError(
                f"ModelInfo.template of {self.name!r} must be one of "
                f"{sorted(TEMPLATES)} or None, got {self.template!r}"
            )
        aliases = self.aliases
        if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
            raise ConfigurationError(
                f"ModelInfo.aliases of {self.name!r} must be a tuple of non-empty str, "
                f"got {aliases!r}"
            )
        object.__setattr__(self, "aliases", tuple(a for a in aliases if a != self.name))
        unseen = self.unseen_prompt_tokens
        if isinstance(unseen, bool) or not isinstance(unseen, int) or unseen < 0:
            raise ConfigurationError(
                f"ModelInfo.unseen_prompt_tokens of {self.name!r} must be an int >= 0, "
                f"got {unseen!r}"
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

    def starting_limits(self, tier: str = "free") -> Limits | None:
        """The limits a limiter for ``tier`` starts from: the tier's published ones, else
        (none published for it: Scout or Kimi on developer) the free tier's, never above
        the server's; the server's headers raise them on its first answer."""
        known = self.tier_limits(tier)
        if known is None and tier != "free":
            known = self.tier_limits("free")
        return known


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


def unseen_prompt_allowance(info: ModelInfo, prompt_tokens: int, raw_prompt_tokens: int) -> int:
    """Tokens to reserve on top of a counted prompt for what the server adds unseen.

    ``info.unseen_prompt_tokens`` while the count is the raw estimate; nothing once the
    counter's calibration has learned from the server's usage that the model bills more
    than the raw estimate (the learned count then includes the unseen part), and nothing
    for a model that adds no unseen text.

    Example::

        unseen_prompt_allowance(tg.get_model("groq/compound"), 150, 150)   # 14000
    """
    if not info.unseen_prompt_tokens or prompt_tokens > raw_prompt_tokens:
        return 0
    return info.unseen_prompt_tokens


#: What a Groq compound system's server-side tools were seen to add to a one-line
#: question's prompt: 4,000 to 14,000 tokens (shared GROQ.md). The top is reserved.
COMPOUND_UNSEEN_PROMPT_TOKENS = 14_000


def _tiers(free: Limits | None, developer: Limits | None) -> dict[str, Limits | None]:
    return {"free": free, "developer": developer}


def _limits(rpm: int, rpd: int, tpm: int, tpd: int | None = None) -> Limits:
    # In the order Groq's rate-limit tables print them: RPM, RPD, TPM, TPD.
    return Limits(tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd)


# Limits read on 2026-12-04 from console.groq.com/docs/rate-limits (stored copies of the
# page: its "Free Plan" table, and its "Developer Plan" tab as transcribed on 2026-08-14;
# the Developer Plan has no TPD). Developer values for qwen3-32b and llama-4-maverick come
# from a copy of the same tab made when it still listed them; none was found for
# llama-4-scout and the Kimi K2 models (``None``: the user registers their own).
# Context windows and max completion tokens are what ``GET /openai/v1/models`` answers
# (a recorded listing of late 2025; gpt-oss-safeguard-20b from console.groq.com/docs/models).
_GPT_OSS_FREE = _limits(30, 1_000, 8_000, 200_000)
_KIMI_FREE = _limits(60, 1_000, 10_000, 300_000)

_BUILTIN: tuple[ModelInfo, ...] = (
    ModelInfo(
        "llama-3.1-8b-instant",
        131_072,
        131_072,
        "llama3",
        "llama3.1",
        _tiers(_limits(30, 14_400, 6_000, 500_000), _limits(1_000, 500_000, 250_000)),
    ),
    ModelInfo(
        "llama-3.3-70b-versatile",
        131_072,
        32_768,
        "llama3",
        "llama3.1",
        _tiers(_limits(30, 1_000, 12_000, 100_000), _limits(1_000, 500_000, 300_000)),
    ),
    ModelInfo(
        "meta-llama/llama-4-scout-17b-16e-instruct",
        131_072,
        8_192,
        "llama4",
        "llama4",
        _tiers(_limits(30, 1_000, 30_000, 500_000), None),
    ),
    ModelInfo(
        "meta-llama/llama-4-maverick-17b-128e-instruct",
        131_072,
        8_192,
        "llama4",
        "llama4",
        _tiers(_limits(30, 1_000, 6_000, 500_000), _limits(1_000, 500_000, 300_000)),
    ),
    ModelInfo(
        "qwen/qwen3-32b",
        131_072,
        40_960,
        "qwen3",
        "qwen3",
        _tiers(_limits(60, 1_000, 6_000, 500_000), _limits(1_000, 500_000, 300_000)),
    ),
    ModelInfo(
        "moonshotai/kimi-k2-instruct-0905",
        262_144,
        16_384,
        "kimi",
        "kimi",
        _tiers(_KIMI_FREE, None),
    ),
    # The first Kimi K2 release: still listed on its own, with the smaller window.
    ModelInfo(
        "moonshotai/kimi-k2-instruct",
        131_072,
        16_384,
        "kimi",
        "kimi",
        _tiers(_KIMI_FREE, None),
    ),
    ModelInfo(
        "openai/gpt-oss-20b",
        131_072,
        65_536,
        "o200k_harmony",
        "harmony",
        _tiers(_GPT_OSS_FREE, _limits(1_000, 500_000, 250_000)),
    ),
    ModelInfo(
        "openai/gpt-oss-120b",
        131_072,
        65_536,
        "o200k_harmony",
        "harmony",
        _tiers(_GPT_OSS_FREE, _limits(1_000, 500_000, 250_000)),
    ),
    ModelInfo(
        "openai/gpt-oss-safeguard-20b",
        131_072,
        65_536,
        "o200k_harmony",
        "harmony",
        _tiers(_GPT_OSS_FREE, _limits(1_000, 500_000, 150_000)),
    ),
    # Compound systems run server-side tools whose text is billed as prompt: see
    # docs/compound.md for what counting can and cannot promise for them.
    *(
        ModelInfo(
            name,
            131_072,
            8_192,
            "unknown",
            "compound",
            _tiers(_limits(30, 250, 70_000), _limits(200, 20_000, 200_000)),
            unseen_prompt_tokens=COMPOUND_UNSEEN_PROMPT_TOKENS,
        )
        for name in ("groq/compound", "groq/compound-mini")
    ),
    # Retired by Groq in 2025 (replaced by llama-3.1-8b-instant / llama-3.3-70b-versatile);
    # kept because code still names them and their counting is exact. Their limits are
    # the free tier's when they were served.
    *(
        ModelInfo(
            name,
            8_192,
            8_192,
            "llama3",
            "llama3",
            _tiers(_limits(30, 14_400, 6_000, 500_000), None),
            decommissioned=True,
        )
        for name in ("llama3-8b-8192", "llama3-70b-8192")
    ),
    ModelInfo("llama-3.1-70b-versatile", 131_072, 32_768, "llama3", "llama3.1", {}, True),
    ModelInfo("mixtral-8x7b-32768", 32_768, 32_768, "unknown", None, {}, True),
    ModelInfo("gemma2-9b-it", 8_192, 8_192, "unknown", None, {}, True),
)


def _indexed(table: dict[str, ModelInfo], info: ModelInfo) -> dict[str, ModelInfo]:
    """``table`` with ``info`` under its name and its aliases, in place of any entry
    (and that entry's aliases) it replaces."""
    old = table.get(info.name)
    if old is not None and old.name == info.name:
        for alias in old.aliases:
            if table.get(alias) is old:
                del table[alias]
    for alias in info.aliases:
        named = table.get(alias)
        if named is not None and named.name == alias:
            raise ConfigurationError(
                f"alias {alias!r} of {info.name!r} is the name of another model in the table"
            )
    table[info.name] = info
    for alias in info.aliases:
        table[alias] = info
    return table


_lock = threading.Lock()
# Copy-on-write: readers take the current dict without a lock. Keys are names and aliases.
_table: dict[str, ModelInfo] = {}
for _info in _BUILTIN:
    _indexed(_table, _info)
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
        _table = _indexed(dict(_table), info)
        for name in (info.name, *info.aliases):
            _unknown.pop(name, None)
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
        info = table.get(name)
        if info is not None:
            for key in (info.name, *info.aliases):
                if table.get(key) is info:
                    del table[key]
        _table = table
        _warned.discard(name)
        _unknown.pop(name, None)


def is_known_model(name: str) -> bool:
    """Whether the table has an entry for ``name`` (a model's name or one of its aliases)."""
    return name in _table


def table_entry(name: str) -> ModelInfo | None:
    """The table's entry for ``name`` (a name or an alias), or ``None``: no defaults, no event."""
    return _table.get(name)


def known_models() -> Mapping[str, ModelInfo]:
    """A read-only snapshot of the whole table, by model name (aliases not repeated)."""
    return MappingProxyType({k: v for k, v in _table.items() if v.name == k})


def get_model(name: str) -> ModelInfo:
    """The table entry for ``name`` (or for the model ``name`` is an alias of);
    conservative defaults (and a warning event) if unknown.

    The guard asks Groq's ``GET /models/{model}`` about a model the table does not know
    (``tokenguard._discovery``); this function itself never does I/O.

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
                ModelsUnknown(
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
