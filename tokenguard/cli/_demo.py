"""``tokenguard demo``: the whole product at work on one shared limit.

Three acts against the embedded Groq emulator (or Groq itself with ``GROQ_API_KEY``):

1. a conversation, sent through a function decorated with ``@tg.guard``, that outgrows
   the per-request room of the TPM limit and then the context window: the guard
   truncates it;
2. the same kind of conversation kept by ``tg.Conversation``, which summarizes its
   oldest turns through a client wrapped with ``tg.instrument``;
3. a burst of parallel requests (asyncio) through an instrumented ``AsyncOpenAI``, while
   an unguarded client spends part of the same quota: the guard holds its calls for
   the room the server's headers show, and absorbs any 429 the other client causes.

Every event goes to a JSONL file (for ``tokenguard report``) and to the display.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ._common import EXIT_DOES_NOT_FIT, EXIT_OK, UsageError

if TYPE_CHECKING:
    from ..events import GuardRequest
    from ..sinks import JsonlSink

__all__ = ["DemoSettings", "Stats", "demo_command"]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"
#: The seed's situation: Groq's free tier on llama3-8b-8192 (retired by Groq since; the
#: emulator still serves it with its old limits).
EMULATOR_MODEL = "llama3-8b-8192"
#: What the demo uses against Groq itself: a model Groq still serves.
GROQ_MODEL = "llama-3.1-8b-instant"

_TOPICS = [
    "the harbour district",
    "the old tram lines",
    "the river ferries",
    "the hill-top gardens",
    "the fish market",
    "the tile museum",
    "the night buses",
    "the coastal trail",
    "the bakery streets",
    "the castle walls",
    "the university quarter",
    "the botanical park",
]


def _notes(topic: str, sentences: int) -> str:
    """Deterministic filler of roughly 20 tokens per sentence (no content is ever logged)."""
    parts = [
        f"Note {i + 1} on {topic}: opening hours, prices, how crowded it gets at noon, "
        f"and which entrance is quieter on day {i % 7 + 1}."
        for i in range(sentences)
    ]
    return " ".join(parts)


@dataclass(frozen=True)
class DemoSettings:
    """What one demo run does (from the command line)."""

    model: str
    base_url: str | None
    api_key: str
    remote: bool
    window: float
    tpm: int | None
    rpm: int | None
    context_window: int | None
    port: int
    burst: int
    plain: bool
    events_path: str
    latency: float = 0.1


@dataclass
class Stats:
    """What the display shows, fed by the event sink (any thread) and the script."""

    window: float
    tpm: int | None
    started: float = field(default_factory=time.monotonic)
    act: str = "starting"
    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    compared: int = 0
    exact: int = 0
    waited: float = 0.0
    longest_wait: float = 0.0
    absorbed_429: int = 0
    truncated: int = 0
    summarized: int = 0
    summary_calls: int = 0
    unguarded_sent: int = 0
    unguarded_refused: int = 0
    unguarded_tokens: int = 0
    refusals: int = 0
    in_flight: int = 0
    server_remaining: int | None = None
    events_written: int = 0
    recent: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=8))
    spent: deque[tuple[float, int]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record one happening (shown in the live list, printed in plain mode)."""
        now = time.monotonic() - self.started
        with self.lock:
            self.recent.append((now, text))
        for listener in self.listeners:
            listener(f"{now:6.1f}s  {text}")

    def spend(self, tokens: int) -> None:
        with self.lock:
            self.spent.append((time.monotonic(), tokens))

    def in_window(self) -> int:
        """Tokens of the calls that ended within the last window (the client's view)."""
        cutoff = time.monotonic() - self.window
        with self.lock:
            while self.spent and self.spent[0][0] <= cutoff:
                self.spent.popleft()
            return sum(t for _, t in self.spent)


