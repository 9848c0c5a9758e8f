"""Errors as OpenAI answers them: ``{"error": {"message", "type", "param", "code"}}`` with
the HTTP status that says whose fault it is (400 a bad request, 401 a missing or wrong key,
404 an unknown model, 413 a body too large, 429 a full queue, 503 a model not ready, 500 a
bug of ours), and which library exceptions are the client's doing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._core import ClosedError, OutOfRangeError
from ._admission import QueueFull


class APIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def sse(self) -> bytes:
        """The error as the last event of a stream that had already begun."""
        return b"data: " + json.dumps(self.body(), ensure_ascii=False).encode("utf-8") + b"\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unknown_model(name: str) -> APIError:
    return APIError(404, f"The model {name!r} does not exist", param="model", code="model_not_found")


def unavailable(message: str, code: str, retry_after: int = 1) -> APIError:
    return APIError(503, message, "unavailable_error", code=code, headers={"Retry-After": str(retry_after)})


def from_exception(exc: BaseException) -> APIError | None:
    """The APIError a library exception stands for; None for one that is a bug (500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFull):
        return APIError(429, str(exc), "rate_limit_error", code="rate_limit_exceeded",
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ClosedError):
        return unavailable("the server is shutting down", "shutting_down")
    # The library's contract: invalid arguments, prompts longer than the context, grammars,
    # schemas and chat templates that cannot serve the request are ValueError / TypeError;
    # token ids out of the vocabulary are OutOfRangeError.
    if isinstance(exc, (ValueError, TypeError, OutOfRangeError)):
        return bad_request(str(exc).strip() or type(exc).__name__)
    return None


def internal(exc: BaseException) -> APIError:
    return APIError(500, f"internal error: {type(exc).__name__} (logged by the server)", "server_error",
                    code="internal_error")
