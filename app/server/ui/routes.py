"""The trace page: ``GET /ui/runs/{run_id}`` renders a run's trace as one self-contained HTML page;
``GET /ui/runs`` lists recent runs with links to theirs.

Mount with ``app.include_router(router)``. The trace store is ``app.state.trace_store`` when the application set
one, else the store at ``SPECRAG_TRACES__PATH`` (opened once); tests may also override :func:`get_trace_store`
through ``app.dependency_overrides``.

The page loads nothing from anywhere: CSS is inlined, there is no script, and the response's
Content-Security-Policy forbids every other source. All text is autoescaped.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.server.ui.view import build_page, fmt
from app.trace.model import InvalidRunIdError, RunTrace, TraceError, TraceNotFoundError, TraceSummary
from app.trace.store import TraceStore, open_trace_store

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"

# No source is allowed but the page itself: inline styles only, no scripts, images only as data: URIs.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui", tags=["ui"])


@functools.cache
def templates() -> Environment:
    """The Jinja2 environment of the UI (autoescaping every template, undefined names are errors)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html", "css"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt
    return env


@functools.cache
def _default_store() -> TraceStore:
    return open_trace_store()


class _UnavailableStore:
    """Stands in for a trace store that could not be opened: every call raises the error it was opened with."""

    def __init__(self, error: TraceError) -> None:
        self.error = error

    def save(self, trace: RunTrace) -> None:
        raise self.error

    def get(self, run_id: str) -> RunTrace:
        raise self.error

    def list(self, *, thread_id: str | None = None, limit: int = 50) -> list[TraceSummary]:
        raise self.error

    def close(self) -> None:
        """Nothing to close."""


def get_trace_store(request: Request) -> TraceStore:
    """The application's trace store: ``app.state.trace_store`` if set, else the one from settings.

    A store that cannot be opened is retried on the next request; meanwhile the pages answer 503.
    """
    store = getattr(request.app.state, "trace_store", None)
    if store is not None:
        return store
    try:
        return _default_store()
    except TraceError as exc:
        return _UnavailableStore(exc)


def _page(template: str, http_status: int, **values: object) -> HTMLResponse:
    html = templates().get_template(template).render(**values)
    return HTMLResponse(html, status_code=http_status, headers=_HEADERS)


def _error(status_code: int, title: str, message: str) -> HTMLResponse:
    return _page("error.html", status_code, status_code=status_code, title=title, message=message)


@router.get("/runs", response_class=HTMLResponse, summary="Recent runs, linking to their trace pages")
def runs_page(
    store: Annotated[TraceStore, Depends(get_trace_store)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    thread_id: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The ``limit`` most recent runs (of one thread, with ``thread_id``), most recent first."""
    try:
        runs = store.list(thread_id=thread_id, limit=limit)
    except TraceError as exc:
        log.warning("trace store unavailable: %s", exc)
        return _error(503, "Trace store unavailable", str(exc))
    return _page("runs.html", 200, runs=runs, thread_id=thread_id)


@router.get("/runs/{run_id:path}", response_class=HTMLResponse, summary="A run's trace as a web page")
def trace_page(run_id: str, store: Annotated[TraceStore, Depends(get_trace_store)]) -> HTMLResponse:
    """The trace of ``run_id`` as HTML: 400 for a malformed id, 404 for an unknown one.

    The path parameter takes the rest of the path (slashes included), so a path-like id such as
    ``..%2F..%2Fetc%2Fpasswd`` reaches the store's id validation and is answered with 400, not routed elsewhere.
    """
    try:
        trace = store.get(run_id)
    except InvalidRunIdError as exc:
        return _error(400, "Malformed run id", str(exc))
    except TraceNotFoundError:
        return _error(404, "Run not found", f"There is no trace for run {run_id}.")
    except TraceError as exc:
        log.warning("trace store unavailable: %s", exc)
        return _error(503, "Trace store unavailable", str(exc))
    return _page("trace.html", 200, page=build_page(trace))
