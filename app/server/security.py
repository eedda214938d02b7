"""Bearer-token auth for the API, and the rule that keeps an unauthenticated server on loopback."""

from __future__ import annotations

import ipaddress
import secrets

from fastapi import Request

from app.server.errors import APIError


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or 'localhost') only accepts connections from this machine."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, *, api_key_set: bool, allow_public: bool) -> str | None:
    """Why the server must not bind to ``host``, or ``None`` when it may.

    A non-loopback address needs a token (``SPECRAG_SERVER__API_KEY``) or an explicit ``--allow-public``.
    """
    if is_loopback(host) or api_key_set or allow_public:
        return None
    return (
        f"refusing to bind to {host}, which is not a loopback address, without auth: set SPECRAG_SERVER__API_KEY "
        "or pass --allow-public"
    )


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: when the app has an API key, the request must carry ``Authorization: Bearer <key>``.

    Raises:
        APIError: 401 when the token is missing or wrong (the token is never logged or echoed).
    """
    expected: str | None = getattr(request.app.state, "api_key", None)
    if not expected:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise APIError(
            401,
            "missing or invalid API key: send Authorization: Bearer <SPECRAG_SERVER__API_KEY>",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
