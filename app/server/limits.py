"""Request body size limit, enforced before anything parses the body (pure ASGI middleware)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.server.errors import error_body


class _TooLarge(Exception):
    """The body grew past the limit while it was being read."""


class BodySizeLimit:
    """Answer 413 (OpenAI-style error) to a request whose body exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading anything; a chunked body is counted as
    it arrives and refused as soon as it passes the limit.

    Args:
        app: The wrapped application.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(send, 400, "invalid Content-Length header")
                return
            if length > self.max_bytes:
                await _reply(send, 413, self._message(), code="request_too_large")
                return
        received = 0
        too_large = False
        replied = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The app may turn the read failure into a response of its own (FastAPI: 400): answer 413 instead.
            nonlocal replied
            if not too_large:
                await send(message)
            elif not replied:
                replied = True
                await _reply(send, 413, self._message(), code="request_too_large")

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replied:
                await _reply(send, 413, self._message(), code="request_too_large")

    def _message(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes (SPECRAG_SERVER__MAX_BODY_BYTES)"


async def _reply(send: Send, status: int, message: str, code: str | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
