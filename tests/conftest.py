"""Fixtures every test file shares: the guard's process-wide defaults start and end
fresh around each test, ``events`` collects what the event seam emits, and
``structlog_unconfigured`` stands for an application that never configured structlog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import tokenguard as tg

# A model that stays estimated whatever family becomes exact (Qwen3 is exact now): the
# tests about estimates and calibration count with it, under the old Qwen2 rule.
tg.register_model(
    "example/estimated-qwen2",
    context_window=131_072,
    max_completion_tokens=40_960,
    tokenizer="qwen2",
)


@pytest.fixture(autouse=True)
def _fresh_guard_defaults() -> Iterator[None]:
    # Default limiters and learned limits are process-wide: one test's must not reach the next.
    tg.reset_defaults()
    yield
    tg.reset_defaults()


@pytest.fixture
def events() -> Iterator[list[tg.events.Event]]:
    seen: list[tg.events.Event] = []
    undo = tg.events.add_sink(seen.append)
    yield seen
    undo()


@pytest.fixture
def structlog_unconfigured() -> Iterator[None]:
    # capture_logs() configures structlog for the rest of the process; an application
    # that never called structlog.configure sees none of it.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
