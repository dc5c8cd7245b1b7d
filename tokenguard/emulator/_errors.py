"""Groq-style error responses: the status, the JSON body and the wording Groq uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiError", "context_length_exceeded", "model_not_found", "rate_limit_body"]

UPGRADE = "Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"


@dataclass
class ApiError(Exception):
    """An error answer: raised anywhere in request handling, written as Groq's JSON body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Which limit a 413/429 refers to ("TPM", "RPM", ...), for the request log.
    limit: str | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
        return {"error": error}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


def invalid(message: str, param: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error`` in Groq's validation wording."""
    return ApiError(400, message, param=param)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def model_decommissioned(model: str) -> ApiError:
    return ApiError(
        400,
        f"The model `{model}` has been decommissioned and is no longer supported. "
        "Please refer to https://console.groq.com/docs/deprecations for a recommendation "
        "on which model to use instead.",
        code="model_decommissioned",
    )


def context_length_exceeded() -> ApiError:
    return ApiError(
        400,
        "Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def rate_limit_body(
    *,
    model: str,
    organization: str,
    label: str,
    limit: int,
    used: int,
    requested: int,
    wait: str,
) -> str:
    """The message of a 429, word for word as Groq writes it."""
    return (
        f"Rate limit reached for model `{model}` in organization `{organization}` "
        f"service tier `on_demand` on {label}: Limit {limit}, Used {used}, "
        f"Requested {requested}. Please try again in {wait}. {UPGRADE}"
    )


def request_too_large_body(
    *, model: str, organization: str, label: str, limit: int, requested: int
) -> str:
    """The message of a 413 (one request above the limit itself)."""
    return (
        f"Request too large for model `{model}` in organization `{organization}` "
        f"service tier `on_demand` on {label}: Limit {limit}, Requested {requested}, "
        "please reduce your message size and try again."
    )
