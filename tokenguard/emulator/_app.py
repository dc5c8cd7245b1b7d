"""What the server answers, independent of HTTP: routes, auth, chat completions, models.

``App.handle`` takes a method, path, headers and body and returns a ``Response``; the HTTP
layer only moves bytes. All shared state (buckets, log) is guarded by one lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from . import _errors
from ._chatml import count_chatml_tokens
from ._completion import completion_pieces
from ._config import EmulatorConfig
from ._errors import ApiError
from ._harmony import count_harmony_tokens
from ._limits import ModelLimits, format_wait
from ._llama4 import count_llama4_tokens
from ._log import RequestRecord
from ._prompt import count_prompt_tokens
from ._validation import ChatRequest, check_roles, parse_chat_request

__all__ = ["App", "Response"]

_PREFIX = "/openai/v1"
_CHAT_PATHS = ("/openai/v1/chat/completions", "/v1/chat/completions")
_MODELS_PATHS = ("/openai/v1/models", "/v1/models")
SYSTEM_FINGERPRINT = "fp_emulator01"


@dataclass
class Response:
    """An answer: a JSON ``body``, or SSE ``events`` (already framed ``data: ...\\n\\n``)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[bytes] | None = None


def _json_response(status: int, payload: Any, headers: dict[str, str]) -> Response:
    headers = {"content-type": "application/json", **headers}
    return Response(status, headers, json.dumps(payload).encode())


