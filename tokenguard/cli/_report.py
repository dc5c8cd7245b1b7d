"""``tokenguard report LOG``: per-model totals from a JSONL file of tokenguard events.

A line is one JSON object, as :class:`tokenguard.sinks.JsonlSink` writes them. Its event
name is its ``"event"`` (the sink's and structlog's JSON output) or ``"name"`` key; its
time, when it has one, is ``"ts"`` (Unix seconds) or ``"timestamp"`` (Unix seconds or ISO
8601). The record's fields sit at the top level, under the names
:meth:`tokenguard.events.Event.fields` gives them. A ``tokenguard.limiter.limits`` line
gives the window (and limits) the calls were held to. Reading is one pass over the
lines, one at a time (a long log is never held whole), that only keeps the timeline
when a plot asks for it: a log of 100,000 events takes about as long as parsing its
JSON (``benchmarks/bench_report.py``).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from ._common import EXIT_OK, UsageError, json_kind, open_input

__all__ = ["LogLine", "ModelTotals", "Problem", "Report", "read_log", "report_command"]

REQUEST = "tokenguard.guard.request"
LIMITS = "tokenguard.limiter.limits"
RETRY = "tokenguard.guard.retry"
WAIT = "tokenguard.guard.wait"
FIT = "tokenguard.fit."
SUMMARIZED = FIT + "summarized"


@dataclass(frozen=True)
class LogLine:
    """One tokenguard event read from the log: ``number`` is its line (from 1)."""

    number: int
    name: str
    t: float | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """A line that could not be read, and why."""

    number: int
    reason: str


@dataclass
class ModelTotals:
    """What the calls to one model added up to."""

    model: str
    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    estimated_prompt: int = 0
    compared: int = 0
    exact_matches: int = 0
    worst_over: int = 0
    worst_under: int = 0
    waits: list[float] = field(default_factory=list)
    fits: Counter[str] = field(default_factory=Counter)
    summary_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: The calls' ``tokenguard.cost_usd`` summed exactly; ``priced`` calls carried one.
    cost_usd: Decimal = Decimal(0)
    priced: int = 0


@dataclass
class Report:
    """Everything read from one log."""

    path: str
    #: Every event read, in order (only when read with ``timeline=True``).
    lines: list[LogLine] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    blank: int = 0
    foreign: int = 0
    by_model: dict[str, ModelTotals] = field(default_factory=dict)
    #: The last ``tokenguard.limiter.limits`` line's fields (window_s, tpm, ...), if any.
    limits: dict[str, Any] | None = None

    @property
    def window(self) -> float | None:
        """The limiter's window in seconds, as the log records it."""
        value = _num((self.limits or {}).get("window_s"))
        return value if value is not None and value > 0 else None

    @property
    def tpm(self) -> int | None:
        """The limiter's tokens per window, as the log records it."""
        return self._limit("tpm")

    @property
    def rpm(self) -> int | None:
        """The limiter's requests per window, as the log records it."""
        return self._limit("rpm")

    def _limit(self, name: str) -> int | None:
        value = _int((self.limits or {}).get(name))
        return value if value is not None and value > 0 else None


def _time(obj: dict[str, Any]) -> float | None:
    for key in ("ts", "timestamp", "time"):
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


# JSON gives exactly int, float, bool, str, list, dict or None: a type test (which keeps
# bools out) is all a field needs, once per field of 100,000 lines.
def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _num(value: object) -> float | None:
    if (type(value) is float and math.isfinite(value)) or type(value) is int:
        return float(value)
    return None