def _on_event(stats: Stats, event: Any) -> None:
    """Turn the guard's events into the display's counters and happenings."""
    from .. import events as ev

    if isinstance(event, ev.GuardRequest):
        _on_request(stats, event)
    elif isinstance(event, ev.GuardRetry):
        if event.kind == "rate_limited":
            with stats.lock:
                stats.absorbed_429 += 1
            stats.note(f"429 from the server absorbed: retrying in {event.wait_s:.1f} s")
        else:
            stats.note(f"retry after {event.kind} ({event.status})")
    elif isinstance(event, ev.FitSummarized):
        with stats.lock:
            stats.summarized += 1
            stats.summary_calls += event.summary_calls
        stats.note(
            f"summarized {event.summarized} old messages: {event.tokens_before} -> "
            f"{event.tokens_after} tokens (bound by {event.bound_by})"
        )
    elif isinstance(event, ev.FitTruncated):
        with stats.lock:
            stats.truncated += 1
        stats.note(
            f"truncated: dropped {event.dropped} old messages, {event.tokens_before} -> "
            f"{event.tokens_after} tokens (bound by {event.bound_by}, room {event.allowed})"
        )
    elif isinstance(event, ev.FitFallback):
        stats.note(f"summary not used ({event.fallback}): truncated instead")
    elif isinstance(event, ev.GuardLimitLearned):
        stats.note(f"learned the server's {event.limit}: {event.learned} tokens")


def _on_request(stats: Stats, event: GuardRequest) -> None:
    """Count one finished call and note it."""
    tokens = event.limit_tokens
    if tokens is None and event.input_tokens is not None:
        tokens = event.input_tokens + (event.output_tokens or 0)
    with stats.lock:
        stats.calls += 1
        stats.waited += event.wait_s
        stats.longest_wait = max(stats.longest_wait, event.wait_s)
        if event.error_type is not None:
            stats.failed += 1
        if event.input_tokens is not None:
            stats.input_tokens += event.input_tokens
            stats.output_tokens += event.output_tokens or 0
            stats.compared += 1
            counted = event.estimated_tokens - event.completion_reserve
            stats.exact += counted == event.input_tokens
        if event.server_remaining_tokens is not None:
            stats.server_remaining = event.server_remaining_tokens
    if tokens:
        stats.spend(tokens)
    counted = event.estimated_tokens - event.completion_reserve
    detail = (
        f"counted {counted}, server {event.input_tokens}"
        if event.input_tokens is not None
        else f"failed: {event.error_type}"
    )
    wait = f", waited {event.wait_s:.1f} s" if event.wait_s >= 0.05 else ""
    retries = f", {event.retries} retries" if event.retries else ""
    site = (
        "instrumented client"
        if event.site.endswith("chat.completions.create")
        else "@tg.guard " + event.site.rsplit(".", 1)[-1]
    )
    stats.note(f"call {stats.calls:>3} ({site}): {detail}{wait}{retries}")


# -- the script ------------------------------------------------------------------------


def _act1(s: DemoSettings, stats: Stats, lim: Any, turns: int) -> None:
    """A conversation through a decorated function, outgrowing the TPM room and the
    context window: the guard truncates it (keeping the system message and the newest
    turn)."""
    from openai import OpenAI

    import tokenguard as tg

    plain = OpenAI(base_url=s.base_url, api_key=s.api_key, max_retries=0)

    @tg.guard(limiter=lim)
    def ask(messages: list[Any], model: str = s.model, max_tokens: int = 300) -> Any:
        return plain.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    info = tg.get_model(s.model)
    limit = s.tpm or getattr(info.tier_limits("free"), "tpm", None) or info.context_window
    room = min(limit, info.context_window)
    history: list[Any] = [{"role": "system", "content": "You are a concise travel planner."}]
    for turn in range(turns):
        topic = _TOPICS[turn % len(_TOPICS)]
        history.append({"role": "user", "content": f"My notes: {_notes(topic, 70)}"})
        size = tg.count_tokens(history, model=s.model)
        stats.note(
            f"act 1, turn {turn + 1}: the history is {size:,} tokens "
            f"(context window {info.context_window:,}, one request may hold {room:,})"
        )
        reply = _guarded(stats, lambda: ask(history))
        if reply is not None:
            history.append({"role": "assistant", "content": reply.choices[0].message.content})


