"""Where traces are kept: a ``TraceStore`` protocol and its SQLite implementation (stdlib ``sqlite3``).

One row per run: the trace as a JSON document plus indexed columns to list runs by thread and time. Each save is
one transaction (a trace is either stored whole or not at all); WAL lets readers list traces while a run is saved.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Protocol

from app.trace.model import RunTrace, TraceError, TraceNotFoundError, TraceSummary, validate_run_id

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
        query = "SELECT run_id, thread_id, graph, question, status, started_at, ended_at, answer FROM traces"
        params: tuple[object, ...] = ()
        if thread_id is not None:
            query += " WHERE thread_id = ?"
            params = (thread_id,)
        query += " ORDER BY started_at DESC, run_id LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(query, (*params, max(0, limit))).fetchall()
        keys = ("run_id", "thread_id", "graph", "question", "status", "started_at", "ended_at", "answer")
        return [TraceSummary.model_validate(dict(zip(keys, row, strict=True))) for row in rows]


def open_trace_store(path: Path | None = None) -> SQLiteTraceStore:
    """The trace store at ``path``, else at ``SPECRAG_TRACES__PATH`` (default ``.specrag/traces.sqlite``)."""
    if path is None:
        from app.settings import get_settings

        path = get_settings().traces.path
    return SQLiteTraceStore(path)
