"""A day limit the limiter was not told: how many requests the server refuses.

The emulator has a small TPD (and a short "minute", so the day is short too); an
instrumented client whose limiter knows only the TPM sends requests one after another,
with four threads, through the real openai SDK; the limiter is in memory or on a
``redis-server`` started here. Prints one JSON line: what callers saw by type and what
the server answered.

    python benchmarks/day_limit.py [--redis] [--calls 120]
"""

from __future__ import annotations

import argparse
import collections
import json
import threading

import openai

import tokenguard as tg
from tokenguard.emulator import running

MODEL = "llama-3.1-8b-instant"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--calls", type=int, default=120)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    window, tpm, tpd = 0.1, 2_000, 5_000  # a day of 144 s: 5,000 tokens refill 35 a second
    srv = None
    if args.redis:
        from redis_faults import Server

        srv = Server()
    lim = tg.Limiter(tpm=tpm, window=window, redis=srv.client() if srv else None, key="day")
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    with running(model=MODEL, tpm=tpm, rpm=10**6, tpd=tpd, window=window) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="k", max_retries=0),
            limiter=lim,
            max_wait=1.0,
        )
        left = iter(range(args.calls))

        def worker() -> None:
            while True:
                with lock:
                    n = next(left, None)
                if n is None:
                    return
                try:
                    client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"Question {n}: say hi."}],
                        max_tokens=50,
                    )
                    kind = "served"
                except Exception as exc:  # counted by type
                    limit = getattr(exc, "limit_name", None)
                    kind = type(exc).__name__ + (f" ({limit})" if limit else "")
                with lock:
                    outcomes[kind] += 1

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        chat = [r for r in em.log if r.endpoint == "chat"]
    if srv is not None:
        srv.close()
    statuses = collections.Counter(r.status for r in chat)
    print(
        json.dumps(
            {
                "backend": "redis" if args.redis else "memory",
                "callers": dict(outcomes),
                "server": {str(k): v for k, v in sorted(statuses.items())},
                "limits": str(lim.limits),
            }
        )
    )


if __name__ == "__main__":
    main()
