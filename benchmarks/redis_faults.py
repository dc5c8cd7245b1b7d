"""Redis faults, measured: what callers saw and what was admitted against the limit.

Each scenario runs against its own real ``redis-server`` (no persistence) and prints one
JSON line. Run it on any checkout (``PYTHONPATH=<checkout> python
benchmarks/redis_faults.py``) to compare before and after; the figures are in
docs/reliability.md ("Redis faults").

Redis's clock is made to lie by adding a skew to the time the scripts read: through
``RedisBackend._skew`` where it exists (added to Redis ``TIME`` inside the scripts), else
through the older ``_test_clock`` (the time the scripts use instead of ``TIME``: the
host's clock plus the skew, this machine being the Redis host).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import redis

import tokenguard as tg

WORKER = """
import sys, time, redis, tokenguard as tg
port, key, tpm, window, mode = sys.argv[1:6]
client = redis.Redis(port=int(port), socket_connect_timeout=0.3, socket_timeout=2.0)
lim = tg.Limiter(tpm=int(tpm), window=float(window), redis=client, key=key, fail_open=True)
if mode == "wait":
    print("ready", flush=True)
    lim.acquire(int(tpm))
    print("admitted", flush=True)
    time.sleep(60)
lim.acquire(1).commit(1)
print("ready", flush=True)
sys.stdin.readline()  # every process has been on the key: one more call sees them all
lim.acquire(1).commit(1)
print("synced", flush=True)
sys.stdin.readline()  # go: Redis is down now
got, end = 0, time.monotonic() + float(sys.argv[6])
while time.monotonic() < end:
    try:
        lim.acquire(10, max_wait=0)
        got += 10
    except tg.RateLimitTimeout:
        time.sleep(0.02)
