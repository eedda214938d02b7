"""Run traces over HTTP: ``GET /v1/traces/{run_id}`` (the JSON document) and ``GET /v1/threads/{id}/traces``.

Traces live in the trace store (``SPECRAG_TRACES__PATH``, SQLite), so they survive a server restart.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from app.server.errors import APIError
from app.server.schemas import THREAD_ID
from app.server.security import require_api_key
from app.trace.model import InvalidRunIdError, RunTrace, TraceError, TraceNotFoundError
from app.trace.store import TraceStore

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["traces"])


def trace_store_of(request: Request) -> TraceStore:
    """The application's trace store (``app.state.trace_store``)."""
    store: TraceStore | None = getattr(request.app.state, "trace_store", None)
    if store is None:
        raise APIError(503, "the server is starting", code="not_ready")
    return store


StoreDep = Annotated[TraceStore, Depends(trace_store_of)]


@router.get("/traces/{run_id}", response_model=RunTrace)
def get_trace(run_id: str, store: StoreDep) -> RunTrace:
    """The trace of one run: 400 for a malformed run id, 404 for an unknown one."""
    try:
        return store.get(run_id)
    except InvalidRunIdError as exc:
        raise APIError(400, str(exc), param="run_id", code="invalid_run_id") from None
    except TraceNotFoundError:
        raise APIError(404, f"no trace for run {run_id}", param="run_id", code="trace_not_found") from None
    except TraceError as exc:
        raise APIError(503, str(exc), code="trace_store_unavailable") from None


@router.get("/threads/{thread_id}/traces")
def list_thread_traces(
    thread_id: str,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """The runs of one thread, most recent first (summaries; fetch each with ``/v1/traces/{run_id}``)."""
    if not THREAD_ID.fullmatch(thread_id):
        raise APIError(400, "invalid thread id", param="thread_id")
    try:
        found = store.list(thread_id=thread_id, limit=limit)
    except TraceError as exc:
        raise APIError(503, str(exc), code="trace_store_unavailable") from None
    return {"object": "list", "thread_id": thread_id, "data": [t.model_dump(mode="json") for t in found]}