def _usd(value: object) -> Decimal | None:
    """A cost as logged (a JSON number, or a string) as an exact Decimal: a float's repr
    is the decimal that was written, so the sum carries no binary rounding."""
    if type(value) is float or type(value) is int:
        value = repr(value)
    if type(value) is not str:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def read_log(source: str | Iterable[str], path: str, *, timeline: bool = False) -> Report:
    """Read every line of a log, given as its text or as its lines (an open file: it is
    then read one line at a time, never held whole). Never raises on a bad line: it
    becomes a :class:`Problem`. ``timeline`` also keeps every event in
    :attr:`Report.lines` (what a plot draws).

    Example::

        with open("events.jsonl", encoding="utf-8") as f:
            rep = read_log(f, "events.jsonl")
        rep.by_model["llama3-8b-8192"].calls
    """
    rep = Report(path=path)
    lines = io.StringIO(source, newline=None) if isinstance(source, str) else source
    loads = json.loads
    for number, raw in enumerate(lines, start=1):
        if not raw or raw.isspace():
            rep.blank += 1
            continue
        try:
            obj = loads(raw)
        except json.JSONDecodeError as exc:
            rep.problems.append(Problem(number, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:
            rep.problems.append(Problem(number, "not JSON (nested too deeply)"))
            continue
        if not isinstance(obj, dict):
            rep.problems.append(Problem(number, f"{json_kind(obj)}, not an object"))
            continue
        name = obj.get("event", obj.get("name"))
        if not isinstance(name, str) or not name.startswith("tokenguard."):
            rep.foreign += 1
            continue
        reason = _add(rep, name, obj)
        if reason is not None:
            rep.problems.append(Problem(number, reason))
        elif timeline:
            rep.lines.append(LogLine(number, name, _time(obj), obj))
    return rep


def _add(rep: Report, name: str, obj: dict[str, Any]) -> str | None:
    """Add one event to the totals; a reason when it is malformed."""
    if name == REQUEST:
        return _add_request(rep, obj)
    if name == LIMITS:
        rep.limits = obj
        return None
    if name in (RETRY, WAIT) or name.startswith(FIT):
        model = obj.get("model")
        if not isinstance(model, str):
            return f"{name} without a 'model' string"
        totals = rep.by_model.get(model) or rep.by_model.setdefault(model, ModelTotals(model))
        if name == RETRY and obj.get("kind") == "rate_limited":
            totals.rate_limited += 1
        if name.startswith(FIT):
            # Fits are counted from their own events: a fit made by tg.Conversation
            # or tg.fit is not part of any guarded call's record.
            totals.fits[name[len(FIT) :]] += 1
        if name == SUMMARIZED:
            totals.summary_calls += _int(obj.get("summary_calls")) or 0
    return None


def _add_request(rep: Report, f: dict[str, Any]) -> str | None:
    model = f.get("gen_ai.request.model")
    if not isinstance(model, str):
        return f"{REQUEST} without a 'gen_ai.request.model' string"
    estimated = _int(f.get("tokenguard.estimated_tokens"))
    reserve = _int(f.get("tokenguard.completion_reserve")) or 0
    if estimated is None:
        return f"{REQUEST} without an integer 'tokenguard.estimated_tokens'"
    t = rep.by_model.get(model) or rep.by_model.setdefault(model, ModelTotals(model))
    t.calls += 1
    error = f.get("error.type")
    if isinstance(error, str):
        t.failed += 1
        t.errors[error] += 1
    given_in = _int(f.get("gen_ai.usage.input_tokens"))
    t.input_tokens += given_in or 0
    t.output_tokens += _int(f.get("gen_ai.usage.output_tokens")) or 0
    t.cached_tokens += _int(f.get("tokenguard.cached_tokens")) or 0
    if given_in is not None:
        # The pre-flight prompt count is the estimate less the completion reservation.
        counted = estimated - reserve
        t.estimated_prompt += counted
        t.compared += 1
        diff = counted - given_in
        t.exact_matches += diff == 0
        t.worst_over = max(t.worst_over, diff)
        t.worst_under = min(t.worst_under, diff)
    t.waits.append(_num(f.get("tokenguard.wait_s")) or 0.0)
    t.retries += _int(f.get("tokenguard.retries")) or 0
    cost = f.get("tokenguard.cost_usd")
    if cost is not None:
        amount = _usd(cost)
        if amount is None:
            return f"{REQUEST} with a 'tokenguard.cost_usd' that is not an amount >= 0"
        t.cost_usd += amount
        t.priced += 1
    return None


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (0.0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _rows(t: ModelTotals) -> list[tuple[str, str]]:
    if t.compared:
        exact = f"{t.exact_matches}/{t.compared} exact"
        off = [f"up to {t.worst_over} over"] * (t.worst_over > 0)
        off += [f"up to {-t.worst_under} under"] * (t.worst_under < 0)
        if off:
            exact += f" ({', '.join(off)})"
    else:
        exact = "no usage reported"
    fits = ", ".join(f"{k} {v}" for k, v in sorted(t.fits.items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items()))
    return [
        ("calls", f"{t.calls} ({t.failed} failed)" if t.failed else str(t.calls)),
        (
            "tokens in",
            f"{t.input_tokens:,}" + (f" ({t.cached_tokens:,} cached)" * bool(t.cached_tokens)),
        ),
        ("tokens out", f"{t.output_tokens:,}"),
        ("cost", _cost_row(t)),
        ("pre-flight vs server", exact),
        (
            "waited",
            f"{sum(t.waits):.1f} s in all; p50 {quantile(t.waits, 0.5):.2f} s, "
            f"p99 {quantile(t.waits, 0.99):.2f} s",
        ),
        ("fits", fits),
        ("summary calls", str(t.summary_calls)),
        ("retries", f"{t.retries} ({t.rate_limited} after a 429)"),
        ("refusals", f"{t.failed}" + (f" ({errors})" if errors else "")),
    ]


def _cost_row(t: ModelTotals) -> str:
    if not t.priced:
        return "no price known"
    served = t.calls - t.failed
    unpriced = f" ({served - t.priced} served calls without a price)" if t.priced < served else ""
    return f"${t.cost_usd:f}{unpriced}"


def render(rep: Report, out: TextIO) -> None:
    """Print the report: the limits the log records, one block per model, then what was
    skipped or unreadable."""
    if rep.window is not None:
        held = [f"{v:,} {unit}" for v, unit in ((rep.tpm, "tokens"), (rep.rpm, "requests")) if v]
        per = " and ".join(held) or "limits"
        print(f"limits: {per} per {rep.window:g} s (the log's limiter)", file=out)
    if not rep.by_model:
        print(f"{rep.path}: no tokenguard usage events found", file=out)
    for t in sorted(rep.by_model.values(), key=lambda m: m.model):
        print(f"{t.model}", file=out)
        for label, value in _rows(t):
            print(f"  {label:<21} {value}", file=out)
    if rep.foreign:
        print(f"skipped {rep.foreign} lines that are not tokenguard events", file=out)
    if rep.problems:
        print(f"{len(rep.problems)} malformed lines skipped:", file=out)
        for p in rep.problems[:20]:
            print(f"  {rep.path}, line {p.number}: {p.reason}", file=out)
        if len(rep.problems) > 20:
            print(f"  ... and {len(rep.problems) - 20} more", file=out)


def report_command(
    log: str,
    *,
    plot: str | None,
    window: float | None,
    tpm: int | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """Run ``tokenguard report``; returns the exit status. ``window`` (seconds) and
    ``tpm`` are the plot's, by default the log's limits line's (else 60 s and the model
    table's)."""
    image_format = _check_plot_options(plot, window, tpm)
    with open_input(log) as lines:
        rep = read_log(lines, log, timeline=plot is not None)
    if as_json:
        print(json.dumps(_to_json(rep), indent=2), file=out)
    else:
        render(rep, out)
    if plot is not None and image_format is not None:
        from ._plot import draw

        drawn = draw(
            rep, plot, window=window or rep.window or 60.0, tpm=tpm, image_format=image_format
        )
        print(f"plot: {plot} ({drawn})", file=out)
    return EXIT_OK


def _check_plot_options(plot: str | None, window: float | None, tpm: int | None) -> str | None:
    """Refuse a bad ``--window``/``--tpm``, or ``--plot`` without matplotlib or to a file
    whose extension names no format it writes, before reading anything: the options or
    the extra are wrong, not the data. Returns the plot's image format."""
    if window is not None and not (window > 0 and math.isfinite(window)):
        raise UsageError(f"--window must be seconds > 0, got {window}")
    if tpm is not None and tpm < 1:
        raise UsageError(f"--tpm must be a positive integer, got {tpm}")
    if plot is None:
        return None
    from ._plot import plot_format, require_matplotlib

    require_matplotlib()
    return plot_format(plot)


def _to_json(rep: Report) -> dict[str, Any]:
    """The report as ``--json`` prints it: per model totals, the log's limits, and what
    was skipped."""
    return {
        "models": {t.model: _model_json(t) for t in rep.by_model.values()},
        "limits": {"window_s": rep.window, "tpm": rep.tpm, "rpm": rep.rpm},
        "skipped_foreign": rep.foreign,
        "malformed": [{"line": p.number, "reason": p.reason} for p in rep.problems],
    }


def _model_json(t: ModelTotals) -> dict[str, Any]:
    return {
        "calls": t.calls,
        "failed": t.failed,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_tokens": t.cached_tokens,
        # A string: the exact decimal (a JSON number would be a float).
        "cost_usd": f"{t.cost_usd:f}" if t.priced else None,
        "priced_calls": t.priced,
        "preflight_compared": t.compared,
        "preflight_exact": t.exact_matches,
        "wait_s_total": round(sum(t.waits), 6),
        "wait_s_p50": quantile(t.waits, 0.5),
        "wait_s_p99": quantile(t.waits, 0.99),
        "fits": dict(t.fits),
        "summary_calls": t.summary_calls,
        "retries": t.retries,
        "rate_limited": t.rate_limited,
        "errors": dict(t.errors),
    }
