"""OpenAI-style error objects: every failure is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx.

Bad requests get 400 (malformed JSON, empty content, bad context), 401 (auth), 404 (unknown model, run or route),
413 (body too large) or 422 (a body that does not match the schema); a full run queue 429 (with Retry-After);
backends that are down or misconfigured, or no run slot in time, 503; a run past its time limit 504; anything
unexpected a JSON 500, never an HTML page.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
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
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError | RecursionError):
        # FastAPI's "There was an error parsing the body": a body json.loads rejects other than by syntax.
        why = "not UTF-8" if isinstance(exc.__cause__, UnicodeDecodeError) else "nested too deeply"
        return error_response(APIError(400, f"the request body is not valid JSON ({why})", code="invalid_json"))
    return error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    notes = " ".join(str(n) for n in getattr(exc, "__notes__", ()))
    message = f"internal error: {type(exc).__name__}" + (f" ({notes})" if notes else "")
    return error_response(APIError(500, message, code="internal_error"))


class ErrorDetail(BaseModel):
    """What went wrong (OpenAI's error object)."""

    message: str = Field(description="One human-readable line")
    type: str = Field(description="e.g. invalid_request_error, not_found_error, service_unavailable")
    param: str | None = Field(description="The request parameter at fault, if any")
    code: str | None = Field(description="A machine-readable code, if any")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, empty or invalid content, bad context, thread or run id",
    401: "Missing or invalid API key",
    404: "Unknown model, run or route",
    413: "Request body over the limit (checked before parsing)",
    422: "A body or parameter that does not match the schema",
    429: "The run queue is full (SPECRAG_SERVER__MAX_QUEUED_RUNS); retry after Retry-After seconds",
    503: "A backend, model or store is unavailable, or no run slot in time",
    504: "The run took longer than SPECRAG_SERVER__RUN_TIMEOUT_S",
}


def _document_errors(schema: dict[str, Any]) -> None:
    """Declare the error responses every operation can give, with their real body (:class:`ErrorResponse`).

    FastAPI documents 422 with its own ``HTTPValidationError`` body, which this server never sends. The trace page
    (``/ui``) answers a malformed or unknown run id with an HTML page, so its errors may also be ``text/html``.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorResponse"] = body
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    json_error = {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status in sorted(s for s in _TYPES if s != 405):
                content: dict[str, Any] = {"application/json": json_error}
                if path.startswith("/ui/"):
                    content["text/html"] = {"schema": {"type": "string"}}
                description = _ERROR_DESCRIPTIONS.get(status, HTTPStatus(status).phrase)
                responses[str(status)] = {"description": description, "content": content}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OpenAI-style error object, and document them."""
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_errors(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


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
    from app.trace.capture import RunTimeoutError
    from app.trace.model import TraceError

    notes = "; ".join(" ".join(str(n).split()) for n in getattr(exc, "__notes__", ()))
    message = str(exc) + (f" [{notes}]" if notes else "")
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return APIError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(exc, BadQuestionError):
        return APIError(400, message, param="messages", code="invalid_question")
    if isinstance(exc, RunTimeoutError):
        return APIError(504, f"{message} (SPECRAG_SERVER__RUN_TIMEOUT_S)", code="run_timeout")
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
