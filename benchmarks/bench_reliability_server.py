"""What callers see when the server answers strangely: one row per fault, through the
real openai SDK against the emulator behind the suite's fault-injecting proxy (see
docs/reliability.md). Runs against whichever tokenguard is importable, so the same
script measures a checkout before and after a change.

Usage: python benchmarks/bench_reliability_server.py [--repeat N]
"""

from __future__ import annotations

import argparse
import email.utils
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reliability_support import CONTEXT_EXCEEDED, Fault, FaultProxy, rate_limited, too_large

import tokenguard as tg
from tokenguard.emulator import running

MODEL = "llama-3.1-8b-instant"
HELLO: Any = [{"role": "user", "content": "Hello"}]
WINDOW = 4.0  # the guard's minute, short so that the backoffs end within seconds


def _outcome(call: Callable[[], Any]) -> tuple[str, float]:
    start = time.monotonic()
    try:
        call()
    except Exception as exc:  # the row reports what the caller got
        return type(exc).__name__, time.monotonic() - start
    return "served", time.monotonic() - start


def _client(proxy: FaultProxy, **options: Any) -> Any:
    raw = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    return tg.instrument(raw, tpm=100_000, window=WINDOW, **options)


def _ask(client: Any, **extra: Any) -> Callable[[], Any]:
    return lambda: client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=16, **extra
    )


def served_retry_after(proxy: FaultProxy) -> str:
    client = _client(proxy, max_wait=5.0)
    proxy.inject(Fault(headers={"retry-after": "100000000"}))
    _outcome(_ask(client))
    got, took = _outcome(_ask(client))
    return f"next call: {got} after {took:.3f}s"


def retry_after_inf(proxy: FaultProxy) -> str:
    client = _client(proxy)
    proxy.inject(Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": "inf"}))
    got, took = _outcome(_ask(client))
    return f"{got} after {took:.3f}s"


def retry_after_zero(proxy: FaultProxy) -> str:
    client = _client(proxy)
    before = len(proxy.statuses())
    proxy.inject(
        *[Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": "0"})] * 3000
    )
    got, took = _outcome(_ask(client))
    sent = len(proxy.statuses()) - before
    proxy.faults.clear()
    return f"{got} after {took:.2f}s, {sent} requests sent ({sent / took:.1f}/s)"


def http_date(proxy: FaultProxy) -> str:
    client = _client(proxy)
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    proxy.inject(Fault(status=429, body=rate_limited(MODEL), headers={"retry-after": when}))
    got, took = _outcome(_ask(client))
    return f"{got} after {took:.2f}s (asked: 3 s)"


def _later_calls(client: Any) -> str:
    later = [_outcome(_ask(client))[0] for _ in range(5)]
    return ", ".join(f"{later.count(k)} {k}" for k in sorted(set(later)))


def context_refusal(proxy: FaultProxy) -> str:
    client = _client(proxy)
    proxy.inject(Fault(status=400, body=CONTEXT_EXCEEDED))
    got, _ = _outcome(_ask(client))
    return f"that call: {got}; next 5 calls: {_later_calls(client)}"


def limit_zero(proxy: FaultProxy) -> str:
    client = _client(proxy)
    proxy.inject(Fault(status=413, body=too_large(MODEL, 0)))
    got, _ = _outcome(_ask(client))
    return f"that call: {got}; next 5 calls: {_later_calls(client)}"


def cut_stream(proxy: FaultProxy) -> str:
    client = _client(proxy)
    seen: list[tg.events.Event] = []
    undo = tg.events.add_sink(seen.append)
    proxy.inject(Fault(cut_after=200))
    try:
        got, _ = _outcome(lambda: list(_ask(client, stream=True)()))
    finally:
        undo()
    [done] = [e.fields() for e in seen if e.name == "tokenguard.guard.request"]
    return (
        f"{got}; event: stream_closed_early={done.get('tokenguard.stream_closed_early')}, "
        f"error.type={done.get('error.type')}"
    )


FAULTS: list[tuple[str, Callable[[FaultProxy], str]]] = [
    ("retry-after: 100000000 on a served response, next call max_wait=5", served_retry_after),
    ("429 retry-after: inf", retry_after_inf),
    ("429 retry-after: 0 on every answer (3,000 of them)", retry_after_zero),
    ("429 retry-after: an HTTP date 3 s ahead", http_date),
    ("400 context_length_exceeded, models endpoint says 131,072", context_refusal),
    ("413 saying Limit 0", limit_zero),
    ("stream cut after 200 bytes", cut_stream),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for name, run in FAULTS:
        rows = []  # one per run, side by side: the figures vary with the machine's load
        for _ in range(args.repeat):
            tg.reset_defaults()
            with running(model=MODEL, tpm=100_000, rpm=10_000, window=60.0) as em:
                proxy = FaultProxy(em.base_url)
                try:
                    rows.append(run(proxy))
                finally:
                    proxy.close()
        print(f"{name}: {' | '.join(rows)}", flush=True)


if __name__ == "__main__":
    main()
