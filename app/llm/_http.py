"""Turn transport failures of model servers into ``BackendUnavailableError`` with the URL and a hint."""

from __future__ import annotations

import httpx

from app.llm.protocol import BackendUnavailableError


def unavailable(exc: BaseException, *, what: str, url: str, model: str, timeout_s: float) -> BackendUnavailableError:
    """A clear error for a failed request, or the original exception re-raised when it is not a transport failure.

    Args:
        exc: The exception the client raised.
        what: The kind of server ("Ollama", "OpenAI-compatible server").
        url: The server URL.
        model: The model requested.
        timeout_s: The request timeout in force.

    Returns:
        The error to raise (``raise unavailable(...) from exc``).
    """
    if isinstance(exc, httpx.TimeoutException):
        return BackendUnavailableError(
            f"{what} at {url} did not answer within {timeout_s:g} s (model {model!r}); the server may be overloaded "
            "or loading the model: raise the timeout_s setting (e.g. SPECRAG_VERIFIER__TIMEOUT_S) or check the server"
        )
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return BackendUnavailableError(
            f"cannot connect to {what} at {url} (model {model!r}): is it running? "
            "Check the base_url setting (e.g. SPECRAG_DRAFTER__BASE_URL)"
        )
    if isinstance(exc, httpx.TransportError):
        return BackendUnavailableError(f"{what} at {url} failed during the request (model {model!r}): {exc}")
    raise exc


def model_not_found(*, what: str, url: str, model: str, detail: str, hint: str) -> BackendUnavailableError:
    """The server answered 404 for the model."""
    return BackendUnavailableError(f"{what} at {url} does not serve model {model!r} ({detail}); {hint}")
