"""The benchmark's tables: each a scenario (server, limits, minute, traffic, retry budget).

Every tool runs every scenario it can; a row is repeated (``--repeats``, 3 by default)
and reported as the median with the min-max of the runs. Invariant: a scenario says
which tools it cannot judge (``cannot_judge``), so a table never reads as a verdict on
a tool whose limiter it switched off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .workload import LATENCY, RPM, TPM, Traffic

# The common retry budget of the "equal retries" tables: attempts per call, the first
# included (the SDK's max_retries=10, the figure the SDK needs to stop losing calls here).
ATTEMPTS = 11
REAL_LATENCY = 0.3  # a realistic time to first byte and answer for an 8B model on Groq
# A paid-tier-sized limit: the order of Groq's developer tier for this model (each
# account's own limits differ; the emulator enforces these).
PAID_TPM, PAID_RPM = 250_000, 1_000
# Tools that count a minute as 60 s of the clock (their windows do not scale): with a
# scaled minute they are given the limit per real minute and cannot follow the refill.
CLOCK_MINUTE = ("openlimit_tool", "litellm_router", "plsno429_tool", "infermesh_tool")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    what: str  # one paragraph for the document
    window: float = 2.0
    windows: int = 12
    refund: bool = True
    attempts: int | None = None  # None: each tool's own retries
    latency: float = LATENCY
    tpm: int = TPM
    rpm: int = RPM
    traffic: Traffic = field(default_factory=Traffic)
    stream: bool = False
    all_modes: bool = False  # every mode a tool has (else its first)
    tools: tuple[str, ...] | None = None  # None: every tool
    workers: tuple[tuple[str, int], ...] = (("threads", 8), ("tasks", 32), ("processes", 4))
    # Callers in each process of the "processes" mode: processes x this should match the
    # threads mode, or the process rows measure too few callers rather than their limiter.
    threads_per_process: int = 2
    cannot_judge: tuple[str, ...] = ()
    headline: bool = False
    tier: str = "free"  # told to tools that know Groq's tiers (tokenguard's day limits)

    def workers_for(self, mode: str) -> int:
        return dict(self.workers)[mode]

    @property
    def open_loop(self) -> bool:
        return self.traffic.kind != "closed"


def _poisson(load: float) -> Scenario:
    pct = round(load * 100)
    return Scenario(
        key=f"poisson{pct}",
        title=f"Open loop: Poisson arrivals at {pct}% of the limit, {REAL_LATENCY * 1e3:g} ms",
        what=f"Requests arrive whatever the tool is doing, at {pct}% of the rate the limit "
        "allows for this mix (TPM / the mean request's prompt + completion, and RPM, "
        "whichever is lower), each from one of 8 callers drawn at random; the server "
        f"answers in {REAL_LATENCY * 1e3:g} ms. Above 100% a queue must grow or requests "
        "must fail: the table says which each tool chose.",
        latency=REAL_LATENCY,
        traffic=Traffic(kind="poisson", load=load),
        cannot_judge=CLOCK_MINUTE,
    )


SCENARIOS = [
    Scenario(
        key="defaults",
        title="Compressed minute, each tool's own defaults (refunding server)",
        what="Closed loop (workers back to back), the minute scaled to 2 s; each tool with "
        "its own retry defaults, as a user who installs it gets them.",
        all_modes=True,
        cannot_judge=CLOCK_MINUTE,
    ),
    Scenario(
        key="equal",
        title=f"Compressed minute, equal retry budgets: {ATTEMPTS} attempts per call",
        what=f"As above, with every tool given the same budget: {ATTEMPTS} attempts per call "
        "(the first and up to 10 retries; each tool's own knob, listed below). The 429 "
        "column is the headline: with retries equal, errors seen by callers stop measuring "
        "the retry budget, and 429s say how well each tool predicts the server.",
        attempts=ATTEMPTS,
        all_modes=True,
        cannot_judge=CLOCK_MINUTE,
        headline=True,
    ),
    Scenario(
        key="norefund",
        title="Compressed minute, server that never refunds unused `max_tokens`",
        what="Each tool's defaults, one mode per tool, against a server that keeps the whole "
        "`max_tokens` reservation (what Groq's bucket does at admission, never given back).",
        refund=False,
        cannot_judge=CLOCK_MINUTE,
    ),
    Scenario(
        key="real",
        title="Groq's real 60 s minute, free-tier limits, own defaults",
        what="The minute is 60 s of the clock, as Groq counts it, so tools that count clock "
        "minutes are judged on their own terms; 5 minutes per run (the first and last left "
        "out of goodput: 3 steady minutes).",
        window=60.0,
        windows=5,
        tools=(*CLOCK_MINUTE, "bare", "token_throttle_tool", "tokenguard_guard"),
        headline=True,
    ),
    Scenario(
        key="real-equal",
        title=f"Groq's real 60 s minute, equal retry budgets ({ATTEMPTS} attempts)",
        what="As above, every tool given the same retry budget.",
        window=60.0,
        windows=5,
        attempts=ATTEMPTS,
        tools=(*CLOCK_MINUTE, "bare", "token_throttle_tool", "tokenguard_guard"),
        headline=True,
    ),
    _poisson(0.5),
    _poisson(0.9),
    _poisson(1.2),
    Scenario(
        key="burst",
        title="Bursts after idle: 1.5 minutes' tokens at once, every 4 minutes",
        what="Every 4 (scaled) minutes, after idle, requests worth 1.5 x TPM arrive at once "
        f"from 8 callers; {REAL_LATENCY * 1e3:g} ms latency. A bucket that starts full can "
        "send one minute's worth at once; the rest must wait for the refill.",
        latency=REAL_LATENCY,
        traffic=Traffic(kind="burst", load=1.5, period=4),
        cannot_judge=CLOCK_MINUTE,
    ),
    Scenario(
        key="stream",
        title=f"Streaming calls (`stream=True`, read to the end), {REAL_LATENCY * 1e3:g} ms",
        what="Closed loop, every call streamed with `stream_options={'include_usage': True}` "
        "and read to its last chunk by the caller.",
        latency=REAL_LATENCY,
        stream=True,
        cannot_judge=CLOCK_MINUTE,
    ),
    Scenario(
        key="paid",
        title=f"Paid-tier limit ({PAID_TPM:,} TPM, {PAID_RPM:,} RPM), 10 s minute",
        what="A limit the size of a paid tier: 32 threads (64 tasks, 4 processes x 8 threads) "
        "closed loop, "
        f"{REAL_LATENCY * 1e3:g} ms latency, the minute scaled to 10 s, 8 minutes. "
        "tokenguard is told `tier='developer'`: with the default `tier='free'` its model "
        "table adds the free tier's day limits (500,000 TPD) to the limits given, and at "
        "this rate it would stop for the rest of the (scaled) day within two minutes.",
        window=10.0,
        windows=8,
        latency=REAL_LATENCY,
        tpm=PAID_TPM,
        rpm=PAID_RPM,
        tier="developer",
        workers=(("threads", 32), ("tasks", 64), ("processes", 4)),
        threads_per_process=8,
        cannot_judge=CLOCK_MINUTE,
    ),
]
BY_KEY = {s.key: s for s in SCENARIOS}
