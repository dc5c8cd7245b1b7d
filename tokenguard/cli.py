"""The ``tokenguard`` command: ``demo`` (the main job) and ``count``.

``tokenguard demo`` runs a scripted conversation against the embedded Groq
emulator (or against Groq itself when ``GROQ_API_KEY`` is set): every request is
counted before it is sent, held by the limiter until the rate window has room,
and its count is checked against the ``usage`` the server reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"

_DEMO_TURNS = [
    "Hi! I am planning a three-day trip to Lisbon in spring. Where should I start?",
    "Which neighbourhoods are best for walking, and which ones have the best views?",
    "I like seafood. Suggest a few dishes I should try and what they are made of.",
    "How do I get from the airport to the city centre cheaply?",
    "Is a day trip to Sintra worth it, and how long does the train take?",
    "Give me a compact day-by-day plan that uses everything we discussed.",
    "What should I pack for rainy days?",
    "Thanks! Summarise the plan in five bullet points.",
]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenguard",
        description="Count, fit, rate-limit and log chat requests sent to Groq.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a scripted conversation through tokenguard (emulator, or Groq with GROQ_API_KEY)",
    )
    demo.add_argument(
        "--model", default="llama-3.1-8b-instant", help="model name (default: %(default)s)"
    )
    demo.add_argument("--turns", type=int, default=len(_DEMO_TURNS), help="user turns to send")
    demo.add_argument("--max-tokens", type=int, default=1200, help="completion tokens per call")
    demo.add_argument(
        "--window",
        type=float,
        default=None,
        help="length of the rate 'minute' in seconds (emulator default 5, Groq 60)",
    )
    demo.add_argument("--tpm", type=int, default=6000, help="tokens per window (default 6000)")
    demo.add_argument("--rpm", type=int, default=30, help="requests per window (default 30)")
    demo.add_argument(
        "--base-url", default=None, help="an OpenAI-compatible base URL to use instead"
    )

    count = sub.add_parser("count", help="count the prompt tokens of a JSON request file")
    count.add_argument(
        "file",
        help="JSON: a list of messages, or a whole chat.completions.create body "
        '({"model": ..., "messages": [...], "tools": [...], ...}); - for stdin',
    )
    count.add_argument(
        "--model",
        default=None,
        help="model (default: the body's model, else llama-3.1-8b-instant)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokenguard`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args, sys.stdout)
    return _count(args, sys.stdout)


def _count(args: argparse.Namespace, out: TextIO) -> int:
    from . import TokenGuardError, count_request

    try:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except OSError as exc:
        print(f"tokenguard count: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"tokenguard count: {args.file} is not JSON: {exc}", file=sys.stderr)
        return 2
    messages: Any
    body: dict[str, Any] = {}
    if isinstance(data, dict):
        # A whole request body: read through the same path as tg.count_request(**body).
        body = dict(data)
        messages = body.pop("messages", None)
        body_model = body.pop("model", None)
    else:
        messages, body_model = data, None
    model = args.model or body_model or "llama-3.1-8b-instant"
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    try:
        counted = count_request(messages, model=model, **body)
    except TokenGuardError as exc:
        print(f"tokenguard count: {exc}", file=sys.stderr)
        return 1
    kind = "exact" if counted.exact else "conservative estimate"
    print(f"{counted.prompt_tokens} prompt tokens ({kind}) for {model}", file=out)
    if max_tokens is not None:
        print(f"{counted.total} tokens requested with max_tokens={max_tokens}", file=out)
    return 0


@contextmanager
def _endpoint(args: argparse.Namespace, window: float) -> Iterator[tuple[str, str, str]]:
    """Yield (base_url, api_key, description) for the demo's server."""
    key = os.environ.get("GROQ_API_KEY")
    if args.base_url:
        yield args.base_url, key or "not-needed", args.base_url
    elif key:
        yield GROQ_BASE_URL, key, "Groq (GROQ_API_KEY is set)"
    else:
        from .emulator import running

        with running(model=args.model, tpm=args.tpm, rpm=args.rpm, window=window) as em:
            yield em.base_url, "emulator-key", f"the embedded Groq emulator at {em.base_url}"


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from . import events

    # The demo is an application: it owns its output. Events are shown as its own lines
    # instead of structlog's default printing, and the default is restored afterwards.
    def show(event: events.Event) -> None:
        fields = " ".join(f"{k}={v}" for k, v in event.fields().items())
        print(f"  event {event.name} {fields}", file=out)

    events.use_structlog(False)
    undo = events.add_sink(show)
    try:
        return _demo_run(args, out)
    finally:
        undo()
        events.use_structlog(True)


def _demo_run(args: argparse.Namespace, out: TextIO) -> int:
    from openai import APIError, OpenAI

    from . import Limiter, count_request

    remote = bool(args.base_url or os.environ.get("GROQ_API_KEY"))
    window = args.window if args.window is not None else (60.0 if remote else 5.0)
    turns = _DEMO_TURNS[: max(1, min(args.turns, len(_DEMO_TURNS)))]
    limiter = Limiter(tpm=args.tpm, rpm=args.rpm, window=window)
    system = "You are a concise, friendly travel assistant."
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]

    with _endpoint(args, window) as (base_url, api_key, where):
        print(f"tokenguard demo: {len(turns)} turns with {args.model} on {where}", file=out)
        print(
            f"limits: {args.tpm} tokens and {args.rpm} requests per {window:g} s window; "
            f"max_tokens={args.max_tokens}",
            file=out,
        )
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        header = f"{'turn':>4} {'counted':>7} {'server':>6} {'match':>5} {'out':>5} {'held s':>6}"
        print(header + "  remaining-tokens", file=out)
        totals = {"prompt": 0, "completion": 0, "held": 0.0, "mismatch": 0}
        started = time.monotonic()
        for n, text in enumerate(turns, start=1):
            messages.append({"role": "user", "content": text})
            counted = count_request(messages, model=args.model, max_tokens=args.max_tokens)
            reservation = limiter.acquire(counted.total)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=args.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=args.max_tokens,
                )
            except APIError as exc:
                # The request may have reached the server: keep the estimate charged.
                reservation.commit(counted.total)
                print(f"turn {n}: the server refused the request: {exc}", file=sys.stderr)
                return 1
            except BaseException:
                reservation.cancel()
                raise
            completion = raw.parse()
            usage = completion.usage
            prompt_tokens = usage.prompt_tokens if usage else counted.prompt_tokens
            completion_tokens = usage.completion_tokens if usage else 0
            reservation.commit(prompt_tokens + completion_tokens, headers=raw.headers)
            match = prompt_tokens == counted.prompt_tokens
            totals["prompt"] += prompt_tokens
            totals["completion"] += completion_tokens
            totals["held"] += reservation.waited
            totals["mismatch"] += 0 if match else 1
            remaining = raw.headers.get("x-ratelimit-remaining-tokens", "-")
            print(
                f"{n:>4} {counted.prompt_tokens:>7} {prompt_tokens:>6} "
                f"{'yes' if match else 'NO':>5} {completion_tokens:>5} "
                f"{reservation.waited:>6.2f}  {remaining}",
                file=out,
            )
            answer = completion.choices[0].message.content or ""
            messages.append({"role": "assistant", "content": answer})
        elapsed = time.monotonic() - started
        print(
            f"done in {elapsed:.1f} s: {totals['prompt']} prompt + {totals['completion']} "
            f"completion tokens; the limiter held requests {totals['held']:.1f} s in all; "
            f"pre-flight counts matched the server on {len(turns) - int(totals['mismatch'])}"
            f"/{len(turns)} calls; no request was refused by the server.",
            file=out,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