def _act2(s: DemoSettings, stats: Stats, lim: Any, turns: int) -> None:
    """The same kind of conversation kept by tg.Conversation, which summarizes its
    oldest turns with a guarded client."""
    from openai import OpenAI

    import tokenguard as tg

    client = tg.instrument(
        OpenAI(base_url=s.base_url, api_key=s.api_key, max_retries=0), limiter=lim
    )
    conv = tg.Conversation(
        system="You are a concise travel planner.",
        model=s.model,
        max_prompt_tokens=2_500,
        on_overflow="summarize",
        summarizer=tg.ClientSummarizer(client, model=s.model),
    )
    for turn in range(turns):
        topic = _TOPICS[(turn + 5) % len(_TOPICS)]
        conv.add_user(f"More notes: {_notes(topic, 35)}")
        stats.note(
            f"act 2, turn {turn + 1}: {len(conv.history)} messages kept, "
            f"{len(conv.messages)} sent ({conv.tokens:,} tokens)"
        )

        def send() -> Any:
            return client.chat.completions.create(
                model=s.model, messages=conv.messages, max_tokens=200
            )

        reply = _guarded(stats, send)
        if reply is not None:
            conv.add_assistant(reply.choices[0].message.content or "")


async def _act3(s: DemoSettings, stats: Stats, lim: Any) -> None:
    """A burst of parallel requests on one limit while an unguarded client spends part of
    the same quota."""
    import openai
    from openai import AsyncOpenAI

    import tokenguard as tg

    guarded = tg.instrument(
        AsyncOpenAI(base_url=s.base_url, api_key=s.api_key, max_retries=0), limiter=lim
    )
    unguarded = AsyncOpenAI(base_url=s.base_url, api_key=s.api_key, max_retries=0)

    async def one(i: int) -> None:
        with stats.lock:
            stats.in_flight += 1
        try:
            await guarded.chat.completions.create(
                model=s.model,
                messages=[{"role": "user", "content": _notes(_TOPICS[i % 12], 30)}],
                max_tokens=200,
            )
        except openai.APIStatusError as exc:
            with stats.lock:
                stats.refusals += 1
            stats.note(f"a refusal reached the caller: {exc.status_code}")
        finally:
            with stats.lock:
                stats.in_flight -= 1

    async def other(i: int) -> None:
        # Someone else's code on the same key: no guard, no limiter, no retry.
        try:
            r = await unguarded.chat.completions.create(
                model=s.model,
                messages=[{"role": "user", "content": _notes(_TOPICS[i], 60)}],
                max_tokens=300,
            )
        except openai.RateLimitError:
            with stats.lock:
                stats.unguarded_sent += 1
                stats.unguarded_refused += 1
            stats.note("unguarded client: 429 (it has no guard)")
            return
        used = r.usage.total_tokens if r.usage else 0
        with stats.lock:
            stats.unguarded_sent += 1
            stats.unguarded_tokens += used
        stats.spend(used)
        stats.note(f"unguarded client spent {used:,} tokens of the same quota")

    tasks = [asyncio.create_task(other(i)) for i in range(3)]
    await asyncio.sleep(0.05)  # the other code gets there first
    tasks += [asyncio.create_task(one(i)) for i in range(s.burst)]
    await asyncio.gather(*tasks)


def _guarded(stats: Stats, call: Callable[[], Any]) -> Any:
    """Run one guarded call; a refusal that still reaches the caller is counted."""
    import openai

    try:
        return call()
    except openai.APIStatusError as exc:
        with stats.lock:
            stats.refusals += 1
        stats.note(f"a refusal reached the caller: {exc.status_code}")
        return None


def _script(s: DemoSettings, stats: Stats, log: JsonlSink) -> None:
    import tokenguard as tg

    if s.remote and s.tpm is None:
        lim = tg.Limiter.from_model(s.model, window=s.window)
    else:
        lim = tg.Limiter(tpm=s.tpm, rpm=s.rpm, window=s.window)
    # Against Groq the limits come from the model table: show the one in force, and
    # record it for the report and its plot.
    stats.tpm = lim.limits.tpm
    log.write_limits(lim)
    stats.act = "act 1/3: a conversation outgrows the room; @tg.guard truncates it"
    stats.note(stats.act)
    _act1(s, stats, lim, turns=6)
    stats.act = "act 2/3: tg.Conversation summarizes its oldest turns"
    stats.note(stats.act)
    _act2(s, stats, lim, turns=6)
    stats.act = f"act 3/3: {s.burst} parallel requests + an unguarded client on one quota"
    stats.note(stats.act)
    asyncio.run(_act3(s, stats, lim))
    stats.act = "done"


