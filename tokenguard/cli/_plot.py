"""``tokenguard report LOG --plot out.png``: the rate-limit bucket over time, as the server
enforces it, with the waits and 429s below.

Groq's token limit is a bucket that holds ``tpm`` tokens and refills ``tpm`` per window;
a request needs its estimate (prompt + ``max_tokens``) in the bucket when it arrives, or
is refused. The plot replays the logged calls through that bucket (each served call's
estimate taken when it was sent, ``duration_s - wait_s`` before its event, and kept:
whether Groq refunds the unused part is not known) and marks the server's own
``x-ratelimit-remaining-tokens`` beside it, the evidence. The window and ``tpm`` come from the log's
limits line (``--window``/``--tpm`` override, the model table stands in).

matplotlib is an optional extra (``pip install 'groq-tokenguard[plot]'``). The figure is
drawn on a :class:`matplotlib.figure.Figure` of its own, so no global backend or style is
set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .._extras import install_hint
from ._common import UsageError
from ._report import REQUEST, RETRY, WAIT, LogLine, Report, _int, _num

__all__ = ["Bucket", "draw", "plot_format", "replay", "require_matplotlib"]

INSTALL_HINT = (
    f"--plot needs matplotlib, which is the optional 'plot' extra: {install_hint('plot')} "
    "(or pip install matplotlib)"
)


def require_matplotlib() -> None:
    """Raise a :class:`UsageError` saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


#: Formats matplotlib names but cannot write alone: pgf needs a TeX installation.
_NEEDS_MORE_THAN_MATPLOTLIB = frozenset({"pgf"})


def plot_format(path: str) -> str:
    """The image format the extension of ``path`` names (``png``, ``svg``, ``pdf``, ...),
    when matplotlib writes it; else a :class:`UsageError` listing those it does. Asked
    before anything is read, so a wrong name costs no work.

    Example::

        plot_format("tokens.SVG")  # 'svg'
    """
    from matplotlib.backend_bases import FigureCanvasBase

    formats = set(FigureCanvasBase.get_supported_filetypes()) - _NEEDS_MORE_THAN_MATPLOTLIB
    suffix = PurePath(path).suffix.lower()
    if suffix[1:] in formats:
        return suffix[1:]
    listed = ", ".join(f".{name}" for name in sorted(formats))
    got = f"'{suffix}'" if suffix else "no extension"
    raise UsageError(
        f"--plot {path}: the extension names the image format; expected one of {listed}, got {got}"
    )


def _tokens(line: LogLine) -> int:
    """What a served call took from the bucket when it arrived: its estimate (prompt +
    the completion reserved), which the server must hold to admit it. A refused call
    (``error.type``) took nothing."""
    if "error.type" in line.fields:
        return 0
    return _int(line.fields.get("tokenguard.estimated_tokens")) or 0


def _sent_at(line: LogLine, t: float) -> float:
    """When the call reached the server: its event time less the time after its wait."""
    duration = _num(line.fields.get("tokenguard.duration_s"))
    if duration is None:
        return t
    waited = _num(line.fields.get("tokenguard.wait_s")) or 0.0
    return t - max(0.0, duration - waited)


@dataclass(frozen=True)
class Bucket:
    """A token bucket's level through time: ``xs``/``ys`` trace it (a drop at each
    call, a straight refill between, flat at the capacity); ``lowest`` is its lowest
    level (below 0: the server would have refused a call)."""

    xs: list[float]
    ys: list[float]
    lowest: float


def replay(calls: list[tuple[float, int]], *, capacity: int, window: float, end: float) -> Bucket:
    """Replay ``calls`` (time, tokens), sorted by time, through a bucket of ``capacity``
    tokens refilled at ``capacity`` per ``window`` seconds, full at time 0, until ``end``.

    Example::

        replay([(0.0, 4000), (1.0, 4000)], capacity=6000, window=60, end=2).lowest  # -1900
    """
    rate = capacity / window
    xs, ys = [0.0], [float(capacity)]
    level, at, lowest = float(capacity), 0.0, float(capacity)
    for t, tokens in [*calls, (end, 0)]:
        refilled = level + rate * (t - at)
        if level < capacity <= refilled:
            # The corner where the bucket is full again.
            xs.append(at + (capacity - level) / rate)
            ys.append(float(capacity))
        level = min(float(capacity), refilled)
        xs.append(t)
        ys.append(level)
        if tokens:
            level -= tokens
            xs.append(t)
            ys.append(level)
            lowest = min(lowest, level)
        at = t
    return Bucket(xs, ys, lowest)


def _capacity(rep: Report, tpm: int | None) -> int:
    if tpm is not None:
        return tpm
    if rep.tpm is not None:
        return rep.tpm
    from .. import TokenGuardError, get_model

    if len(rep.by_model) == 1:
        try:
            limits = get_model(next(iter(rep.by_model))).tier_limits("free")
        except TokenGuardError:
            limits = None
        if limits is not None and limits.tpm is not None:
            return limits.tpm
    raise UsageError(
        f"{rep.path}: no token limit to plot against: the log has no "
        "tokenguard.limiter.limits line (tg.sinks.JsonlSink(..., limiter=...) writes one) "
        "and no single known model; pass --tpm"
    )


