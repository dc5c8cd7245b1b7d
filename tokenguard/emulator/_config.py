"""The emulator's configuration and how ``running()``/the CLI options map onto it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._models import DEFAULT_MODEL, ModelSpec, builtin_model

__all__ = ["DEFAULT_MAX_TOKENS", "EmulatorConfig", "build_models"]

# Completion tokens reserved when a request gives no max_tokens (Groq does not say what it
# reserves then; 1024 is our documented choice, capped by the room left in the context).
DEFAULT_MAX_TOKENS = 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything an ``Emulator`` needs. Build it with ``running()``'s options or directly.

    - ``models``: the models served (each with its own buckets); the first is the default
      whose limits head error responses that name no known model.
    - ``window``: length of the rate "minute" in seconds (day limits use 1440 windows).
    - ``completion_tokens``: tokens in each completion (cut by max_tokens and the context).
    - ``latency``: seconds slept (with ``sleep``) before each answer.
    - ``refund_unused``: give ``requested - (prompt + completion)`` back to TPM/TPD.
    - ``default_max_tokens``: completion reservation when a request has no max_tokens.
    - ``hidden_prompt_tokens``: billed on top of every counted prompt (usage and buckets),
      as a server that adds a system prompt of its own would: it bills more than any
      client can count (for fault tests).
    - ``log_path``: also write the request log there, one JSON line per request.
    - ``log_limit``: keep only the newest records in memory (``None``: keep all).
    - ``clock``/``sleep``: injected time (seconds, monotonic), for fake-clock tests.

    Example::

        cfg = EmulatorConfig(models=(ModelSpec("llama3-8b-8192", tpm=600),), window=1.0)
        with Emulator(cfg) as em: ...
    """

    models: tuple[ModelSpec, ...] = (builtin_model(DEFAULT_MODEL),)
    window: float = 60.0
    completion_tokens: int = 16
    latency: float = 0.0
    refund_unused: bool = False
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    hidden_prompt_tokens: int = 0
    log_path: str | None = None
    log_limit: int | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    host: str = "127.0.0.1"
    port: int = 0
    organization: str = "org_emulator"
    max_body_bytes: int = MAX_BODY_BYTES
    # Seconds an idle keep-alive connection (or a stalled body) may stay open.
    idle_timeout: float = 120.0
    require_auth: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("EmulatorConfig.models must name at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"EmulatorConfig.models has duplicate names: {names}")
        if not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window!r}")
        if self.completion_tokens < 0:
            raise ValueError(f"completion_tokens must be >= 0, got {self.completion_tokens}")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency!r}")
        if self.hidden_prompt_tokens < 0:
            raise ValueError(f"hidden_prompt_tokens must be >= 0, got {self.hidden_prompt_tokens}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")


def build_models(
    model: str | Sequence[str] | None,
    models: Sequence[ModelSpec] | None,
    *,
    tpm: int | None = None,
    rpm: int | None = None,
    tpd: int | None = None,
    rpd: int | None = None,
    context_window: int | None = None,
) -> tuple[ModelSpec, ...]:
    """The served models: ``models`` (or the built-in specs for ``model``), with the given
    limits applied to the models named by ``model`` (to all when ``model`` is None).

    A name unknown to the built-in table gets Llama 3.1 defaults (see ``builtin_model``).
    """
    names: list[str] = [] if model is None else [model] if isinstance(model, str) else list(model)
    specs = list(models) if models else []
    known = {s.name for s in specs}
    for name in names or ([] if specs else [DEFAULT_MODEL]):
        if name not in known:
            specs.append(builtin_model(name))
            known.add(name)
    targets = set(names) if names else known
    overrides = {"tpm": tpm, "rpm": rpm, "tpd": tpd, "rpd": rpd, "context_window": context_window}
    return tuple(s.replace(**overrides) if s.name in targets else s for s in specs)