def _route(path: str) -> tuple[str, str | None]:
    """``("chat" | "models" | "model" | "unknown", model id)`` for a request path."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    if path.startswith(_PREFIX + _PREFIX + "/"):
        # The groq SDK appends /openai/v1 to its base URL itself: given the openai SDK's
        # base URL it asks for /openai/v1/openai/v1/..., so one URL serves both SDKs.
        path = path[len(_PREFIX) :]
    if path in _CHAT_PATHS:
        return "chat", None
    if path in _MODELS_PATHS:
        return "models", None
    for prefix in _MODELS_PATHS:
        if path.startswith(prefix + "/"):
            return "model", urllib.parse.unquote(path[len(prefix) + 1 :])
    return "unknown", None


class App:
    """The emulated Groq API over shared, locked state."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        now = config.clock()
        self._limits = {spec.name: ModelLimits(spec, config.window, now) for spec in config.models}
        self._default = self._limits[config.models[0].name]
        self._log: deque[RequestRecord] = deque(maxlen=config.log_limit)
        self._log_file: IO[str] | None = None
        # Injected failures: the next chat requests answer these statuses (see fail_next).
        self._failures: deque[int] = deque()

    # -- state ---------------------------------------------------------------------------

    def open_log_file(self) -> None:
        if self.config.log_path and self._log_file is None:
            self._log_file = open(self.config.log_path, "a", encoding="utf-8")  # noqa: SIM115

    def close_log_file(self) -> None:
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    @property
    def log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def limits(self, model: str | None = None) -> ModelLimits:
        return self._default if model is None else self._limits[model]

    def reset(self) -> None:
        """Refill every bucket and clear the log."""
        with self._lock:
            now = self.config.clock()
            for limits in self._limits.values():
                limits.refill(now)
            self._log.clear()

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """Answer the next ``count`` chat requests with ``status`` (a 5xx), before they
        reach the buckets (nothing is charged): a server failing as servers do."""
        if not 500 <= status <= 599 or count < 1:
            raise ValueError(f"fail_next needs a 5xx status and count >= 1, got {status}, {count}")
        with self._lock:
            self._failures.extend([status] * count)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            if self._log_file is not None:
                # A full disk must not take the server down; the in-memory log still has it.
                with contextlib.suppress(OSError, ValueError):
                    self._log_file.write(record.to_json() + "\n")
                    self._log_file.flush()

    def _headers(self, limits: ModelLimits, request_id: str) -> dict[str, str]:
        with self._lock:
            headers = limits.headers(self.config.clock())
        headers["x-request-id"] = request_id
        return headers

    # -- entry point ---------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request; never raises (an unexpected failure is a Groq-style 500)."""
        request_id = "req_" + uuid.uuid4().hex[:26]
        kind, model_id = _route(path)
        limits = self._default
        # Filled in as the request is understood; becomes the log record at the end.
        info: dict[str, Any] = {"t": self.config.clock(), "model": None, "status": 0}
        try:
            if kind == "unknown":
                raise ApiError(
                    404,
                    f"Unknown request URL: {method} {path.split('?', 1)[0]}. Please check the "
                    "URL for typos, or see the docs at https://console.groq.com/docs/",
                    code="unknown_url",
                )
            allowed = "POST" if kind == "chat" else "GET"
            if method != allowed:
                raise ApiError(
                    405,
                    f"Method {method} is not allowed for {path.split('?', 1)[0]}; use {allowed}.",
                    code="method_not_allowed",
                    headers={"allow": allowed},
                )
            if self.config.require_auth and not _has_bearer(headers):
                raise ApiError(401, "Invalid API Key", code="invalid_api_key")
            if kind == "models":
                info["status"] = 200
                return _json_response(
                    200, self._models_payload(), self._headers(limits, request_id)
                )
            if kind == "model":
                assert model_id is not None
                info["model"] = model_id
                if model_id not in self._limits:
                    raise _errors.model_not_found(model_id)
                info["status"] = 200
                payload = self._model_payload(self._limits[model_id])
                return _json_response(200, payload, self._headers(limits, request_id))
            return self._chat(body, info, request_id)
        except ApiError as err:
            info.update(status=err.status, error=err.code, error_type=err.type, limit=err.limit)
            if info["model"] in self._limits:
                limits = self._limits[info["model"]]
            headers = {**self._headers(limits, request_id), **err.headers}
            return _json_response(err.status, err.body(), headers)
        except Exception as exc:  # the server must answer, whatever went wrong
            info.update(status=500, error="internal_error", error_type="api_error")
            body_ = {
                "error": {
                    "message": f"Internal server error ({type(exc).__name__})",
                    "type": "api_error",
                    "code": "internal_error",
                }
            }
            return _json_response(500, body_, {"x-request-id": request_id})
        finally:
            self._record(RequestRecord(**info, endpoint=kind, path=path, request_id=request_id))

    # -- chat completions ----------------------------------------------------------------

    def _chat(self, raw: bytes, info: dict[str, Any], request_id: str) -> Response:
        self._raise_injected_failure()
        req = self._parse(raw, info)
        limits = self._limits.get(req.model)
        if limits is None:
            raise _errors.model_not_found(req.model)
        spec = limits.spec
        if spec.decommissioned:
            raise _errors.model_decommissioned(req.model)
        check_roles(req.messages, spec.template)
        prompt = _prompt_tokens(req, spec.template) + self.config.hidden_prompt_tokens
        info["prompt_tokens"] = prompt  # logged even when the reservation is refused
        reserve = self._reservation(req, prompt, spec.context_window, spec.max_completion_tokens)
        info["requested_tokens"] = prompt + reserve
        self._charge(req, limits, prompt + reserve, info)
        return self._complete(req, limits, prompt, reserve, info, request_id)

    def _raise_injected_failure(self) -> None:
        """The next status queued by ``fail_next``, raised before anything is charged."""
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            raise ApiError(
                failure,
                "Service Unavailable" if failure == 503 else "Internal Server Error",
                type="internal_server_error",
                code="service_unavailable" if failure == 503 else "internal_server_error",
            )

    def _parse(self, raw: bytes, info: dict[str, Any]) -> ChatRequest:
        """The request in ``raw``, or the 400 Groq answers; the model is logged either way."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _errors.invalid(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _errors.invalid("request body is nested too deeply") from None
        if isinstance(body, Mapping) and isinstance(body.get("model"), str):
            info["model"] = body["model"]
        req = parse_chat_request(body)
        info.update(model=req.model, stream=req.stream)
        return req

    def _charge(
        self, req: ChatRequest, limits: ModelLimits, requested: int, info: dict[str, Any]
    ) -> None:
        """Take ``requested`` tokens from the buckets, or raise Groq's 413 (larger than a
        limit) or 429 (no room now)."""
        cfg = self.config
        too_large = limits.too_large(requested)
        if too_large is not None:
            kind, limit = too_large
            raise ApiError(
                413,
                _errors.request_too_large_body(
                    model=req.model,
                    organization=cfg.organization,
                    label=kind.label,
                    limit=limit,
                    requested=requested,
                ),
                type="tokens",
                code="rate_limit_exceeded",
                limit=kind.name,
            )
        with self._lock:
            now = cfg.clock()
            denial = limits.check(requested, now)
            if denial is None:
                limits.charge(requested, now)
        info["t"] = now
        if denial is not None:
            raise ApiError(
                429,
                _errors.rate_limit_body(
                    model=req.model,
                    organization=cfg.organization,
                    label=denial.kind.label,
                    limit=denial.limit,
                    used=denial.used,
                    requested=denial.requested,
                    wait=format_wait(denial.wait),
                ),
                type=denial.kind.type,
                code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, math.ceil(denial.wait - 1e-6)))},
                limit=denial.kind.name,
            )

    def _complete(
        self,
        req: ChatRequest,
        limits: ModelLimits,
        prompt: int,
        reserve: int,
        info: dict[str, Any],
        request_id: str,
    ) -> Response:
        """The answer to an admitted request, after the configured latency; the unused
        reservation is refunded first when the server is configured to."""
        cfg = self.config
        n = min(reserve, cfg.completion_tokens)
        finish = "length" if n < cfg.completion_tokens else "stop"
        if cfg.latency > 0:
            cfg.sleep(cfg.latency)
        charged = prompt + reserve
        if cfg.refund_unused:
            with self._lock:
                limits.refund(reserve - n, cfg.clock())
            charged = prompt + n
        info.update(status=200, completion_tokens=n, charged_tokens=charged)
        headers = self._headers(limits, request_id)
        usage = _usage(prompt, n, cfg.latency)
        pieces = completion_pieces(n)
        if req.stream:
            events = _stream_events(req, pieces, finish, usage, request_id)
            headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **headers}
            return Response(200, headers, events=events)
        return _json_response(200, _completion(req, pieces, finish, usage, request_id), headers)

    def _reservation(
        self, req: ChatRequest, prompt: int, context_window: int, max_completion: int | None
    ) -> int:
        """Completion tokens reserved for ``req`` (400 when they cannot fit)."""
        if req.max_tokens is not None:
            if max_completion and req.max_tokens > max_completion:
                raise _errors.invalid(
                    f"`max_tokens` must be less than or equal to `{max_completion}`, the maximum "
                    "value for `max_tokens` is less than the `context_window` for this model",
                    param="max_tokens",
                )
            if prompt + req.max_tokens > context_window:
                raise _errors.context_length_exceeded()
            return req.max_tokens
        if prompt >= context_window:
            raise _errors.context_length_exceeded()
        reserve = min(self.config.default_max_tokens, context_window - prompt)
        if max_completion:
            reserve = min(reserve, max_completion)
        return reserve

    # -- models --------------------------------------------------------------------------

    def _model_payload(self, limits: ModelLimits) -> dict[str, Any]:
        spec = limits.spec
        return {
            "id": spec.name,
            "object": "model",
            "created": 1693721698,
            "owned_by": spec.owned_by,
            "active": not spec.decommissioned,
            "context_window": spec.context_window,
            "public_apps": None,
            "max_completion_tokens": spec.max_completion_tokens or spec.context_window,
        }

    def _models_payload(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [self._model_payload(limits) for limits in self._limits.values()],
        }


def _has_bearer(headers: Mapping[str, str]) -> bool:
    value = ""
    for key, val in headers.items():
        if key.lower() == "authorization":
            value = val
    scheme, _, token = value.strip().partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _usage(prompt: int, completion: int, latency: float) -> dict[str, Any]:
    prompt_time = round(prompt * 1e-5, 6)
    completion_time = round(latency if latency > 0 else completion * 1e-3, 6)
    return {
        "queue_time": 0.0001,
        "prompt_tokens": prompt,
        "prompt_time": prompt_time,
        "completion_tokens": completion,
        "completion_time": completion_time,
        "total_tokens": prompt + completion,
        "total_time": round(prompt_time + completion_time, 6),
    }


def _prompt_tokens(req: ChatRequest, template: str) -> int:
    """The prompt tokens Groq bills for ``req`` under the model's chat ``template``."""
    if template == "harmony":
        return count_harmony_tokens(
            req.messages,
            req.tools,
            reasoning_effort=req.reasoning_effort,
            response_format=req.response_format,
        )
    if template == "llama4":
        return count_llama4_tokens(req.messages, req.tools, req.tool_choice)
    if template in ("qwen3", "kimi"):
        return count_chatml_tokens(
            req.messages, req.tools, template=template, reasoning_effort=req.reasoning_effort
        )
    return count_prompt_tokens(
        req.messages,
        req.tools,
        template,
        tool_choice=req.tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
    )


def _completion(
    req: ChatRequest, pieces: list[str], finish: str, usage: dict[str, Any], request_id: str
) -> dict[str, Any]:
    """A ``chat.completion`` body as Groq sends it."""
    return {
        "id": "chatcmpl-" + str(uuid.uuid4()),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(pieces)},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
        "usage_breakdown": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "x_groq": {"id": request_id},
        "service_tier": "on_demand",
    }


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _stream_events(
    req: ChatRequest,
    pieces: list[str],
    finish: str,
    usage: dict[str, Any],
    request_id: str,
) -> list[bytes]:
    base = {
        "id": "chatcmpl-" + str(uuid.uuid4()),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    first = chunk({"role": "assistant", "content": ""}, None)
    events = [_sse({**first, "x_groq": {"id": request_id}})]
    events.extend(_sse(chunk({"content": piece}, None)) for piece in pieces)
    events.append(_sse({**chunk({}, finish), "x_groq": {"id": request_id, "usage": usage}}))
    if req.include_usage:
        events.append(_sse({**base, "choices": [], "usage": usage, "x_groq": {"id": request_id}}))
    events.append(b"data: [DONE]\n\n")
    return events
