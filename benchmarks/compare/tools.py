"""The tools compared, one adapter module each, all with the same small interface.

An adapter module has ``NAME`` (the row label), ``CONFIG`` (how the tool is configured,
quoted in docs/benchmarks.md), ``MODES`` (which of ``threads``, ``tasks``,
``processes`` it can run), ``NEEDS_REDIS``, ``unavailable()`` (why it cannot run here,
or None), ``sync_caller(env)`` and ``async_caller(env)`` (one call per conversation:
the tool decides when to send it), and ``count(messages, model)`` (the prompt tokens
the tool would count before sending, or None for tools that do not count).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from .workload import AsyncCaller, Env, Messages, SyncCaller

# Row order in the tables; the module names under benchmarks.compare.
ORDER = [
    "bare",
    "cookbook",
    "openlimit_tool",
    "litellm_router",
    "langchain_tool",
    "llmratelimiter_tool",
    "token_throttle_tool",
    "infermesh_tool",
    "plsno429_tool",
    "tokenguard_guard",
    "tokenguard_instrument",
    "tokenguard_redis",
]
TOKENGUARD = [m for m in ORDER if m.startswith("tokenguard")]


class Tool(Protocol):
    NAME: str
    CONFIG: str
    MODES: tuple[str, ...]
    NEEDS_REDIS: bool

    def unavailable(self) -> str | None: ...

    def sync_caller(self, env: Env) -> SyncCaller: ...

    def async_caller(self, env: Env) -> AsyncCaller: ...

    def count(self, messages: Messages, model: str) -> int | None: ...


def load(module: str) -> Tool:
    mod: Any = importlib.import_module(f"benchmarks.compare.{module}")
    return mod  # type: ignore[no-any-return]


def warm(tool: Tool, messages: Messages, model: str) -> None:
    """Load the tokenizer data a tool counts with, and the estimator its rows are given
    (``ESTIMATED_BY``), before the clock starts: a first load inside a run (seconds on a
    busy machine) would read as the tool's slowness."""
    tool.count(messages, model)
    given = getattr(tool, "ESTIMATED_BY", None)
    if given is not None:
        load(given[0]).count(messages, model)
