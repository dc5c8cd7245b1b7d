"""A tool that cannot run here: its code needs Python >= 3.12 (this machine has 3.11).

Each such tool's module names itself and takes the rest from here.
"""

from __future__ import annotations

from .workload import AsyncCaller, Env, Messages, SyncCaller

CONFIG = "-"
MODES: tuple[str, ...] = ()
NEEDS_REDIS = False
REASON = (
    "cannot be installed here: every release declares Python >= 3.12 and its code uses "
    "3.12-only syntax (PEP 695 generics), which Python 3.11 cannot parse; the only "
    "interpreter on this machine is 3.11"
)


def unavailable() -> str | None:
    return REASON


def count(messages: Messages, model: str) -> int | None:
    return None


def sync_caller(env: Env) -> SyncCaller:
    raise NotImplementedError(REASON)


def async_caller(env: Env) -> AsyncCaller:
    raise NotImplementedError(REASON)
