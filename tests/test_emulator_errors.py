"""Every error path: Groq's exact bodies and headers through the real SDK, and raw HTTP."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from emulator_support import HELLO, Serve, client_for, post_json, raw_request
from fake_clock import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard.emulator import Emulator, EmulatorConfig, ModelSpec, running
from tokenguard.emulator._app import App

MODEL = "llama3-8b-8192"
INSTANT = "llama-3.1-8b-instant"
UPGRADE = "Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"
PREFIX = (
    "Rate limit reached for model `{model}` in organization `org_emulator` service tier `on_demand`"
)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    return error


# -- rate limits ----------------------------------------------------------------------------


def test_tpm_429_reproduces_groqs_published_example(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, clock=clock)
    client = client_for(em)
    # "Hello" is 11 prompt tokens on llama3, so max_tokens=5023 requests 5034.
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5023)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1432)
    error = error_of(caught.value)
    assert error == {
        "message": PREFIX.format(model=MODEL) + " on tokens per minute (TPM): Limit 6000, "
        "Used 5034, Requested 1443. Please try again in 4.77s. " + UPGRADE,
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
    headers = caught.value.response.headers
    assert headers["retry-after"] == "5"
    assert headers["x-ratelimit-remaining-tokens"] == "966"
    assert headers["x-ratelimit-limit-tokens"] == "6000"
    assert headers["x-ratelimit-reset-tokens"] == "50.34s"
    assert headers["x-ratelimit-remaining-requests"] == "14399"
    assert headers["x-request-id"].startswith("req_")
    # Waiting exactly the advertised time is enough.
    clock.advance(4.77)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1432)
    assert [(r.status, r.limit, r.error) for r in em.log] == [
        (200, None, None),
        (429, "TPM", "rate_limit_exceeded"),
        (200, None, None),
    ]
    assert em.log[1].requested_tokens == 1443


def test_rpm_429(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, rpm=2, clock=clock)
    client = client_for(em)
    for _ in range(2):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    assert error_of(caught.value) == {
        "message": PREFIX.format(model=MODEL) + " on requests per minute (RPM): Limit 2, "
        "Used 2, Requested 1. Please try again in 30s. " + UPGRADE,
        "type": "requests",
        "code": "rate_limit_exceeded",
    }
    assert caught.value.response.headers["retry-after"] == "30"


def test_rpd_429_with_a_short_window(serve: Serve, clock: FakeClock) -> None:
    # window=1.0: a "day" is 1440 s; 3 requests per day refill one every 480 s.
    em = serve(model=MODEL, rpd=3, rpm=0, window=1.0, clock=clock)
    client = client_for(em)
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    error = error_of(caught.value)
    assert error["type"] == "requests"
    assert error["message"] == (
        PREFIX.format(model=MODEL) + " on requests per day (RPD): Limit 3, Used 3, "
        "Requested 1. Please try again in 8m0s. " + UPGRADE
    )
    headers = caught.value.response.headers
    assert headers["retry-after"] == "480"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "24m0s"


def test_tpd_429(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=INSTANT, tpd=10_000, tpm=0, clock=clock)
    client = client_for(em)
    # "Hello" is 36 prompt tokens on Llama 3.1.
    client.chat.completions.create(model=INSTANT, messages=HELLO, max_tokens=9000 - 36)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=INSTANT, messages=HELLO, max_tokens=2000 - 36)
    # Without a TPM limit there are no token headers.
    assert "x-ratelimit-limit-tokens" not in caught.value.response.headers
    error = error_of(caught.value)
    assert error["type"] == "tokens"
    assert error["message"] == (
        PREFIX.format(model=INSTANT) + " on tokens per day (TPD): Limit 10000, Used 9000, "
        "Requested 2000. Please try again in 2h24m0s. " + UPGRADE
    )
    assert caught.value.response.headers["retry-after"] == str(2 * 3600 + 24 * 60)


def test_the_longest_wait_is_reported(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=INSTANT, tpm=6000, tpd=7000, clock=clock)
    client = client_for(em)
    client.chat.completions.create(model=INSTANT, messages=HELLO, max_tokens=5000 - 36)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=INSTANT, messages=HELLO, max_tokens=3000 - 36)
    assert "tokens per day (TPD): Limit 7000, Used 5000, Requested 3000" in str(caught.value)
    assert em.log[-1].limit == "TPD"


def test_413_request_larger_than_tpm(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, clock=clock)
    client = client_for(em)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=7950 - 11)
    assert caught.value.status_code == 413
    assert error_of(caught.value) == {
        "message": "Request too large for model `llama3-8b-8192` in organization "
        "`org_emulator` service tier `on_demand` on tokens per minute (TPM): Limit 6000, "
        "Requested 7950, please reduce your message size and try again.",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
    # Nothing was charged.
    assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "6000"
    assert "retry-after" not in caught.value.response.headers
    assert (em.log[-1].status, em.log[-1].limit) == (413, "TPM")


@pytest.mark.parametrize(("refund", "remaining"), [(False, 6000 - 1011), (True, 6000 - 27)])
def test_refund_unused(serve: Serve, clock: FakeClock, refund: bool, remaining: int) -> None:
    em = serve(model=MODEL, refund_unused=refund, clock=clock)
    raw = client_for(em).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=1000
    )
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(remaining)
    assert em.available("TPM") == remaining
    assert em.available("TPD") == 500_000 - (6000 - remaining)
    record = em.log[-1]
    assert (record.requested_tokens, record.charged_tokens) == (1011, 6000 - remaining)


def test_default_reservation_and_reset(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, default_max_tokens=100, clock=clock)
    client = client_for(em)
    client.chat.completions.create(model=MODEL, messages=HELLO)
    assert em.log[-1].requested_tokens == 111
    assert em.available("TPM") == 6000 - 111
    em.reset()
    assert em.log == []
    assert em.available("TPM") == 6000
    assert em.available("RPD") == 14_400


# -- 400 / 401 / 404 ------------------------------------------------------------------------


def test_context_length_exceeded(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, clock=clock)
    client = client_for(em)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8192 - 10)
    assert error_of(caught.value) == {
        "message": "Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    # The log has the prompt's count even though no reservation was made.
    assert (em.log[-1].prompt_tokens, em.log[-1].requested_tokens) == (11, 0)
    # Exactly filling the window is fine; the default reservation shrinks to the room left.
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8192 - 11 - 6000)
    em = serve(model=MODEL, context_window=1000, tpm=0, clock=clock)
    client = client_for(em)
    client.chat.completions.create(model=MODEL, messages=HELLO)
    assert em.log[-1].requested_tokens == 1000
    long = [{"role": "user", "content": "hello " * 2000}]
    with pytest.raises(openai.BadRequestError, match="reduce the length"):
        client.chat.completions.create(model=MODEL, messages=long)  # type: ignore[arg-type]


def test_max_completion_tokens_above_the_models_cap() -> None:
    model = "llama-3.3-70b-versatile"
    with running(model=model, tpm=0) as em, pytest.raises(openai.BadRequestError) as caught:
        client_for(em).chat.completions.create(model=model, messages=HELLO, max_tokens=40_000)
    assert "`max_tokens` must be less than or equal to `32768`" in error_of(caught.value)["message"]


def test_unknown_model_404(serve: Serve, clock: FakeClock) -> None:
    em = serve(model=MODEL, clock=clock)
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(em).chat.completions.create(model="gpt-9", messages=HELLO)
    assert error_of(caught.value) == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }
    # Every response carries the rate-limit headers (of the default model here).
    assert caught.value.response.headers["x-ratelimit-limit-tokens"] == "6000"


def test_decommissioned_model() -> None:
    models = [ModelSpec("old-model", decommissioned=True)]
    with running(models=models) as em, pytest.raises(openai.BadRequestError) as caught:
        client_for(em).chat.completions.create(model="old-model", messages=HELLO)
    assert error_of(caught.value)["code"] == "model_decommissioned"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}],
)
def test_missing_api_key_is_401(serve: Serve, headers: dict[str, str]) -> None:
    em = serve(model=MODEL)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", em.port, timeout=10)
    conn.request("POST", "/openai/v1/chat/completions", body=b"{}", headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 401
    assert body == {
        "error": {
            "message": "Invalid API Key",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    assert response.getheader("x-ratelimit-limit-requests") == "14400"


# -- malformed requests over raw HTTP -------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=0, rpm=0, tpd=0, rpd=0) as em:
        yield em


GOOD: dict[str, Any] = {"model": MODEL, "messages": HELLO}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"messages": HELLO}, "'model'"),
        ({"model": 3, "messages": HELLO}, "'model'"),
        ({"model": MODEL}, "'messages'"),
        ({"model": MODEL, "messages": "hi"}, "'messages'"),
        ({"model": MODEL, "messages": []}, "minimum number of items"),
        ({"model": MODEL, "messages": [{"content": "x"}]}, "'role'"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "'role'"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "content"),
        ({"model": MODEL, "messages": [{"role": "user"}]}, "content"),
        ({"model": MODEL, "messages": ["hi"]}, "messages.0"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "image",
        ),
        ({**GOOD, "max_tokens": -1}, "'max_tokens'"),
        ({**GOOD, "max_tokens": 0}, "'max_tokens'"),
        ({**GOOD, "max_tokens": "10"}, "'max_tokens'"),
        ({**GOOD, "max_tokens": True}, "'max_tokens'"),
        ({**GOOD, "max_tokens": 1.5}, "'max_tokens'"),
        ({**GOOD, "max_completion_tokens": -5}, "'max_completion_tokens'"),
        ({**GOOD, "n": 2}, "'n' : number must be at most 1"),
        ({**GOOD, "stream": "yes"}, "'stream'"),
        ({**GOOD, "stream_options": 3}, "'stream_options'"),
        ({**GOOD, "tools": {"a": 1}}, "'tools'"),
        ({**GOOD, "messages": [{"role": "assistant", "tool_calls": 3}]}, "tool_calls"),
        ([1, 2], "JSON object"),
    ],
)
def test_validation_400s(shared: Emulator, payload: Any, fragment: str) -> None:
    status, headers, body = post_json(shared.root_url, payload)
    assert status == 400
    error = body["error"]
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert headers["content-type"] == "application/json"
    assert shared.log[-1].status == 400


@pytest.mark.parametrize(
    "body", [b"", b"{", b"not json", b"\xff\xfe", b"nan", b"[" * 100_000, b"\x00" * 10]
)
def test_malformed_json_is_400(shared: Emulator, body: bytes) -> None:
    status, _, data = raw_request(shared.root_url, "POST", "/openai/v1/chat/completions", body)
    assert status == 400
    assert json.loads(data)["error"]["type"] == "invalid_request_error"


def test_streaming_errors_are_plain_json(shared: Emulator) -> None:
    status, headers, body = post_json(
        shared.root_url, {"model": "nope", "messages": HELLO, "stream": True}
    )
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "model_not_found"  # type: ignore[index]


def test_accepted_message_forms(shared: Emulator) -> None:
    payload = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "s", "name": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "n": 1,
        "stream": None,
        "temperature": 0,
        "stream_options": None,
    }
    status, _, body = post_json(shared.root_url, payload)
    assert status == 200, body


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/openai/v1/chat/completions", 405),
        ("DELETE", "/v1/models", 405),
        ("PUT", "/openai/v1/chat/completions", 405),
        ("POST", "/openai/v1/completions", 404),
        ("GET", "/", 404),
        ("GET", "/openai/v1/models/no-such-model", 404),
        ("GET", "/v1/models", 200),
        ("GET", "/openai/v1/models/llama3-8b-8192", 200),
        ("GET", "/openai/v1/models?limit=3", 200),
    ],
)
def test_paths_and_methods(shared: Emulator, method: str, path: str, status: int) -> None:
    got, headers, data = raw_request(shared.root_url, method, path)
    assert got == status
    body = json.loads(data)
    if status >= 400:
        assert set(body["error"]) >= {"message", "type"}
    assert int(headers["content-length"]) == len(data)


def test_v1_chat_path_without_openai_prefix(shared: Emulator) -> None:
    status, _, body = post_json(shared.root_url, GOOD, path="/v1/chat/completions")
    assert status == 200
    assert body["object"] == "chat.completion"


def test_oversized_body_is_413_and_the_server_lives_on(serve: Serve) -> None:
    em = serve(model=MODEL)
    assert em.config.max_body_bytes == 16 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", em.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer k\r\nContent-Length: 17000000\r\n\r\n{"
        )
        reply = _read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "request_too_large"
    status, _, _ = post_json(em.root_url, GOOD)
    assert status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE /x HTTP/9\r\n\r\n",
        b"GET /x HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_broken_http_gets_a_json_error(shared: Emulator, request_bytes: bytes) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        reply = _read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1][:1] in (b"4", b"5")
    assert "error" in json.loads(body)
    status, _, _ = post_json(shared.root_url, GOOD)
    assert status == 200


def test_chunked_request_body_is_accepted(shared: Emulator) -> None:
    payload = json.dumps(GOOD).encode()
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer k\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n"
            % (len(payload), payload)
        )
        reply = _read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200")


def test_client_vanishing_mid_request_does_not_hurt(shared: Emulator) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
            sock.sendall(
                b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer k\r\nContent-Length: 100\r\n\r\n{"
            )
    status, _, _ = post_json(shared.root_url, GOOD)
    assert status == 200


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# -- fuzzing the request handler (no HTTP needed: the App is the whole decision) ------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
_part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 3]), "text": _json})
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["system", "user", "assistant", "tool", "bot", None, 1]),
        "content": st.none() | st.text(max_size=20) | st.lists(_part, max_size=2) | _json,
        "name": _json,
        "tool_call_id": _json,
        "tool_calls": _json
        | st.lists(
            st.fixed_dictionaries(
                {"function": st.fixed_dictionaries({"name": _json, "arguments": _json})}
            ),
            max_size=2,
        ),
    },
)
_request = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "nope", "", 7, None]),
        "messages": st.lists(_message, max_size=4) | _json,
        "max_tokens": _json,
        "max_completion_tokens": _json,
        "n": _json,
        "stream": _json,
        "stream_options": _json,
        "tools": _json,
    },
)


@settings(max_examples=200, deadline=None)
@given(payload=_request | _json)
def test_fuzzed_requests_never_get_a_500(payload: Any) -> None:
    response = _APP.handle(
        "POST",
        "/openai/v1/chat/completions",
        {"Authorization": "Bearer k"},
        json.dumps(payload).encode(),
    )
    assert response.status in (200, 400, 404), response.body
    if response.events is None:
        assert "error" in json.loads(response.body) or response.status == 200


_APP = App(EmulatorConfig(models=(ModelSpec(MODEL, tpm=0, rpm=0, tpd=0, rpd=0),)))
