"""The OpenTelemetry sink: each guarded call as the GenAI client metrics
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``) and as attributes on
the span current when the call ended.

It uses only the OpenTelemetry API (the ``otel`` extra): the application's SDK, readers
and exporters decide where the data goes, and without an SDK every call is a no-op.
Only ``tokenguard.guard.request`` events are recorded; counts, names and timings only
(message content, present when the guard was given ``log_content=True``, is never set
on a span).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._extras import require

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ..events import Event

__all__ = ["OpenTelemetrySink"]

_REQUEST = "tokenguard.guard.request"
#: The attributes of both metrics, as the GenAI semantic conventions name them.
_METRIC_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "error.type",
)
# The bucket boundaries the GenAI semantic conventions advise for each metric.
_TOKEN_BUCKETS = [4.0**i for i in range(14)]
_DURATION_BUCKETS = [0.01 * 2.0**i for i in range(14)]
# Content is never put on a span; the rest are str, int, float or bool.
_NOT_ON_SPAN = frozenset({"gen_ai.input.messages"})


class OpenTelemetrySink:
    """Record each guarded call as OpenTelemetry GenAI metrics, and set its attributes
    (``gen_ai.*``, ``tokenguard.*``) on the current span when that span is recording.

    ``gen_ai.client.token.usage`` (a histogram in ``{token}``) gets the input and output
    tokens the server reported, with ``gen_ai.token.type`` ``"input"`` or
    ``"output"``; ``gen_ai.client.operation.duration`` (seconds) gets every call,
    failed ones with ``error.type``. ``meter_provider`` defaults to the global one;
    ``span_attributes=False`` leaves spans alone. Needs the ``otel`` extra
    (``pip install 'groq-tokenguard[otel]'``).

    Example::

        tg.events.add_sink(tg.sinks.OpenTelemetrySink())
    """

    def __init__(
        self, *, meter_provider: MeterProvider | None = None, span_attributes: bool = True
    ) -> None:
        require("opentelemetry.metrics", "otel", "tokenguard.sinks.OpenTelemetrySink")
        from opentelemetry import metrics, trace

        from .. import __version__

        meter = metrics.get_meter("tokenguard", __version__, meter_provider=meter_provider)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._current_span = trace.get_current_span
        self._span_attributes = span_attributes

    def __call__(self, event: Event) -> None:
        if event.name != _REQUEST:
            return
        fields = event.fields()
        attributes = {k: fields[k] for k in _METRIC_ATTRIBUTES if k in fields}
        self._duration.record(float(fields.get("tokenguard.duration_s", 0.0)), attributes)
        for kind in ("input", "output"):
            tokens = fields.get(f"gen_ai.usage.{kind}_tokens")
            if tokens is not None:
                self._tokens.record(tokens, {**attributes, "gen_ai.token.type": kind})
        if self._span_attributes:
            span = self._current_span()
            if span.is_recording():
                span.set_attributes(_span_values(fields))


def _span_values(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in fields.items()
        if k not in _NOT_ON_SPAN and isinstance(v, (str, bool, int, float))
    }
