"""Built-in sinks for tokenguard's events: a JSONL file, stdlib logging, the console and
OpenTelemetry.

A sink is any callable taking one event record (see :mod:`tokenguard.events`); add one
with ``tg.events.add_sink``. None of these configures logging, structlog or
OpenTelemetry globally: each writes only where it was told to.

Example::

    import tokenguard as tg

    tg.events.add_sink(tg.sinks.JsonlSink("usage.jsonl"))        # what `tokenguard report` reads
    tg.events.add_sink(tg.sinks.LoggingSink("myapp.tokens"))     # a stdlib logger
    tg.events.add_sink(tg.sinks.OpenTelemetrySink())             # the 'otel' extra
    tg.events.to_console()                                       # everything, on stderr
"""

from __future__ import annotations

from ._console import ConsoleSink
from ._jsonl import LIMITS_EVENT, JsonlSink
from ._logging import LoggingSink
from ._otel import OpenTelemetrySink

__all__ = ["LIMITS_EVENT", "ConsoleSink", "JsonlSink", "LoggingSink", "OpenTelemetrySink"]
