"""Run traces: what every node of a run read and produced, and when; kept in SQLite, served as JSON.

Like ``app/ask.py``, this package sits on the entry-point side of ``app``: it imports ``graphs`` (to record runs
and to embed their ``RunResult``), which the backend modules of ``app`` never do.

* :mod:`app.trace.model`: ``RunTrace`` / ``Step`` (the JSON document) and run id validation.
* :mod:`app.trace.summary`: what a node read and wrote, made compact (no embeddings).
* :mod:`app.trace.capture`: ``TraceRecorder`` (from ``stream_mode=["tasks", "values"]``) and ``run_traced``.
* :mod:`app.trace.store`: ``TraceStore`` and its SQLite implementation (``SPECRAG_TRACES__PATH``).
* :mod:`app.trace.render`: rich rendering for ``specrag trace`` and ``specrag traces``.
"""

from app.trace.model import (
    InvalidRunIdError,
    RunTrace,
    Step,
    TraceError,
    TraceNotFoundError,
    TraceSummary,
    new_run_id,
    validate_run_id,
)
from app.trace.store import SQLiteTraceStore, TraceStore, open_trace_store

__all__ = [
    "InvalidRunIdError",
    "RunTrace",
    "SQLiteTraceStore",
    "Step",
    "TraceError",
    "TraceNotFoundError",
    "TraceStore",
    "TraceSummary",
    "new_run_id",
    "open_trace_store",
    "validate_run_id",
]
