"""Helpers for the reliability suite: servers that can be killed and restarted on the same
port, a limiter that keeps every reservation it handed out (to find leaks), and a trap
that captures every event and structlog line and scans them for planted secrets, and a
fault-injecting HTTP proxy in front of the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_support import _binary, _free_port
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard.emulator import Emulator, EmulatorConfig

__all__ = [
    "CONTEXT_EXCEEDED",
    "PLANTED_CONTENT",
    "PLANTED_KEY",
    "Fault",
    "FaultProxy",
    "Outcome",
    "RestartableEmulator",
    "RestartableRedis",
    "SecretTrap",
    "TrackingLimiter",
    "emulator_process",
    "gather_all",
    "hammer",
    "max_in_any_window",
    "rate_limited",
    "secret_trap",
    "too_large",
]

#: Planted in every message and every API key the suite sends: no event may carry them.
PLANTED_CONTENT = "PLANTED-CONTENT-7f3a9c"
PLANTED_KEY = "sk-PLANTED-KEY-0c41e2d9b8"


class TrackingLimiter(tg.Limiter):
    """A real :class:`tokenguard.Limiter` that remembers every reservation it admitted
    (and when, on the monotonic clock), so a test can say which were never settled."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._seen_lock = threading.Lock()
        self.reservations: list[tuple[float, tg.Reservation]] = []
        self._kept: set[int] = set()

    def _keep(self, r: tg.Reservation) -> tg.Reservation:
        # Once each: acquire admits through try_acquire when it can.
        with self._seen_lock:
            if id(r) not in self._kept:  # kept alive in the list: ids stay unique
                self._kept.add(id(r))
                self.reservations.append((time.monotonic(), r))
        return r

    def try_acquire(
        self, tokens: int, priority: tg.Priority | None = None
    ) -> tg.Reservation | None:
        r = super().try_acquire(tokens, priority)
        return None if r is None else self._keep(r)

    def acquire(
        self, tokens: int, max_wait: float | None = None, priority: tg.Priority | None = None
    ) -> tg.Reservation:
        return self._keep(super().acquire(tokens, max_wait, priority))

    async def acquire_async(
        self, tokens: int, max_wait: float | None = None, priority: tg.Priority | None = None
    ) -> tg.Reservation:
        return self._keep(await super().acquire_async(tokens, max_wait, priority))

    def leaked(self) -> list[tg.Reservation]:
        """Reservations admitted and never committed nor cancelled."""
        with self._seen_lock:
            return [r for _, r in self.reservations if not r.settled]

    def admissions(self, since: float = float("-inf")) -> list[tuple[float, int]]:
        """``(monotonic time, estimate)`` of each admission at or after ``since``."""
        with self._seen_lock:
            return [(t, r.tokens) for t, r in self.reservations if t >= since]


def max_in_any_window(points: list[tuple[float, int]], window: float) -> int:
    """The largest sum of ``points`` (time, amount) inside any half-open ``window``."""
    pts = sorted(points)
    best = total = lo = 0
    for t, amount in pts:
        total += amount
        while pts[lo][0] <= t - window:
            total -= pts[lo][1]
            lo += 1
        best = max(best, total)
    return best


