"""Fixtures every test file shares: the guard's process-wide defaults start and end
fresh around each test, and ``events`` collects what the event seam emits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tokenguard as tg


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