# -- display -----------------------------------------------------------------------------


def _summary_rows(stats: Stats, elapsed: float) -> list[tuple[str, str]]:
    return [
        ("calls through the guard", f"{stats.calls}"),
        ("tokens in / out", f"{stats.input_tokens:,} / {stats.output_tokens:,}"),
        ("pre-flight count = server's usage", f"{stats.exact}/{stats.compared} calls"),
        (
            "time waited (all calls, summed)",
            f"{stats.waited:.1f} s (longest {stats.longest_wait:.1f} s)",
        ),
        ("429s absorbed by the guard", f"{stats.absorbed_429}"),
        (
            "fits",
            f"{stats.truncated} truncated, {stats.summarized} summarized "
            f"({stats.summary_calls} summary calls)",
        ),
        (
            "unguarded client",
            f"{stats.unguarded_sent} sent, {stats.unguarded_refused} refused "
            f"by the server, {stats.unguarded_tokens:,} tokens",
        ),
        ("refusals that reached the caller", f"{stats.refusals}"),
        ("elapsed", f"{elapsed:.1f} s"),
    ]


def _live_view(stats: Stats, header: str) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    used = stats.in_window()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    limit = stats.tpm
    bar: Any
    if limit:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=limit, completed=min(used, limit), width=40),
            Text(f"{used:,} / {limit:,} tokens in the last {stats.window:g} s"),
        )
    else:
        bar = Text(f"{used:,} tokens in the last {stats.window:g} s")
    grid.add_row("window", bar)
    with stats.lock:
        server = "-" if stats.server_remaining is None else f"{stats.server_remaining:,}"
        grid.add_row("requests done", f"{stats.calls}  (in flight: {stats.in_flight})")
        grid.add_row("server says remaining", server)
        grid.add_row("tokens in / out", f"{stats.input_tokens:,} / {stats.output_tokens:,}")
        grid.add_row("pre-flight exact", f"{stats.exact}/{stats.compared}")
        grid.add_row("waited", f"{stats.waited:.1f} s (longest {stats.longest_wait:.1f} s)")
        grid.add_row("429s absorbed", str(stats.absorbed_429))
        grid.add_row("fits", f"{stats.truncated} truncated, {stats.summarized} summarized")
        grid.add_row(
            "unguarded client", f"{stats.unguarded_sent} sent, {stats.unguarded_refused} refused"
        )
        grid.add_row("refusals to caller", str(stats.refusals))
        recent = list(stats.recent)
    log = Text("\n".join(f"{t:6.1f}s  {line}" for t, line in recent), style="dim")
    return Panel(
        Group(Text(stats.act, style="bold cyan"), grid, Text(""), log),
        title=header,
        border_style="blue",
    )


@contextmanager
def _display(s: DemoSettings, stats: Stats, header: str, out: TextIO) -> Iterator[None]:
    if s.plain:
        print(header, file=out)
        stats.listeners.append(lambda line: print(line, file=out, flush=True))
        yield
        return
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out)

    class View:
        def __rich__(self) -> Any:
            return _live_view(stats, header)

    with Live(View(), console=console, refresh_per_second=8, transient=False):
        yield


