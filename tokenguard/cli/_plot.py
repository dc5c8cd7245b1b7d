"""``tokenguard report LOG --plot out.png``: tokens per window against the limit over time.

matplotlib is an optional extra (``pip install 'tokenguard[plot]'``). The figure is drawn
on a :class:`matplotlib.figure.Figure` of its own, so no global backend or style is set.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from ._common import UsageError
from ._report import REQUEST, RETRY, WAIT, Report

if TYPE_CHECKING:
    from ._report import LogLine

__all__ = ["draw", "require_matplotlib"]

INSTALL_HINT = (
    "--plot needs matplotlib, which is the optional 'plot' extra: "
    "pip install 'tokenguard[plot]' (or pip install matplotlib)"
)


def require_matplotlib() -> None:
    """Raise a :class:`UsageError` saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def _tokens(line: LogLine) -> int:
    f = line.fields
    for key in ("tokenguard.limit_tokens",):
        value = f.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    used = [f.get("gen_ai.usage.input_tokens"), f.get("gen_ai.usage.output_tokens")]
    if all(isinstance(v, int) for v in used):
        return sum(v for v in used if isinstance(v, int))
    return 0


def draw(rep: Report, path: str, *, window: float, tpm: int | None) -> str:
    """Draw the log's tokens per ``window`` seconds against ``tpm`` into ``path`` (PNG);
    returns a one-line description of what was drawn."""
    from matplotlib.figure import Figure

    from .. import TokenGuardError, get_model

    timed = [line for line in rep.lines if line.t is not None]
    if not timed:
        raise UsageError(f"{rep.path}: no timed tokenguard events to plot (no 'ts' fields)")
    t0 = min(line.t for line in timed if line.t is not None)

    def rel(line: LogLine) -> float:
        return (line.t or t0) - t0

    calls = sorted((rel(x), _tokens(x)) for x in timed if x.name == REQUEST)
    if tpm is None and len(rep.by_model) == 1:
        try:
            limits = get_model(next(iter(rep.by_model))).tier_limits("free")
            tpm = limits.tpm if limits is not None else None
        except TokenGuardError:
            tpm = None
    end = max(rel(x) for x in timed) + window * 0.1
    # The tokens of the calls that ended within the last `window` seconds, sampled finely.
    times = [c[0] for c in calls]
    sums = [0]
    for _, tokens in calls:
        sums.append(sums[-1] + tokens)
    steps = 400
    xs = [end * i / steps for i in range(steps + 1)]
    ys = []
    for x in xs:
        hi = bisect.bisect_right(times, x)
        lo = bisect.bisect_right(times, x - window)
        ys.append(sums[hi] - sums[lo])

    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    top.plot(xs, ys, color="tab:blue", label=f"tokens in the last {window:g} s (completed calls)")
    at_calls = [
        sums[bisect.bisect_right(times, t)] - sums[bisect.bisect_right(times, t - window)]
        for t in times
    ]
    top.scatter(times, at_calls, s=10, color="tab:blue", zorder=3)
    if tpm is not None:
        top.axhline(tpm, color="tab:red", linestyle="--", label=f"limit: {tpm:,} tokens/window")
    limited = [rel(x) for x in timed if x.name == RETRY and x.fields.get("kind") == "rate_limited"]
    if limited:
        top.scatter(
            limited,
            [0] * len(limited),
            marker="x",
            color="tab:red",
            s=50,
            zorder=4,
            label=f"429 absorbed ({len(limited)})",
            clip_on=False,
        )
    top.set_ylabel("tokens per window")
    top.set_ylim(bottom=0)
    models = ", ".join(sorted(rep.by_model)) or "no model"
    top.set_title(f"{models}: {len(calls)} calls from {rep.path}")
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)

    waited = [(rel(x), float(x.fields.get("wait_s", 0.0))) for x in timed if x.name == WAIT]
    call_waits = [
        (rel(x), float(x.fields.get("tokenguard.wait_s", 0.0) or 0.0))
        for x in timed
        if x.name == REQUEST
    ]
    bottom.scatter(
        [c[0] for c in call_waits],
        [c[1] for c in call_waits],
        s=12,
        color="tab:orange",
        label="time each call waited before it was sent",
    )
    if waited:
        bottom.vlines(
            [w[0] for w in waited],
            0,
            [w[1] for w in waited],
            color="tab:orange",
            alpha=0.4,
            label=f"waits of 1 s or more ({len(waited)})",
        )
    if limited:
        bottom.scatter(
            limited,
            [0] * len(limited),
            marker="x",
            color="tab:red",
            s=50,
            zorder=4,
            clip_on=False,
            label="429 absorbed",
        )
    bottom.set_ylabel("wait (s)")
    bottom.set_xlabel("seconds since the first event")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(alpha=0.3)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    return f"{len(calls)} calls over {end:.0f} s, {len(limited)} 429s, {len(waited)} long waits"
