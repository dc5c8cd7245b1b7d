"""Helpers for tests that run against the Groq emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tokenguard.emulator import Emulator

if TYPE_CHECKING:
    import openai

# Typed Any so that the SDKs' overloads (stream or not) resolve on the other arguments.
HELLO: Any = [{"role": "user", "content": "Hello"}]

#: The type of the ``serve`` fixture (conftest.py): ``serve(**running_options)``.
Serve = Callable[..., Emulator]


def client_for(em: Emulator, **options: Any) -> openai.OpenAI:
    """An ``openai.OpenAI`` client of ``em`` that does not retry (the tests see every answer)."""
    import openai

    return openai.OpenAI(base_url=em.base_url, api_key="x", **{"max_retries": 0, **options})


def raw_request(
    root_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with the stdlib client: ``(status, lower-cased headers, body)``."""
    import http.client
    import urllib.parse

    parsed = urllib.parse.urlsplit(root_url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=10)
    try:
        all_headers = {"Authorization": "Bearer test", "Content-Type": "application/json"}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def post_json(
    root_url: str, payload: object, path: str = "/openai/v1/chat/completions"
) -> tuple[int, dict[str, str], dict[str, object]]:
    """POST ``payload`` as JSON; return the status, headers and decoded JSON body."""
    import json

    status, headers, data = raw_request(root_url, "POST", path, json.dumps(payload).encode())
    decoded = json.loads(data)
    assert isinstance(decoded, dict)
    return status, headers, decoded
