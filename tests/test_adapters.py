"""Reading usage, headers and errors from what the real openai and groq SDKs return or raise,
against the emulator over real HTTP."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import groq
import openai
import pytest
from emulator_support import HELLO
from fake_clock import FakeClock

from tokenguard._adapters import FailureKind, Usage, classify, headers_of, usage_of
from tokenguard.emulator import running

MODEL = "llama3-8b-8192"


@pytest.fixture(scope="module")
def em_url() -> Iterator[str]:
    with running(model=MODEL, tpm=6000, rpm=1000, window=60.0, completion_tokens=7) as em:
        yield em.base_url


def _client(base_url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, **kw)


def test_usage_of_a_completion_and_of_its_raw_response(em_url: str) -> None:
    client = _client(em_url)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
    assert usage_of(reply) == Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=20
    )
    assert usage_of(raw) == Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18)
    headers = headers_of(raw)
    assert headers is not None
    assert headers["x-ratelimit-limit-tokens"] == "6000"


def test_usage_of_a_groq_sdk_completion(em_url: str) -> None:
    root = em_url.removesuffix("/openai/v1")
    client = groq.Groq(base_url=root, api_key="test", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
    usage = usage_of(reply)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 7)


@pytest.mark.parametrize("include_usage", [False, True])
def test_usage_of_a_stream_is_in_its_last_chunk(em_url: str, include_usage: bool) -> None:
    client = _client(em_url)
    extra: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=20, stream=True, **extra
        )
    )
    found = [u for u in map(usage_of, chunks) if u is not None]
    assert found
    assert found[-1].prompt_tokens == 11
    assert found[-1].completion_tokens == 7
    assert usage_of(chunks[0]) is None


def test_cached_tokens_do_not_count_toward_limits() -> None:
    usage = usage_of(
        {
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "total_tokens": 110,
                "prompt_tokens_details": {"cached_tokens": 64},
                "completion_tokens_details": {"reasoning_tokens": 4},
            }
        }
    )
    assert usage == Usage(100, 10, 110, cached_tokens=64, reasoning_tokens=4)
    assert usage.limit_tokens == 46


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {},
        {"usage": None},
        {"usage": {"prompt_tokens": "11", "completion_tokens": 1}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 1}},
        object(),
    ],
)
def test_no_usage_or_malformed_usage_reads_as_none(obj: object) -> None:
    assert usage_of(obj) is None


def test_a_429_is_read_with_its_numbers_and_wait() -> None:
    # The emulator's clock stands still: its bucket refills nothing between the two calls
    # however slowly a loaded machine runs them (a real clock refilled 1 token in 60 ms).
    clock = FakeClock()
    with running(
        model=MODEL, tpm=1000, rpm=1000, window=60.0, clock=clock, sleep=clock.sleep
    ) as em:
        client = _client(em.base_url)
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=900)
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=500)
    f = classify(exc.value)
    assert f.kind is FailureKind.RATE_LIMITED
    assert (f.status, f.code, f.limit_name) == (429, "rate_limit_exceeded", "tpm")
    assert (f.limit, f.used, f.requested) == (1000, 911, 511)
    assert f.retry_after is not None
    assert f.retry_after > 0
    assert f.headers is not None
    assert "x-ratelimit-remaining-tokens" in f.headers
    assert f.reached_server


def test_a_413_names_the_limit_and_the_request() -> None:
    with (
        running(model=MODEL, tpm=1000, rpm=1000, window=60.0) as em,
        pytest.raises(openai.APIStatusError) as exc,
    ):
        _client(em.base_url).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2000)
    f = classify(exc.value)
    assert f.kind is FailureKind.TOO_LARGE
    assert (f.limit_name, f.limit, f.requested, f.used) == ("tpm", 1000, 2011, None)
    assert f.retry_after is None


def test_a_context_overflow_is_told_apart_from_other_400s(em_url: str) -> None:
    client = _client(em_url)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=9000)
    assert classify(exc.value).kind is FailureKind.CONTEXT_EXCEEDED
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    f = classify(nf.value)
    assert (f.kind, f.status, f.error_type) == (FailureKind.REJECTED, 404, "404")


def test_groq_sdk_errors_read_the_same(em_url: str) -> None:
    root = em_url.removesuffix("/openai/v1")
    client = groq.Groq(base_url=root, api_key="test", max_retries=0)
    with pytest.raises(groq.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=9000)
    assert classify(exc.value).kind is FailureKind.CONTEXT_EXCEEDED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_never_reached_the_server() -> None:
    client = _client(f"http://127.0.0.1:{_free_port()}/openai/v1")
    with pytest.raises(openai.APIConnectionError) as exc:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    f = classify(exc.value)
    assert f.kind is FailureKind.CONNECTION
    assert not f.reached_server
    assert not f.may_be_charged


@pytest.mark.parametrize("broken", ["header", "closed"])
def test_a_request_the_client_never_wrote_never_reached_the_server(
    em_url: str, broken: str
) -> None:
    # A key with the newline of the file it came from (a header the HTTP layer will not
    # write), or a client already closed: nothing left, nothing can be charged.
    client = (
        openai.OpenAI(base_url=em_url, api_key="key\n", max_retries=0)
        if broken == "header"
        else _client(em_url)
    )
    if broken == "closed":
        client.close()
    with pytest.raises(openai.APIConnectionError) as exc:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    f = classify(exc.value)
    assert (f.kind, f.may_be_charged) == (FailureKind.CONNECTION, False)


@pytest.mark.parametrize("sdk", ["openai", "groq"])
def test_a_connection_closed_after_the_request_was_sent_may_have_been_charged(sdk: str) -> None:
    # A server that reads the whole request, then closes without a word (a proxy or a
    # load balancer dropping the answer): the server behind it may have charged it.
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    root = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client: Any = (
        _client(root + "/openai/v1")
        if sdk == "openai"
        else groq.Groq(base_url=root, api_key="test", max_retries=0)
    )
    with pytest.raises((openai.APIConnectionError, groq.APIConnectionError)) as exc:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    server.join(5)
    listener.close()
    f = classify(exc.value)
    assert f.kind is FailureKind.DROPPED
    assert f.reached_server
    assert f.may_be_charged


def test_a_timeout_may_have_reached_the_server() -> None:
    with running(model=MODEL, latency=2.0) as em:
        client = _client(em.base_url, timeout=0.2)
        with pytest.raises(openai.APITimeoutError) as exc:
            client.chat.completions.create(model=MODEL, messages=HELLO)
    f = classify(exc.value)
    assert f.kind is FailureKind.TIMEOUT
    assert f.reached_server


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"error":{"message":"internal","type":"internal_server_error"}}'
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_server_error_may_have_been_charged() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = _client(f"http://127.0.0.1:{server.server_address[1]}/openai/v1")
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model=MODEL, messages=HELLO)
    finally:
        server.shutdown()
        server.server_close()
    f = classify(exc.value)
    assert (f.kind, f.status) == (FailureKind.SERVER, 503)
    assert f.reached_server


def test_anything_else_is_the_wrapped_codes_own() -> None:
    f = classify(KeyError("x"))
    assert f.kind is FailureKind.OTHER
    assert not f.reached_server
    assert f.error_type == "other"
