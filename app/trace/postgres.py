"""Run traces on Postgres: one trace store for every replica behind a load balancer.

The same contract as :class:`app.trace.store.SQLiteTraceStore`: one row per run, the trace as its exact JSON
document (``doc``, text, so a trace reads back byte for byte; query it with ``doc::jsonb``) plus indexed columns
to list runs by thread and time. A save is one committed transaction: when :meth:`PostgresTraceStore.save`
returns, the trace is on the server (with Postgres's default ``synchronous_commit``, in its write-ahead log), so
a replica killed right after answering loses nothing.

Schema changes are numbered migrations in :data:`MIGRATIONS`, applied on open inside one transaction under an
advisory lock (replicas starting at the same time apply each migration once); the applied version is kept in
``specrag_trace_schema``. A database migrated by a newer release is refused with a clear message.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from app.trace.model import RunTrace, TraceError, TraceNotFoundError, TraceSummary, validate_run_id
from app.trace.store import SUMMARY_COLUMNS, summaries

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

MIGRATIONS: tuple[str, ...] = (
    # 1: the traces table and its listing indexes.
    """
    CREATE TABLE IF NOT EXISTS specrag_traces (
        run_id     TEXT PRIMARY KEY,
        thread_id  TEXT,
        graph      TEXT NOT NULL,
        status     TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        ended_at   TIMESTAMPTZ NOT NULL,
        question   TEXT NOT NULL,
        answer     TEXT,
        doc        TEXT NOT NULL,
        saved_at   TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS specrag_traces_thread_started ON specrag_traces (thread_id, started_at);
    CREATE INDEX IF NOT EXISTS specrag_traces_started ON specrag_traces (started_at);
    CREATE INDEX IF NOT EXISTS specrag_traces_graph ON specrag_traces (graph);
    CREATE INDEX IF NOT EXISTS specrag_traces_status ON specrag_traces (status);
    """,
)
"""Schema migrations in order: entry ``i`` brings the schema from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)

_LOCK_KEY = 0x5EC7A6  # pg_advisory_xact_lock key of the migration step (any constant shared by all replicas)


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _column(text: str | None) -> str | None:
    """A listing column's text (Postgres text cannot hold NUL; the document keeps the exact value)."""
    return text.replace("\x00", "") if text is not None else None


class PostgresTraceStore:
    """Traces in a Postgres database (tables created or migrated on open).

    Args:
        url: ``postgresql://user:pass@host:5432/db``.
        pool_size: Connections in the pool (a save or a read holds one briefly).
        connect_timeout_s: How long opening the store and each operation wait for a connection.

    Raises:
        TraceError: The server cannot be reached, or its schema is newer than this release knows.
    """

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout_s: float = 10.0) -> None:
        from psycopg_pool import ConnectionPool

        self.where = redact(url)
        self._timeout = connect_timeout_s
        self._pool: ConnectionPool[Any] | None = None
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"prepare_threshold": None, "connect_timeout": max(1, int(connect_timeout_s))},
                timeout=connect_timeout_s,
                open=False,
            )
            self._pool.open(wait=True, timeout=connect_timeout_s)
            self._migrate()
        except TraceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise TraceError(f"cannot open the trace store on {self.where}: {' '.join(str(exc).split())}") from None

    def _migrate(self) -> None:
        assert self._pool is not None
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute("CREATE TABLE IF NOT EXISTS specrag_trace_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM specrag_trace_schema").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise TraceError(
                    f"the trace store on {self.where} has schema version {version}, newer than this release's "
                    f"{SCHEMA_VERSION}: upgrade specrag (or use another database)"
                )
            for sql in MIGRATIONS[version:]:
                conn.execute(sql)
            if row is None:
                conn.execute("INSERT INTO specrag_trace_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:
                conn.execute("UPDATE specrag_trace_schema SET version = %s", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._connection() as conn:
            row = conn.execute("SELECT version FROM specrag_trace_schema").fetchone()
        return int(row[0]) if row else 0

    def _connection(self) -> Any:
        if self._pool is None:
            raise TraceError(f"the trace store on {self.where} is closed")
        return self._pool.connection(timeout=self._timeout)

    def save(self, trace: RunTrace) -> None:
        """Store ``trace`` in one committed transaction (replacing an earlier save of the same run)."""
        validate_run_id(trace.run_id)
        row = (
            trace.run_id,
            _column(trace.thread_id),
            _column(trace.graph),
            trace.status,
            trace.started_at,
            trace.ended_at,
            _column(trace.question),
            _column(trace.result.answer if trace.result else None),
            trace.model_dump_json(),
        )
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO specrag_traces (run_id, thread_id, graph, status, started_at, ended_at, question, "
                    "answer, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
                    "thread_id = EXCLUDED.thread_id, graph = EXCLUDED.graph, status = EXCLUDED.status, "
                    "started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, question = EXCLUDED.question, "
                    "answer = EXCLUDED.answer, doc = EXCLUDED.doc, saved_at = now()",
                    row,
                )
        except TraceError:
            raise
        except Exception as exc:
            message = " ".join(str(exc).split())
            raise TraceError(f"cannot save trace {trace.run_id} on {self.where}: {message}") from None

    def get(self, run_id: str) -> RunTrace:
        """The trace of ``run_id`` (see :meth:`app.trace.store.TraceStore.get`)."""
        validate_run_id(run_id)
        try:
            with self._connection() as conn:
                row = conn.execute("SELECT doc FROM specrag_traces WHERE run_id = %s", (run_id,)).fetchone()
        except TraceError:
            raise
        except Exception as exc:
            raise TraceError(f"cannot read trace {run_id} from {self.where}: {' '.join(str(exc).split())}") from None
        if row is None:
            raise TraceNotFoundError(f"no trace for run {run_id} in {self.where}")
        return RunTrace.model_validate_json(row[0])

    def list(self, *, thread_id: str | None = None, limit: int = 50) -> builtins.list[TraceSummary]:
        """Summaries of the ``limit`` most recent runs (of ``thread_id`` only, when given)."""
        query = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM specrag_traces"
        params: tuple[object, ...] = ()
        if thread_id is not None:
            query += " WHERE thread_id = %s"
            params = (thread_id,)
        query += " ORDER BY started_at DESC, run_id LIMIT %s"
        try:
            with self._connection() as conn:
                rows = conn.execute(query, (*params, max(0, limit))).fetchall()
        except TraceError:
            raise
        except Exception as exc:
            raise TraceError(f"cannot list traces on {self.where}: {' '.join(str(exc).split())}") from None
        return summaries(rows)

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def __repr__(self) -> str:
        return f"PostgresTraceStore({self.where!r})"
