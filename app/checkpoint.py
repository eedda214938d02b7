"""LangGraph checkpointers (thread state: chat history, interrupts, time travel) from settings.

Providers (``SPECRAG_CHECKPOINTER__PROVIDER``):

* ``memory``: in-process, lost on exit (tests, one-off runs).
* ``sqlite``: one file (``SPECRAG_CHECKPOINTER__PATH``, default ``.specrag/checkpoints.sqlite``); one process.
* ``postgres``: ``SPECRAG_CHECKPOINTER__URL`` (``postgresql://user:pass@host:5432/db``); shared by any number of app
  replicas, so a thread can continue on whichever replica the load balancer picks. The tables are created or
  migrated on open (``setup()``, idempotent).

Use :func:`make_checkpointer` in synchronous code and :func:`make_async_checkpointer` in an asyncio server; both are
context managers that close connections on exit. The LangGraph API server (``langgraph up`` / the server image)
does not use these: it brings its own Postgres persistence, configured with ``POSTGRES_URI`` (see deploy/SCALING.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from app.settings import CheckpointerSettings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

PROVIDERS = ("memory", "sqlite", "postgres")


def _postgres_url(settings: CheckpointerSettings) -> str:
    if settings.url is None:
        raise ValueError("checkpointer provider 'postgres' needs SPECRAG_CHECKPOINTER__URL (postgresql://...)")
    return settings.url.get_secret_value()


def _sqlite_path(settings: CheckpointerSettings) -> str:
    path = Path(settings.path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


# Connection options the Postgres saver needs: autocommit (setup() creates indexes concurrently), dict rows, and no
# server-side prepared statements (safe behind PgBouncer in transaction mode).
_PG_KWARGS = {"autocommit": True, "prepare_threshold": None}


@contextmanager
def make_checkpointer(settings: CheckpointerSettings) -> Iterator[BaseCheckpointSaver[str]]:
    """A checkpointer for synchronous graphs.

    Args:
        settings: Provider and its location.

    Yields:
        The checkpointer (for ``graph.compile(checkpointer=...)``).

    Raises:
        ValueError: Unknown provider, or postgres without a URL.
    """
    match settings.provider:
        case "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            yield InMemorySaver()
        case "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            with SqliteSaver.from_conn_string(_sqlite_path(settings)) as saver:
                saver.setup()
                yield saver
        case "postgres":
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool

            pool = ConnectionPool(
                _postgres_url(settings),
                min_size=1,
                max_size=settings.pool_size,
                kwargs={**_PG_KWARGS, "row_factory": dict_row},
                open=True,
            )
            with pool:
                pg_saver = PostgresSaver(pool)  # type: ignore[arg-type]
                pg_saver.setup()
                yield pg_saver
        case other:
            raise ValueError(f"unknown checkpointer provider {other!r}: valid options are {', '.join(PROVIDERS)}")


@asynccontextmanager
async def make_async_checkpointer(settings: CheckpointerSettings) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """A checkpointer for asyncio servers (``ainvoke``/``astream``); same providers as :func:`make_checkpointer`.

    Args:
        settings: Provider and its location.

    Yields:
        The checkpointer.

    Raises:
        ValueError: Unknown provider, or postgres without a URL.
    """
    match settings.provider:
        case "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            yield InMemorySaver()
        case "sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async with AsyncSqliteSaver.from_conn_string(_sqlite_path(settings)) as saver:
                await saver.setup()
                yield saver
        case "postgres":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                _postgres_url(settings),
                min_size=1,
                max_size=settings.pool_size,
                kwargs={**_PG_KWARGS, "row_factory": dict_row},
                open=False,
            )
            async with pool:
                apg_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
                await apg_saver.setup()
                yield apg_saver
        case other:
            raise ValueError(f"unknown checkpointer provider {other!r}: valid options are {', '.join(PROVIDERS)}")