print(got, flush=True)
"""


class Server:
    """A redis-server on a free port that can be SIGKILLed and started again."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._dir = tempfile.TemporaryDirectory(prefix="tokenguard-faults-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self._dir.name),
            ],
            stdout=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                if probe.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def signal(self, sig: int) -> None:
        """SIGSTOP freezes it (connections accepted, nothing answered); SIGCONT thaws."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.3, socket_timeout=2.0)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._dir.cleanup()


def skew(lim: tg.Limiter, seconds: float) -> None:
    backend: Any = lim._backend
    if hasattr(backend, "_skew"):
        backend._skew = seconds
    else:
        backend._test_clock = lambda: time.time() + seconds


def greedy(lim: tg.Limiter, step: int, seconds: float) -> int:
    got, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            lim.acquire(step, max_wait=0)
            got += step
        except tg.RateLimitTimeout:
            time.sleep(0.02)
    return got


def clock_back(srv: Server) -> dict[str, Any]:
    """Two callers wait for a drained bucket (100 per 2 s) when Redis's clock steps 30 s
    back: one without max_wait (due in 2 s), one with max_wait=8 behind it."""
    lim = tg.Limiter(tpm=100, window=2.0, redis=srv.client(), key="back")
    lim.acquire(100).commit(100)
    held: dict[str, Any] = {}

    def wait(name: str, max_wait: float | None) -> None:
        t0 = time.monotonic()
        try:
            lim.acquire(100, max_wait=max_wait).commit(100)
            held[name] = ["admitted", round(time.monotonic() - t0, 2)]
        except tg.RateLimitTimeout:
            held[name] = ["refused", round(time.monotonic() - t0, 2)]

    threads = [
        threading.Thread(target=wait, args=("no_max_wait", None), daemon=True),
        threading.Thread(target=wait, args=("max_wait_8", 8.0), daemon=True),
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(0.2)
    skew(lim, -30.0)
    for t in threads:
        t.join(45)
    for name in ("no_max_wait", "max_wait_8"):
        held.setdefault(name, ["still waiting after 45 s", 45.0])
    return {"fault": "clock 30 s back", "limit": "100/2s", "callers": held}


def clock_forward(srv: Server) -> dict[str, Any]:
    """Drained (100 per 10 s), then Redis's clock steps 60 s forward: tokens admitted in
    the next second (one second's refill is 10)."""
    lim = tg.Limiter(tpm=100, window=10.0, redis=srv.client(), key="fwd")
    lim.acquire(100).commit(100)
    skew(lim, 60.0)
    return {
        "fault": "clock 60 s forward",
        "limit": "100/10s",
        "admitted_next_1s": greedy(lim, 5, 1.0),
    }


def restart(srv: Server) -> dict[str, Any]:
    """Drained (100 per 5 s), Redis SIGKILLed and started empty: tokens admitted in the
    next second (one second's refill is 20) and until the first wait."""
    lim = tg.Limiter(tpm=100, window=5.0, redis=srv.client(), key="restart")
    lim.acquire(100).commit(100)
    srv.kill()
    srv.start()
    return {
        "fault": "restart (no persistence)",
        "limit": "100/5s",
        "admitted_next_1s": greedy(lim, 10, 1.0),
    }


def fail_open(srv: Server, processes: int = 4) -> dict[str, Any]:
    """``processes`` worker processes with fail_open=True used the key (1000 per 60 s);
    Redis is SIGKILLed; each then admits greedily for 1 s: the sum against the limit."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(srv.port), "share", "1000", "60", "go", "1.0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for expected in ("ready", "synced"):
            for p in procs:
                assert p.stdout is not None
                assert p.stdout.readline().strip() == expected
            if expected == "synced":
                srv.kill()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
        counts = [int(p.stdout.readline()) for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        srv.start()
    return {
        "fault": f"Redis killed, fail_open, {processes} processes",
        "limit": "1000/60s",
        "admitted_per_process": counts,
        "admitted_total": sum(counts),
    }


def dead_waiter(srv: Server) -> dict[str, Any]:
    """A worker process waits at the head for 100 tokens (10 s of refill at 100 per 10
    s) and is SIGKILLed; the caller behind it wants 10 (due 1 s after a drain): seconds
    from the kill to its admission."""
    lim = tg.Limiter(tpm=100, window=10.0, redis=srv.client(), key="ghost")
    lim.acquire(100).commit(100)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(srv.port), "ghost", "100", "10", "wait", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        client = srv.client()
        while client.zcard("{ghost}:q") == 0:
            time.sleep(0.02)
        done: list[float] = []
        behind = threading.Thread(target=lambda: done.append(lim.acquire(10).waited), daemon=True)
        behind.start()
        time.sleep(0.3)
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        behind.join(30)
        recovered = round(time.monotonic() - killed, 2)
    finally:
        worker.kill()
        worker.wait()
    return {
        "fault": "waiter SIGKILLed at the head",
        "limit": "100/10s",
        "behind_went_after_s": recovered,
    }


def restart_server(srv: Server) -> dict[str, Any]:
    """Four threads call the emulator (1500 tokens per 2 s, refunds) through a guarded
    function (no headers reach the limiter: it alone protects the server); Redis is
    SIGKILLed and started empty mid-run: the server's 429s and the tokens it charged (after
    its refunds) in the first window after the restart, against the limit."""
    import openai

    from tokenguard.emulator import running

    model, tpm, window = "llama-3.1-8b-instant", 1500, 2.0
    lim = tg.Limiter(tpm=tpm, rpm=100_000, window=window, redis=srv.client(), key="srv")
    stop = threading.Event()
    with running(model=model, tpm=tpm, rpm=100_000, window=window, refund_unused=True) as em:
        raw = openai.OpenAI(base_url=em.base_url, api_key="k", max_retries=0)

        @tg.guard(limiter=lim, max_wait=10.0)
        def ask(messages: Any, model: str = model, max_tokens: int = 40) -> Any:
            return raw.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        def worker() -> None:
            while not stop.is_set():
                try:
                    ask([{"role": "user", "content": "Say something short."}])
                except tg.TokenGuardError:
                    time.sleep(0.05)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2 * window)
        srv.kill()
        srv.start()
        restarted = em.log[-1].t if em.log else 0.0
        time.sleep(3 * window)
        stop.set()
        for t in threads:
            t.join(15)
        log = [r for r in em.log if r.endpoint == "chat"]
    before = [r for r in log if r.t < restarted]
    after = [r for r in log if r.t >= restarted]
    first = [r for r in after if r.t < restarted + window]
    return {
        "fault": "restart (no persistence), emulator behind",
        "limit": f"{tpm}/{window:g}s",
        "429s_before_restart": sum(r.status == 429 for r in before),
        "429s_after_restart": sum(r.status == 429 for r in after),
        "charged_first_window_after": sum(r.charged_tokens for r in first if r.admitted),
        "requests_after": len(after),
    }


SCENARIOS = {
    "clock_back": clock_back,
    "clock_forward": clock_forward,
    "restart": restart,
    "restart_server": restart_server,
    "fail_open": fail_open,
    "dead_waiter": dead_waiter,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    for name in args.scenarios:
        srv = Server()
        try:
            result = SCENARIOS[name](srv)
        finally:
            srv.close()
        print(json.dumps({"label": args.label, "scenario": name, **result}), flush=True)


if __name__ == "__main__":
    main()