def _mark_429s(axes: Any, at: list[float], label: str) -> None:
    if at:
        axes.scatter(
            at,
            [0] * len(at),
            marker="x",
            color="tab:red",
            s=50,
            zorder=4,
            label=label,
            clip_on=False,
        )


@dataclass(frozen=True)
class _Series:
    """What the plot shows, in seconds since the log's first event."""

    bucket: Bucket
    calls: int
    end: float
    server: list[tuple[float, float]]  # the server's remaining tokens, as each call ended
    limited: list[float]  # 429s the guard absorbed
    call_waits: list[tuple[float, float]]  # each call's wait before it was sent
    waited: list[tuple[float, float]]  # the waits of 1 s or more


def _series(rep: Report, *, capacity: int, window: float) -> _Series:
    """The series of a log with at least one timed event."""
    timed = [(line, line.t) for line in rep.lines if line.t is not None]
    requests = [(line, t) for line, t in timed if line.name == REQUEST]
    t0 = min([t for _, t in timed] + [_sent_at(line, t) for line, t in requests])
    end = max(t for _, t in timed) - t0 + window * 0.1
    calls = sorted((_sent_at(line, t) - t0, _tokens(line)) for line, t in requests)
    return _Series(
        bucket=replay(calls, capacity=capacity, window=window, end=end),
        calls=len(calls),
        end=end,
        server=[
            (t - t0, float(v))
            for line, t in requests
            if type(v := line.fields.get("tokenguard.server_remaining_tokens")) is int
        ],
        limited=[
            t - t0
            for line, t in timed
            if line.name == RETRY and line.fields.get("kind") == "rate_limited"
        ],
        call_waits=[
            (t - t0, float(line.fields.get("tokenguard.wait_s", 0.0) or 0.0))
            for line, t in requests
        ],
        waited=[
            (t - t0, float(line.fields.get("wait_s", 0.0)))
            for line, t in timed
            if line.name == WAIT
        ],
    )


def draw(rep: Report, path: str, *, window: float, tpm: int | None, image_format: str) -> str:
    """Draw the bucket of ``tpm`` tokens per ``window`` seconds through the log's calls,
    and their waits, into ``path`` as ``image_format`` (see :func:`plot_format`); returns
    a one-line description of what was drawn."""
    from matplotlib.figure import Figure

    if not any(line.t is not None for line in rep.lines):
        raise UsageError(f"{rep.path}: no timed tokenguard events to plot (no 'ts' fields)")
    capacity = _capacity(rep, tpm)
    data = _series(rep, capacity=capacity, window=window)
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    _draw_bucket(top, data, capacity=capacity, window=window)
    top.set_title(
        f"{', '.join(sorted(rep.by_model)) or 'no model'}: {data.calls} calls from {rep.path}\n"
        f"bucket of {capacity:,} tokens, refilled {capacity:,} per {window:g} s "
        "(below 0 the server refuses)",
        fontsize="medium",
    )
    _draw_waits(bottom, data)
    try:
        fig.savefig(path, format=image_format)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    return (
        f"{data.calls} calls over {data.end:.0f} s through a {capacity:,}-token bucket per "
        f"{window:g} s, lowest {data.bucket.lowest:,.0f}; {len(data.limited)} 429s, "
        f"{len(data.waited)} long waits"
    )


def _draw_bucket(axes: Any, data: _Series, *, capacity: int, window: float) -> None:
    bucket = data.bucket
    axes.plot(
        bucket.xs,
        bucket.ys,
        color="tab:blue",
        linewidth=1,
        label="tokens left in the bucket (each call's estimate taken when sent)",
    )
    if data.server:
        axes.scatter(
            [s[0] for s in data.server],
            [s[1] for s in data.server],
            s=10,
            color="tab:green",
            zorder=3,
            label="the server's x-ratelimit-remaining-tokens, as each call ended",
        )
    axes.axhline(0, color="tab:red", linewidth=1)
    axes.axhspan(min(0.0, bucket.lowest) - capacity * 0.05, 0, color="tab:red", alpha=0.08)
    _mark_429s(axes, data.limited, f"429 absorbed ({len(data.limited)})")
    axes.set_ylabel("tokens left in the bucket")
    axes.set_ylim(min(0.0, bucket.lowest) - capacity * 0.05, capacity * 1.05)
    axes.legend(loc="lower left", fontsize="small")
    axes.grid(alpha=0.3)


def _draw_waits(axes: Any, data: _Series) -> None:
    axes.scatter(
        [c[0] for c in data.call_waits],
        [c[1] for c in data.call_waits],
        s=12,
        color="tab:orange",
        label="time each call waited before it was sent",
    )
    if data.waited:
        axes.vlines(
            [w[0] for w in data.waited],
            0,
            [w[1] for w in data.waited],
            color="tab:orange",
            alpha=0.4,
            label=f"waits of 1 s or more ({len(data.waited)})",
        )
    _mark_429s(axes, data.limited, "429 absorbed")
    axes.set_ylabel("wait (s)")
    axes.set_xlabel("seconds since the first event")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(alpha=0.3)
