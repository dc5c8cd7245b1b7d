"""The event seam: typed records, one emitter, user sinks, stdlib logging, no global config."""

from __future__ import annotations

import logging

import pytest
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard import events
from tokenguard.events import CountingMismatch, Event, LimiterFailOpen, emit


def _all_records() -> list[type[Event]]:
    return [getattr(events, n) for n in events.__all__ if isinstance(getattr(events, n), type)]


def test_every_record_is_named_tokenguard_area_event() -> None:
    names = [cls.name for cls in _all_records() if cls is not Event]
    assert names
    for name in names:
        parts = name.split(".")
        assert len(parts) == 3, name
        assert parts[0] == "tokenguard"
        assert all(p and p == p.lower() for p in parts), name
    assert len(set(names)) == len(names)


def test_emit_goes_to_structlog_by_default_with_the_fields() -> None:
    with capture_logs() as logs:
        emit(CountingMismatch(model="m", counted=10, reported=11))
    assert logs == [
        {
            "event": "tokenguard.counting.mismatch",
            "log_level": "warning",
            "model": "m",
            "counted": 10,
            "reported": 11,
        }
    ]


def test_a_sink_gets_the_record_and_can_be_removed() -> None:
    seen: list[Event] = []
    undo = tg.events.add_sink(seen.append)
    try:
        emit(LimiterFailOpen(error="down", during="acquire", retry_in=10.0))
    finally:
        undo()
    emit(LimiterFailOpen(error="down", during="settle"))
    assert seen == [LimiterFailOpen(error="down", during="acquire", retry_in=10.0)]


def test_a_failing_sink_does_not_break_the_caller_or_other_sinks() -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("sink down")

    undo_a = tg.events.add_sink(broken)
    undo_b = tg.events.add_sink(lambda e: seen.append(e.name))
    try:
        emit(CountingMismatch(model="m", counted=1, reported=2))
    finally:
        undo_a()
        undo_b()
    assert seen == ["tokenguard.counting.mismatch"]


def test_route_to_stdlib_logging_without_structlog(caplog: pytest.LogCaptureFixture) -> None:
    undo = tg.events.add_sink(tg.events.to_logging("app.tokens"))
    tg.events.use_structlog(False)
    try:
        with capture_logs() as logs, caplog.at_level(logging.INFO, logger="app.tokens"):
            emit(CountingMismatch(model="m", counted=1, reported=2))
    finally:
        tg.events.use_structlog(True)
        undo()
    assert logs == []
    [rec] = caplog.records
    assert rec.name == "app.tokens"
    assert rec.levelno == logging.WARNING
    assert rec.tokenguard == {"model": "m", "counted": 1, "reported": 2}  # type: ignore[attr-defined]


def test_a_sink_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        tg.events.add_sink(42)  # type: ignore[arg-type]


def test_importing_tokenguard_configures_no_logging() -> None:
    # The application owns logging: the library adds no handlers and leaves structlog as found.
    assert logging.getLogger("tokenguard").handlers == []
    assert logging.getLogger().handlers == [] or all(
        type(h).__module__.startswith("_pytest") for h in logging.getLogger().handlers
    )


def test_each_record_is_named_after_the_event_it_emits() -> None:
    # tokenguard.guard.limit_learned is GuardLimitLearned: the area, then the event.
    emitted = [c for c in _all_records() if not c.__subclasses__()]
    assert len(emitted) >= 17
    for record in emitted:
        area, event = record.name.removeprefix("tokenguard.").split(".")
        camel = "".join(part.capitalize() for part in (area, *event.split("_")))
        assert record.__name__ == camel, record.name
