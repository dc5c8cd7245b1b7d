"""The built-in sinks on real guarded calls against the emulator: the JSONL file that
`tokenguard report` reads, stdlib logging, the console, and OpenTelemetry through the
SDK's in-memory readers."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from emulator_support import HELLO, client_for

import tokenguard as tg
from tokenguard.cli._report import read_log
from tokenguard.emulator import Emulator, running

MODEL = "llama3-8b-8192"


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=6000, rpm=30, completion_tokens=7) as emulator:
        yield emulator


def _client(em: Emulator) -> openai.OpenAI:
    return tg.instrument(
        client_for(em),
        tpm=6000,
        rpm=30,
        window=5,
    )


@contextmanager
def _sinking(sink: Any) -> Iterator[None]:
    undo = tg.events.add_sink(sink)
    try:
        yield
    finally:
        undo()


# -- JSONL ---------------------------------------------------------------------------------


def test_jsonl_writes_timed_lines_that_report_reads_with_the_window(
    em: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "usage.jsonl"
    lim = tg.Limiter(tpm=6000, rpm=30, window=5)
    ticks = iter([100.0, 101.25, 102.5])
    client = client_for(em)
    tg.instrument(client, limiter=lim)
    sink = tg.sinks.JsonlSink(path, limiter=lim, clock=lambda: next(ticks))
    with sink, _sinking(sink):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["ts"], x["event"]) for x in lines] == [
        (100.0, "tokenguard.limiter.limits"),
        (101.25, "tokenguard.guard.request"),
        (102.5, "tokenguard.guard.request"),
    ]
    assert lines[0] | {"ts": 0} == {
        "ts": 0,
        "event": "tokenguard.limiter.limits",
        "level": "info",
        "window_s": 5.0,
        "algorithm": "bucket",
        "tpm": 6000,
        "rpm": 30,
    }
    assert lines[1]["gen_ai.usage.input_tokens"] == 11
    assert lines[1]["gen_ai.usage.output_tokens"] == 7
    assert "Hello" not in path.read_text()

    rep = read_log(path.read_text(), str(path), timeline=True)
    assert (rep.window, rep.tpm) == (5.0, 6000)
    assert rep.by_model[MODEL].calls == 2
    assert rep.by_model[MODEL].exact_matches == 2
    assert [line.t for line in rep.lines] == [100.0, 101.25, 102.5]
    assert rep.problems == []
    assert rep.foreign == 0


def test_jsonl_appends_to_a_file_and_leaves_a_given_stream_open(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text('{"event": "app.start"}\n')
    with tg.sinks.JsonlSink(path, limiter=tg.Limiter(rpm=5)) as sink:
        assert sink.lines == 1
    assert path.read_text().splitlines()[0] == '{"event": "app.start"}'
    assert json.loads(path.read_text().splitlines()[1])["rpm"] == 5
    stream = io.StringIO()
    tg.sinks.JsonlSink(stream).close()
    stream.write("still open")


def test_jsonl_bad_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(tg.ConfigurationError, match=r"cannot open the event log .*nowhere"):
        tg.sinks.JsonlSink(tmp_path / "nowhere" / "usage.jsonl")
    with pytest.raises(tg.ConfigurationError, match="a path or a text stream, got int"):
        tg.sinks.JsonlSink(42)  # type: ignore[arg-type]


# -- stdlib logging and the console ---------------------------------------------------------


def test_logging_sink_logs_at_the_records_level(
    em: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(em)
    with (
        caplog.at_level(logging.INFO, logger="app.tokens"),
        _sinking(tg.sinks.LoggingSink("app.tokens")),
    ):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
    [rec] = [r for r in caplog.records if r.name == "app.tokens"]
    assert rec.levelno == logging.INFO
    assert rec.getMessage().startswith("tokenguard.guard.request {")
    fields = rec.tokenguard  # type: ignore[attr-defined]
    assert fields["gen_ai.usage.input_tokens"] == 11


@pytest.mark.usefixtures("structlog_unconfigured")
def test_to_console_prints_one_line_per_event_until_undone(
    em: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _client(em)
    undo = tg.events.to_console()
    try:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
    finally:
        undo()
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert re.match(
        r"\d\d:\d\d:\d\d\.\d{3} info     tokenguard\.guard\.request gen_ai\.operation\.name=chat ",
        line,
    )
    assert "gen_ai.usage.input_tokens=11 gen_ai.usage.output_tokens=7" in line


def test_console_sink_filters_by_level_and_checks_it() -> None:
    stream = io.StringIO()
    sink = tg.sinks.ConsoleSink(stream, level="warning")
    sink(tg.events.ModelsUnknown(model="m", context_window=8192, hint="register it"))
    sink(tg.events.LimiterBadHeader(header="x-ratelimit-remaining-tokens"))
    assert stream.getvalue().count("\n") == 1
    assert "warning  tokenguard.models.unknown model=m context_window=8192" in stream.getvalue()
    with pytest.raises(tg.ConfigurationError, match="level must be one of debug, info"):
        tg.sinks.ConsoleSink(level="loud")


# -- OpenTelemetry --------------------------------------------------------------------------


def test_otel_records_genai_metrics_and_span_attributes(em: Emulator) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = tracer_provider.get_tracer("app")
    client = _client(em)
    sink = tg.sinks.OpenTelemetrySink(meter_provider=MeterProvider(metric_readers=[reader]))
    with _sinking(sink):
        with tracer.start_as_current_span("answer"):
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=5)

    data = reader.get_metrics_data()
    assert data is not None
    [scope] = [s for rm in data.resource_metrics for s in rm.scope_metrics]
    assert scope.scope.name == "tokenguard"
    metrics = {m.name: m for m in scope.metrics}
    assert set(metrics) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    points: dict[Any, Any] = {
        (p.attributes or {}).get("gen_ai.token.type"): p for p in usage.data.data_points
    }
    assert (points["input"].sum, points["input"].count) == (11, 1)
    assert (points["output"].sum, points["output"].count) == (7, 1)
    assert dict(points["input"].attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "groq",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
        "gen_ai.token.type": "input",
    }
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    by_error: dict[Any, Any] = {
        (p.attributes or {}).get("error.type"): p for p in duration.data.data_points
    }
    assert set(by_error) == {None, "404"}
    assert by_error[None].count == 1
    assert 0 < by_error[None].sum < 10
    assert by_error["404"].attributes["gen_ai.request.model"] == "no-such-model"

    [span] = spans.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["tokenguard.estimated_tokens"] == 21
    assert attrs["tokenguard.site"] == "OpenAI.chat.completions.create"


def test_otel_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(tg.ConfigurationError) as caught:
        tg.sinks.OpenTelemetrySink()
    assert "pip install 'groq-tokenguard[otel]'" in str(caught.value)
