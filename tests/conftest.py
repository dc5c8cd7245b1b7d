"""Fixtures every test file shares: the guard's process-wide defaults start and end
fresh around each test, ``events`` collects what the event seam emits,
``structlog_unconfigured`` stands for an application that never configured structlog,
``clock`` is a fake clock, ``serve`` starts emulators that stop with the test, and
``client`` is an SDK client of the module's ``em`` emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import openai
import pytest
import structlog
from fake_clock import FakeClock

import tokenguard as tg
from tokenguard.emulator import Emulator, running

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
def logging_off() -> Iterator[None]:
    tg.events.use_logging(False)
    try:
        yield
    finally:
        tg.events.use_logging(True)


@pytest.fixture
def structlog_unconfigured() -> Iterator[None]:
    # capture_logs() configures structlog for the rest of the process; an application
    # that never called structlog.configure sees none of it.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve() -> Iterator[Callable[..., Emulator]]:
    """``serve(**options)`` starts an emulator as ``running(**options)`` does (a fake clock
    given as ``clock`` also sleeps); every one started stops when the test ends."""
    with ExitStack() as stack:

        def start(**options: Any) -> Emulator:
            return stack.enter_context(running(**options))

        yield start


@pytest.fixture
def client(em: Emulator) -> openai.OpenAI:
    """The openai SDK's client of the test module's ``em`` emulator, as a user's code would
    make it (with the SDK's own retries)."""
    return openai.OpenAI(base_url=em.base_url, api_key="x")
