"""OpenAI-style error objects: every failure is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx.

Bad requests get 400 (malformed JSON, empty content, bad context), 401 (auth), 404 (unknown model, run or route),
413 (body too large) or 422 (a body that does not match the schema); backends that are down or misconfigured 503;
anything unexpected a JSON 500, never an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error to answer with an OpenAI-style error object.

    Args:
        status: HTTP status.
        message: One human-readable line.
        param: The request parameter at fault, if any.
        code: A machine-readable code, if any.
        headers: Extra response headers.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error (also sent as an SSE ``data:`` line when a stream fails)."""
    return {
        "error": {
            "message": " ".join(message.split()),
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: APIError) -> JSONResponse:
    """The response for ``error``."""
    body = error_body(error.status, error.message, param=error.param, code=error.code)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(APIError(400, "the request body is not valid JSON", code="invalid_json"))
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        message = f"missing required parameter: {param!r}"
    else:
        message = f"invalid {param or 'request body'}: {first.get('msg', 'invalid value')}"
    return error_response(APIError(422, message, param=param, code=str(first.get("type", "invalid"))))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail) if exc.detail else "error"
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    notes = " ".join(str(n) for n in getattr(exc, "__notes__", ()))
    message = f"internal error: {type(exc).__name__}" + (f" ({notes})" if notes else "")
    return error_response(APIError(500, message, code="internal_error"))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OpenAI-style error object."""
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


def run_error(exc: BaseException) -> APIError:
    """Map a failure of a graph run (or of its preparation) to an API error.

    Bad questions are the caller's fault (400); a missing store, model or unreachable backend is the server's
    (503, with the message naming what to fix); anything else is an internal error (500, logged).
    """
    from app.ask import BadQuestionError
    from app.llm.protocol import BackendUnavailableError, ContextOverflowError, NotSupportedError
    from app.models import ModelNotInstalledError
    from app.store.errors import StoreError
    from app.store.protocol import StoreNotFoundError
    from app.trace.model import TraceError

    notes = "; ".join(" ".join(str(n).split()) for n in getattr(exc, "__notes__", ()))
    message = str(exc) + (f" [{notes}]" if notes else "")
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return APIError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(exc, BadQuestionError):
        return APIError(400, message, param="messages", code="invalid_question")
    unavailable: tuple[type[BaseException], ...] = (
        BackendUnavailableError,
        NotSupportedError,
        ModelNotInstalledError,
        StoreError,
        StoreNotFoundError,
        TraceError,
    )
    if isinstance(exc, unavailable):
        return APIError(503, f"backend unavailable: {message}", code="backend_unavailable")
    log.error("run failed: %s", message, exc_info=exc)
    return APIError(500, f"the run failed: {type(exc).__name__}: {message}", code="run_failed")
