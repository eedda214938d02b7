"""The FastAPI application of ``specrag serve``.

:func:`create_app` wires the routers (chat, traces, the trace page), the OpenAI-style error handlers, the body
size limit and optional CORS; its lifespan opens the checkpointer (``SPECRAG_CHECKPOINTER__*``, SQLite under
``.specrag/`` by default) and compiles both graphs with it. Tests pass fake backends, an in-memory checkpointer
and a temporary trace store.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from langgraph.checkpoint.serde.base import maybe_add_typed_methods

from app.checkpoint import make_async_checkpointer
from app.server import chat, errors, traces
from app.server.limits import BodySizeLimit
from app.server.runner import ChatRunner, tracked
from app.server.security import require_api_key
from app.settings import Settings, get_settings
from app.trace.store import TraceStore, open_trace_store
from graphs import speculative_rag, standard_rag
from graphs.backends import BackendProvider, configured_backends
from graphs.state import state_serializer

log = logging.getLogger(__name__)


def _include_ui(app: FastAPI) -> None:
    """Mount the trace page (``app.server.ui.routes.router``) when it is installed, behind the same auth."""
    try:
        module = importlib.import_module("app.server.ui.routes")
    except ImportError as exc:
        log.warning("trace page not available: %s", exc)
        return
    app.include_router(module.router, dependencies=[Depends(require_api_key)])


def create_app(
    settings: Settings | None = None,
    *,
    provider: BackendProvider | None = None,
    checkpointer: Any = None,
    trace_store: TraceStore | None = None,
) -> FastAPI:
    """The chat server application.

    Args:
        settings: Process settings (default: from the environment).
        provider: Backends (default: from settings, loaded on first use).
        checkpointer: A LangGraph checkpointer (default: opened from ``settings.checkpointer`` for the app's
            lifetime).
        trace_store: Where run traces go (default: the store ``settings.traces`` choose, opened for the app's
            lifetime).

    Returns:
        The FastAPI application (run it with uvicorn; its lifespan opens and closes the checkpointer).
    """
    settings = settings or get_settings()
    server = settings.server
    backends = provider or configured_backends

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: AbstractAsyncContextManager[Any] = (
            nullcontext(checkpointer) if checkpointer is not None else make_async_checkpointer(settings.checkpointer)
        )
        async with opened as saver:
            saver.serde = maybe_add_typed_methods(state_serializer())
            counted = tracked(backends)  # a backend call that outlives its run keeps the run's slot
            graphs = {
                "speculative": speculative_rag.build(counted).compile(checkpointer=saver, name="speculative_rag"),
                "standard": standard_rag.build(counted).compile(checkpointer=saver, name="standard_rag"),
            }
            own_store = trace_store is None
            app.state.trace_store = trace_store or open_trace_store(settings=settings)
            app.state.runner = ChatRunner(
                graphs,
                app.state.trace_store,
                backends,
                max_concurrent_runs=server.max_concurrent_runs,
                max_queued_runs=server.max_queued_runs,
                queue_timeout_s=server.queue_timeout_s,
                run_timeout_s=server.run_timeout_s,
                stream_chunk_chars=server.stream_chunk_chars,
            )
            try:
                yield
            finally:
                app.state.runner = None
                if own_store:
                    app.state.trace_store.close()

    app = FastAPI(
        title="specrag",
        summary="Speculative RAG chat endpoint (OpenAI-compatible)",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the same auth as every /v1 route
    )
    app.state.api_key = server.api_key.get_secret_value() if server.api_key is not None else None
    app.state.runner = None
    errors.install(app)

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.include_router(chat.router)
    app.include_router(traces.router)
    _include_ui(app)
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Thread-Id"],
            expose_headers=["X-Thread-Id", "X-Run-Id"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=server.max_body_bytes)
    return app
