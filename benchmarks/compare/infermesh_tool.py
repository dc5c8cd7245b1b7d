"""infermesh limiter: not runnable here (see ``_py312_only``)."""

from __future__ import annotations

from ._py312_only import (
    CONFIG,
    MODES,
    NEEDS_REDIS,
    REASON,
    async_caller,
    count,
    sync_caller,
    unavailable,
)

NAME = "infermesh limiter"

__all__ = [
    "CONFIG",
    "MODES",
    "NAME",
    "NEEDS_REDIS",
    "REASON",
    "async_caller",
    "count",
    "sync_caller",
    "unavailable",
]
