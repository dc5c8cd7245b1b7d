"""The event seam: typed records, one emitter, user sinks, quiet by default (the
application's logging decides), no global config."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard import events
from tokenguard.events import CountingMismatch, Event, LimiterBadHeader, LimiterFailOpen, emit


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


def test_emit_goes_to_structlog_when_the_application_configured_it() -> None:
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


@pytest.mark.usefixtures("structlog_unconfigured")
def test_emit_goes_to_the_stdlib_logger_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    assert not tg.events.enabled()  # logging's default level drops info: nothing is built
    with caplog.at_level(logging.WARNING, logger="tokenguard"):
        emit(CountingMismatch(model="m", counted=1, reported=2))
        emit(LimiterBadHeader(header="x-ratelimit-remaining-tokens"))  # debug: dropped
    [rec] = caplog.records
    assert (rec.name, rec.levelno) == ("tokenguard", logging.WARNING)
    assert rec.getMessage().startswith("tokenguard.counting.mismatch {'model': 'm'")
    with caplog.at_level(logging.INFO, logger="tokenguard"):
        assert tg.events.enabled()


def test_use_logging_off_leaves_only_the_sinks(caplog: pytest.LogCaptureFixture) -> None:
    undo = tg.events.add_sink(tg.events.to_logging("app.tokens"))
    tg.events.use_logging(False)
    try:
        with capture_logs() as logs, caplog.at_level(logging.INFO):
            emit(CountingMismatch(model="m", counted=1, reported=2))
    finally:
        tg.events.use_logging(True)
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


def test_use_structlog_is_the_deprecated_name_of_use_logging() -> None:
    with pytest.deprecated_call(match="use_logging"):
        tg.events.use_structlog(False)
    try:
        with capture_logs() as logs:
            emit(CountingMismatch(model="m", counted=1, reported=2))
        assert logs == []
    finally:
        tg.events.use_logging(True)


_APP = """
import logging, sys
import openai
import tokenguard as tg
from tokenguard.emulator import running

mode = sys.argv[1]
if mode == "logging":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
elif mode == "structlog":
    import structlog
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
elif mode == "console":
    tg.events.to_console()
with running(model="llama3-8b-8192") as em:
    client = tg.instrument(openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0))
    client.chat.completions.create(
        model="llama3-8b-8192", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    # A model the table does not know: a warning event.
    tg.count_tokens([{"role": "user", "content": "Hi"}], model="my-finetune")
"""


def _app(mode: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", _APP, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def test_an_application_that_configured_nothing_sees_only_warnings_on_stderr() -> None:
    done = _app("nothing")
    assert done.stdout == ""
    # No line per call; a warning that matters reaches logging's warning path.
    assert "tokenguard.guard.request" not in done.stderr
    assert done.stderr.splitlines() == [
        "tokenguard.models.unknown {'model': 'my-finetune', 'context_window': 8192, 'hint': "
        "'tokenguard.register_model() sets its context window and tokenizer'}"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "where", "line"),
    [
        ("logging", "stderr", "INFO tokenguard tokenguard.guard.request {"),
        ("structlog", "stdout", '{"gen_ai.operation.name": "chat"'),
        ("console", "stderr", " info     tokenguard.guard.request gen_ai.operation.name=chat"),
    ],
)
def test_an_application_that_asked_sees_every_call(mode: str, where: str, line: str) -> None:
    done = _app(mode)
    out = getattr(done, where)
    assert line in out
    assert "my-finetune" in out
    assert "'Hi'" not in out  # counts and names, never content
    assert '"Hi"' not in out
