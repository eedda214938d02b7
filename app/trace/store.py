"""Where traces are kept: a ``TraceStore`` protocol, its SQLite implementation (stdlib ``sqlite3``, the embedded
default) and the factory that picks the store from settings (``app.trace.postgres`` for deployments with several
replicas; ``app.trace.otel`` wraps either to export to OpenTelemetry).

One row per run: the trace as a JSON document plus indexed columns to list runs by thread and time. Each save is
one transaction (a trace is either stored whole or not at all); WAL lets readers list traces while a run is saved.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from app.trace.model import RunTrace, TraceError, TraceNotFoundError, TraceSummary, validate_run_id

if TYPE_CHECKING:
    from app.settings import Settings

INSTALL_HINT = "OpenTelemetry export needs the `otel` extra: pip install 'specrag[otel]'"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    run_id     TEXT PRIMARY KEY,
    thread_id  TEXT,
    graph      TEXT NOT NULL,
    status     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT NOT NULL,
    question   TEXT NOT NULL,
    answer     TEXT,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_thread_started ON traces (thread_id, started_at);
CREATE INDEX IF NOT EXISTS traces_started ON traces (started_at);
CREATE INDEX IF NOT EXISTS traces_graph ON traces (graph);
CREATE INDEX IF NOT EXISTS traces_status ON traces (status);
"""


SUMMARY_COLUMNS = ("run_id", "thread_id", "graph", "question", "status", "started_at", "ended_at", "answer")
"""The columns a listing selects, in the order :func:`summaries` reads them."""


def summaries(rows: Iterable[Sequence[object]]) -> builtins.list[TraceSummary]:
    """Listing rows (``SUMMARY_COLUMNS`` in order) as summaries."""
    return [TraceSummary.model_validate(dict(zip(SUMMARY_COLUMNS, row, strict=True))) for row in rows]


class TraceStore(Protocol):
    """Keeps run traces."""

    def save(self, trace: RunTrace) -> None:
        """Store ``trace`` (replacing a trace with the same run id), atomically."""
        ...

    def get(self, run_id: str) -> RunTrace:
        """The trace of ``run_id``.

        Raises:
            InvalidRunIdError: ``run_id`` is not 32 lowercase hex digits.
            TraceNotFoundError: No such run.
        """
        ...

    def list(self, *, thread_id: str | None = None, limit: int = 50) -> builtins.list[TraceSummary]:
        """The most recent runs first, optionally of one thread only."""
        ...

    def close(self) -> None:
        """Release connections and flush exports (idempotent)."""
        ...


class SQLiteTraceStore:
    """Traces in one SQLite file (created with its parent directory on first use).

    Args:
        path: The database file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise TraceError(f"cannot open the trace store {self.path}: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection per operation (safe from any thread); ``with conn`` commits or rolls back."""
        with closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn

    def save(self, trace: RunTrace) -> None:
        """Store ``trace`` in one transaction (replacing an earlier save of the same run)."""
        validate_run_id(trace.run_id)
        row = (
            trace.run_id,
            trace.thread_id,
            trace.graph,
            trace.status,
            trace.started_at.isoformat(timespec="microseconds"),
            trace.ended_at.isoformat(timespec="microseconds"),
            trace.question,
            trace.result.answer if trace.result else None,
            trace.model_dump_json(),
        )
        with self._connect() as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO traces (run_id, thread_id, graph, status, started_at, ended_at, question, "
                "answer, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def get(self, run_id: str) -> RunTrace:
        """The trace of ``run_id`` (see :meth:`TraceStore.get`)."""
        validate_run_id(run_id)
        with self._connect() as conn:
            row = conn.execute("SELECT doc FROM traces WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise TraceNotFoundError(f"no trace for run {run_id} in {self.path}")
        return RunTrace.model_validate_json(row[0])

    def list(self, *, thread_id: str | None = None, limit: int = 50) -> builtins.list[TraceSummary]:
        """Summaries of the ``limit`` most recent runs (of ``thread_id`` only, when given)."""
        query = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM traces"
        params: tuple[object, ...] = ()
        if thread_id is not None:
            query += " WHERE thread_id = ?"
            params = (thread_id,)
        query += " ORDER BY started_at DESC, run_id LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(query, (*params, max(0, limit))).fetchall()
        return summaries(rows)

    def close(self) -> None:
        """Nothing to release (a connection per operation)."""

    def __repr__(self) -> str:
        return f"SQLiteTraceStore({str(self.path)!r})"


def trace_backend(settings: Settings) -> Literal["sqlite", "postgres"]:
    """The trace store ``settings`` choose ('auto': postgres when the checkpointer is postgres)."""
    backend = settings.traces.backend
    if backend == "auto":
        return "postgres" if settings.checkpointer.provider == "postgres" else "sqlite"
    return backend


def open_trace_store(path: Path | None = None, *, settings: Settings | None = None) -> TraceStore:
    """The trace store chosen by settings (``SPECRAG_TRACES__*``), exporting to OpenTelemetry when enabled.

    Args:
        path: A SQLite file to use whatever the settings choose (tests, one-off tools).
        settings: Process settings (default: from the environment).

    Raises:
        TraceError: The store cannot be opened (the message names it), postgres without a URL, or export
            enabled without the OpenTelemetry packages.
    """
    if settings is None:
        from app.settings import get_settings

        settings = get_settings()
    traces = settings.traces
    store: TraceStore
    if path is not None or trace_backend(settings) == "sqlite":
        store = SQLiteTraceStore(path if path is not None else traces.path)
    else:
        from app.trace.postgres import PostgresTraceStore

        url = traces.url or settings.checkpointer.url
        if url is None:
            raise TraceError(
                "the postgres trace store needs SPECRAG_TRACES__URL or SPECRAG_CHECKPOINTER__URL (postgresql://...)"
            )
        store = PostgresTraceStore(
            url.get_secret_value(), pool_size=traces.pool_size, connect_timeout_s=traces.connect_timeout_s
        )
    if traces.otel.enabled:
        try:
            from app.trace.otel import ExportingTraceStore, OtlpExporter

            store = ExportingTraceStore(store, OtlpExporter(traces.otel))
        except ImportError as exc:
            store.close()
            raise TraceError(f"{INSTALL_HINT} ({exc})") from None
        except TraceError:
            store.close()
            raise
    return store