def _print_summary(s: DemoSettings, stats: Stats, elapsed: float, out: TextIO) -> None:
    rows = _summary_rows(stats, elapsed)
    if s.plain:
        print("summary", file=out)
        for label, value in rows:
            print(f"  {label:<34} {value}", file=out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        style = "red" if label.startswith("refusals") and stats.refusals else None
        table.add_row(label, value, style=style)
    Console(file=out).print(table)


# -- the command ---------------------------------------------------------------------------


@contextmanager
def _server(s: DemoSettings) -> Iterator[tuple[str, str]]:
    if s.base_url is not None:
        yield s.base_url, s.base_url
        return
    from ..emulator import running

    try:
        em_ctx = running(
            model=s.model,
            tpm=s.tpm,
            rpm=s.rpm,
            window=s.window,
            context_window=s.context_window,
            completion_tokens=150,
            latency=s.latency,
            port=s.port,
        )
        em = em_ctx.__enter__()
    except OSError as exc:
        raise UsageError(
            f"cannot start the emulator on port {s.port}: {exc.strerror or exc} "
            "(is the port busy? --port 0 picks a free one)"
        ) from None
    try:
        yield em.base_url, f"the embedded Groq emulator at {em.base_url}"
    finally:
        em_ctx.__exit__(None, None, None)


def demo_command(s: DemoSettings, out: TextIO, err: TextIO) -> int:
    """Run ``tokenguard demo``; returns the exit status (1 when a refusal reached a
    caller or the server could not be used)."""
    from .. import events
    from ..sinks import JsonlSink

    stats = Stats(window=s.window, tpm=s.tpm)
    try:
        # A fresh file: the report of this run reads this run's events only.
        stream = open(s.events_path, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot write the event log {s.events_path}: {exc.strerror}") from None
    log = JsonlSink(stream)
    # The demo is an application: it routes tokenguard's events to its own file and
    # display only, and puts the default back when it is done.
    events.use_logging(False)
    undo_log = events.add_sink(log)
    undo_view = events.add_sink(lambda e: _on_event(stats, e))
    try:
        status = _run(s, stats, log, out, err)
    finally:
        undo_view()
        undo_log()
        events.use_logging(True)
        stream.close()
    if status == EXIT_OK and stats.refusals:
        status = EXIT_DOES_NOT_FIT
    print(f"events: {s.events_path} ({log.lines} lines)", file=out)
    _print_next(s.events_path, out)
    return status


def _run(s: DemoSettings, stats: Stats, log: JsonlSink, out: TextIO, err: TextIO) -> int:
    """The script on its server, with the display and the summary; a server that cannot
    be used is reported on ``err``."""
    import openai

    from .. import TokenGuardError

    try:
        with _server(s) as (base_url, where):
            s = DemoSettings(**{**s.__dict__, "base_url": base_url})
            limits = f"{s.tpm:,} TPM, {s.rpm} RPM" if s.tpm else "the model table's limits"
            header = f"tokenguard demo: {s.model}, {limits} per {s.window:g} s window"
            print(f"server: {where}", file=out)
            if s.remote:
                print(
                    "GROQ_API_KEY is set: running against Groq with real limits; this "
                    "takes several minutes (Ctrl-C stops it cleanly)",
                    file=out,
                )
            stats.started = started = time.monotonic()
            status = EXIT_OK
            try:
                with _display(s, stats, header, out):
                    _script(s, stats, log)
            except KeyboardInterrupt:
                print(
                    "\ninterrupted: the calls in flight were cancelled and their "
                    "reservations released",
                    file=err,
                )
                status = 130
            _print_summary(s, stats, time.monotonic() - started, out)
            return status
    except openai.AuthenticationError:
        why = "the server refused the API key (401); check GROQ_API_KEY"
    except openai.APIConnectionError as exc:
        why = f"cannot reach the server ({exc.__cause__ or exc}); is the network up?"
    except openai.APIStatusError as exc:
        why = f"the server answered {exc.status_code}: {exc.message}"
    except TokenGuardError as exc:
        why = str(exc)
    print(f"tokenguard demo: {why}", file=err)
    return EXIT_DOES_NOT_FIT


def _print_next(events_path: str, out: TextIO) -> None:
    """The command that reports this run (with a plot when matplotlib is there)."""
    import importlib.util

    from .._extras import install_hint

    command = f"tokenguard report {events_path}"
    if importlib.util.find_spec("matplotlib") is not None:
        print(f"next:   {command} --plot tokenguard-demo.png", file=out)
    else:
        print(f"next:   {command}", file=out)
        print(
            f"        (for a plot: {install_hint('plot')}, then add --plot tokens.png)",
            file=out,
        )


def default_events_path() -> str:
    """Where the demo writes its events by default: a new file in the temp directory."""
    import tempfile

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"tokenguard-demo-{stamp}-{os.getpid()}.jsonl")
