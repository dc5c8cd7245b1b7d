"""The HTTP transport: a threading HTTP/1.1 server with keep-alive, chunked SSE, and the
``Emulator`` / ``running()`` front door.

One thread per connection (``ThreadingHTTPServer``) keeps every handler simple and lets a
slow (``latency``) answer block only its own connection. Open connections are tracked so
``stop()`` can close idle keep-alive sockets instead of leaving threads behind.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http import HTTPStatus
from typing import Any

from ._app import App, Response
from ._config import DEFAULT_MAX_TOKENS, EmulatorConfig, build_models
from ._limits import ModelLimits
from ._log import RequestRecord
from ._models import ModelSpec

__all__ = ["Emulator", "running"]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request is not the server's problem; stay quiet.
        pass

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "emulator"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.config.idle_timeout)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- errors from the stdlib parser (bad request line, huge headers, unknown method) ---

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        body = json.dumps(
            {"error": {"message": message or phrase, "type": "invalid_request_error"}}
        ).encode()
        self.close_connection = True
        # An unparsable request line leaves the version at HTTP/0.9, which would suppress
        # the status line; answer every broken request as HTTP/1.1.
        self.request_version = self.protocol_version
        with contextlib.suppress(OSError):
            self.send_response(code, phrase)
            self.send_header("content-type", "application/json")
            self.send_header("connection", "close")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)

    # -- methods ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            body = self._read_body()
            if body is None:
                return
            response = self.server.app.handle(self.command, self.path, dict(self.headers), body)
            self._write(response)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True
        except Exception:  # never a traceback or a dead connection without an answer
            self.close_connection = True
            with contextlib.suppress(Exception):
                self._reject(500, "Internal server error", "internal_error")

    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` after answering a body that cannot be read."""
        limit = self.server.app.config.max_body_bytes
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit)
        raw_length = self.headers.get("content-length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self._reject(400, f"invalid Content-Length header {raw_length!r}", "invalid_request")
            return None
        if length > limit:
            self._reject_too_large(length, limit)
            return None
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._reject(400, "malformed chunked request body", "invalid_request")
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self._reject_too_large(total, limit)
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    def _reject_too_large(self, size: int, limit: int) -> None:
        self._reject(
            413,
            f"Request Entity Too Large: the body is at least {size} bytes; the limit is {limit}.",
            "request_too_large",
        )

    def _reject(self, status: int, message: str, code: str) -> None:
        """Answer and close: the unread body makes the connection unusable."""
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "code": code}}
        ).encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.events is None:
            body = b"" if self.command == "HEAD" else response.body
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in response.events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")


class Emulator:
    """A local Groq server on a background thread.

    Example::

        em = Emulator(EmulatorConfig(models=(ModelSpec("llama3-8b-8192", tpm=600),)))
        em.start()
        client = openai.OpenAI(base_url=em.base_url, api_key="x")
        ...
        em.stop()

    Also a context manager (``with Emulator(cfg) as em: ...``); see ``running()``.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.app = App(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind, warm the tokenizer, and serve on a daemon thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        from ._prompt import count_text_tokens

        count_text_tokens("warm up")  # load the tokenizer now, not inside the first request
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        self.app.open_log_file()
        self._server = _Server((self.config.host, self.config.port), self.app, family)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tokenguard-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and the log file. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.app.close_log_file()

    def __enter__(self) -> Emulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (still known after ``stop()``)."""
        if self._port is None:
            raise RuntimeError("emulator not started: call start() or use running()")
        return self._port

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``: the server's root, as Groq's is ``https://api.groq.com``
        (``groq.Groq(base_url=...)`` takes it; :attr:`base_url` works there too)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/openai/v1``, the one URL both SDKs take:
        ``openai.OpenAI(base_url=em.base_url)`` and ``groq.Groq(base_url=em.base_url)``
        (the groq SDK adds ``/openai/v1`` again, which the emulator accepts; against
        Groq itself give the groq SDK the root, ``https://api.groq.com``)."""
        return self.root_url + "/openai/v1"

    # -- state -----------------------------------------------------------------------------

    @property
    def log(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        return self.app.log

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return self.config.models

    def limits(self, model: str | None = None) -> ModelLimits:
        """The buckets of ``model`` (default: the first model); read them with ``now``."""
        return self.app.limits(model)

    def available(self, limit: str = "TPM", model: str | None = None) -> float:
        """What the ``limit`` bucket ("TPM", "RPM", "TPD", "RPD") of ``model`` holds now."""
        return self.limits(model).buckets[limit].available(self.config.clock())

    def reset(self) -> None:
        """Refill every bucket and clear the log (between tests)."""
        self.app.reset()

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """Answer the next ``count`` chat requests with ``status`` (5xx; nothing charged).

        Example::

            em.fail_next(503)   # the next chat request gets a 503
        """
        self.app.fail_next(status, count)


@contextlib.contextmanager
def running(
    model: str | Sequence[str] | None = None,
    *,
    tpm: int | None = None,
    rpm: int | None = None,
    tpd: int | None = None,
    rpd: int | None = None,
    window: float = 60.0,
    context_window: int | None = None,
    completion_tokens: int = 16,
    latency: float = 0.0,
    refund_unused: bool = False,
    default_max_tokens: int | None = None,
    hidden_prompt_tokens: int = 0,
    log_path: str | None = None,
    models: Sequence[ModelSpec] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[Emulator]:
    """Run an emulator for the duration of a ``with`` block.

    ``model`` (default ``"llama3-8b-8192"``) picks a built-in model, or the model of
    ``models`` the given limits apply to (all of ``models`` when None); only those are
    served (others: 404). Limits left ``None`` keep the table's values, ``0`` disables
    one; ``window`` is the rate "minute" in seconds (a "day" is 1440 windows). A request
    costs prompt + ``max_tokens``, or ``default_max_tokens`` (1024) capped by the room in
    the context window; ``hidden_prompt_tokens`` are billed on top of every prompt;
    rejected requests charge nothing. ``clock``/``sleep`` inject time (``clock.sleep``
    when it has one).

    Example::

        with running(model="llama3-8b-8192", tpm=600, window=1.0) as em:
            client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)
            client.chat.completions.create(model="llama3-8b-8192", messages=[...])
            assert em.log[-1].status == 200
    """
    config = EmulatorConfig(
        models=build_models(
            model, models, tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd, context_window=context_window
        ),
        window=window,
        completion_tokens=completion_tokens,
        latency=latency,
        refund_unused=refund_unused,
        default_max_tokens=DEFAULT_MAX_TOKENS if default_max_tokens is None else default_max_tokens,
        hidden_prompt_tokens=hidden_prompt_tokens,
        log_path=log_path,
        clock=clock or time.monotonic,
        sleep=sleep or getattr(clock, "sleep", None) or time.sleep,
        host=host,
        port=port,
    )
    with Emulator(config) as em:
        yield em
