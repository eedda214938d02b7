"""The chat endpoint (``specrag serve``): an OpenAI-compatible HTTP API over the graphs, with threads and traces.

* :mod:`app.server.app`: ``create_app`` (FastAPI application: routers, error handlers, limits, lifespan).
* :mod:`app.server.schemas`: request and response bodies (OpenAI chat completions + the ``specrag`` extension).
* :mod:`app.server.runner`: ``ChatRunner``: threads (checkpointer), run slots, traced runs.
* :mod:`app.server.chat`: ``POST /v1/chat/completions`` (JSON and SSE) and ``GET /v1/models``.
* :mod:`app.server.traces`: ``GET /v1/traces/{run_id}`` and ``GET /v1/threads/{thread_id}/traces``.
* :mod:`app.server.errors`: OpenAI-style error objects for every failure.
* :mod:`app.server.security`: bearer-token auth and the loopback bind rule.
* :mod:`app.server.limits`: the request body size limit (enforced before parsing).
* :mod:`app.server.ui`: the trace web page (``/ui/runs/{run_id}``).
"""