class RestartableEmulator:
    """An emulator that can be stopped and started again on the same port (a server
    restart as clients see it: refused connections, then a fresh process state)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.current = Emulator(config).start()
        # Restarts keep the port: clients keep their base URL.
        self.config = _with_port(config, self.current.port)
        self.base_url = self.current.base_url
        self.restarts = 0
        self.earlier_logs: list[Any] = []

    def stop(self) -> None:
        self.current.stop()
        self.earlier_logs.extend(self.current.log)

    def start(self) -> None:
        self.current = Emulator(self.config).start()
        self.restarts += 1

    def log(self) -> list[Any]:
        """Every request record of every run of the server, oldest first."""
        return [*self.earlier_logs, *self.current.log]

    def close(self) -> None:
        self.current.stop()


def _with_port(config: EmulatorConfig, port: int) -> EmulatorConfig:
    import dataclasses

    return dataclasses.replace(config, port=port)


class RestartableRedis:
    """A real ``redis-server`` (no persistence) that can be killed (SIGKILL) and started
    again on the same port: everything it held is lost, as after a crash."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tokenguard-redis-rel-")
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self._tmp.name,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.kills += 1

    def freeze(self) -> None:
        """SIGSTOP: the server still accepts connections but answers nothing (a hung host)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A client that fails fast when the server is gone (no retries, short timeouts)."""
        return redis.Redis(
            port=self.port,
            socket_connect_timeout=0.3,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._tmp.cleanup()


@dataclass
class SecretTrap:
    """Every tokenguard event (through a sink) and every structlog line seen in a block."""

    events: list[tg.events.Event] = field(default_factory=list)
    logs: list[Mapping[str, Any]] = field(default_factory=list)

    def texts(self) -> Iterator[str]:
        for event in self.events:
            yield f"{event.name} {event!r} {event.fields()!r}"
        for line in self.logs:
            yield repr(dict(line))

    def leaks(self, *secrets: str) -> list[str]:
        """The captured texts that contain any of ``secrets`` (empty: none leaked)."""
        found = []
        for text in self.texts():
            if any(secret in text for secret in secrets):
                found.append(text)
        return found

    def names(self) -> list[str]:
        return [e.name for e in self.events]


@contextlib.contextmanager
def secret_trap() -> Iterator[SecretTrap]:
    """Capture every event and structlog line of the block; on leaving, assert that none
    carries the planted content or key."""
    trap = SecretTrap()
    lock = threading.Lock()

    def keep(event: tg.events.Event) -> None:
        with lock:
            trap.events.append(event)

    undo = tg.events.add_sink(keep)
    try:
        with capture_logs() as logs:
            yield trap
    finally:
        undo()
    trap.logs = list(logs)
    leaks = trap.leaks(PLANTED_CONTENT, PLANTED_KEY)
    assert not leaks, f"{len(leaks)} event(s) carry planted secrets, e.g. {leaks[0][:500]}"


async def gather_all(coros: list[Any]) -> list[Any]:
    """``asyncio.gather`` that returns exceptions as values (every task runs to its end)."""
    return list(await asyncio.gather(*coros, return_exceptions=True))


@dataclass
class Outcome:
    """One call: when it started and ended (monotonic) and what it raised, if anything."""

    started: float
    ended: float
    error: BaseException | None = None


def hammer(call: Any, *, threads: int, script: Any) -> list[Outcome]:
    """Run ``call()`` in a loop on ``threads`` threads while ``script()`` (the faults)
    runs on this one; return every outcome (exceptions are recorded, never raised)."""
    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            err: BaseException | None = None
            try:
                call()
            except Exception as exc:
                err = exc
            with lock:
                outcomes.append(Outcome(t0, time.monotonic(), err))

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    try:
        script()
    finally:
        stop.set()
    for t in pool:
        t.join(60)
        assert not t.is_alive(), "a caller hung"
    return outcomes


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """``python -m tokenguard.emulator ARGS`` in its own process; yields its base URL
    (for measuring one side alone: the server's work is not in this process)."""
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenguard.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"the emulator did not start (printed {base_url!r})")
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Groq's bodies for the refusals a fault test sends in the server's place.
CONTEXT_EXCEEDED = {
    "error": {
        "message": "Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def rate_limited(model: str, message: str = "Please try again later.") -> dict[str, Any]:
    """A 429's body for a TPM limit of ``model``, ending in ``message``."""
    return {
        "error": {
            "message": f"Rate limit reached for model `{model}` on tokens per minute (TPM): "
            f"Limit 6000, Used 5990, Requested 40. {message}",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }


def too_large(model: str, limit: int) -> dict[str, Any]:
    """A 413's body saying the TPM limit of ``model`` is ``limit``."""
    return {
        "error": {
            "message": f"Request too large for model `{model}` on tokens per minute (TPM): "
            f"Limit {limit}, Requested 66, please reduce your message size and try again.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }


@dataclass
class Fault:
    """What :class:`FaultProxy` does to one response. ``status``: answer with it and
    ``body`` itself, never reaching the server (a 429 the server did not send);
    otherwise the server's answer is forwarded with ``headers`` added, and with
    ``cut_after`` set only that many bytes of its body (the connection then closes
    short of its ``content-length``: a stream cut midway), and with ``rewrite`` set its
    body rewritten (sent whole, with its new length: a server that meant it)."""

    status: int | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    rewrite: Callable[[bytes], bytes] | None = None


class FaultProxy:
    """A real HTTP proxy on loopback in front of an emulator: each request takes the next
    queued :class:`Fault` (none queued: passed through unchanged). ``seen`` keeps the
    status every client got, in order, with the monotonic time it was sent."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._prefix = parsed.path.rstrip("/")
        self.faults: list[Fault] = []
        self.seen: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{self._prefix}"

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def statuses(self) -> list[int]:
        with self._lock:
            return [status for _, status in self.seen]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, status: int) -> Fault | None:
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
            self.seen.append((time.monotonic(), fault.status if fault and fault.status else status))
            return fault

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(method, path, body=body or None, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the suite's output is the tests'

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    fault = proxy.faults[0] if proxy.faults else None
                if fault is not None and fault.status is not None:
                    status, headers, payload = fault.status, [], json.dumps(fault.body).encode()
                    headers.append(("content-type", "application/json"))
                else:
                    status, headers, payload = proxy._forward(
                        self.command, self.path, self.headers, body
                    )
                fault = proxy._next(status)
                if fault is not None and fault.rewrite is not None:
                    payload = fault.rewrite(payload)
                self.send_response(status)
                extra = dict(fault.headers) if fault is not None else {}
                for k, v in headers:
                    if k.lower() not in _HOP_BY_HOP and k.lower() not in extra:
                        self.send_header(k, v)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.send_header("connection", "close")
                self.end_headers()
                cut = fault.cut_after if fault is not None else None
                self.wfile.write(payload if cut is None else payload[:cut])
                self.wfile.flush()
                self.close_connection = True

            do_GET = do_POST = _serve

        return Handler


_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server")
)
