"""The trace-store contract: SQLite (temp file) and Postgres (real server, a fresh schema per test) pass the same
tests: a real traced run (scripted backends) is saved and read back exactly, replaced on a second save, listed
newest first and by thread; bad and unknown run ids; text Postgres cannot hold (NUL) survives in the document.
Postgres only: migrations on open are idempotent and safe when replicas open at once, a newer schema is refused,
an unreachable server is one clear line without the password, and `open_trace_store` picks Postgres from settings.

Postgres: ``SPECRAG_TEST_POSTGRES_URL`` (set by ``.ci/run``), else a temporary cluster from Debian's binaries, else
skipped with the reason (a failure under CI=true).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.ask import run
from app.settings import CheckpointerSettings, Settings, TraceSettings
from app.trace.model import InvalidRunIdError, RunTrace, TraceError, TraceNotFoundError, new_run_id
from app.trace.postgres import SCHEMA_VERSION, PostgresTraceStore, redact
from app.trace.store import SQLiteTraceStore, TraceStore, open_trace_store, trace_backend
from graphs.context import Context
from tests.contract.postgres import fresh_schema, postgres_url  # noqa: F401 (a fixture)
from tests.unit.test_graph import make, paris_judge


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:  # noqa: F811 (the fixture imported above)
    with fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    opened: TraceStore
    if request.param == "sqlite":
        opened = SQLiteTraceStore(tmp_path / "traces.sqlite")
    else:
        opened = PostgresTraceStore(request.getfixturevalue("pg_url"), pool_size=2)
    try:
        yield opened
    finally:
        opened.close()


def _run(store: TraceStore, question: str = "What is the capital of France?", **kw: str) -> RunTrace:
    backends, _, _ = make(paris_judge)
    context = Context(n_drafts=5, seed=3, fallback=False)
    result = run(question, context, traces=store, provider=lambda ctx: backends, **kw)  # type: ignore[arg-type]
    assert result.run_id is not None
    return store.get(result.run_id)


def test_a_real_run_round_trips_exactly(store: TraceStore) -> None:
    trace = _run(store)
    assert [s.node for s in trace.steps] == ["retrieve", "partition", *["draft"] * 5, "verify", "reflect", "answer"]
    again = store.get(trace.run_id)
    assert again.model_dump_json() == trace.model_dump_json()
    assert len(again.drafts()) == 5 and all(d["scores"]["total"] is not None for d in again.drafts())
    assert all(d["model"] == "fake" for d in again.drafts())


def test_saving_again_replaces_and_listing_is_newest_first_and_by_thread(store: TraceStore) -> None:
    first = _run(store, thread_id="thread-a")
    second = _run(store, thread_id="thread-b")
    third = _run(store, thread_id="thread-a")
    listed = store.list()
    assert [s.run_id for s in listed[:3]] == [third.run_id, second.run_id, first.run_id]
    assert [s.run_id for s in store.list(thread_id="thread-a")] == [third.run_id, first.run_id]
    assert store.list(thread_id="nobody") == []
    assert len(store.list(limit=1)) == 1
    assert listed[0].answer == third.result.answer if third.result else False
    changed = first.model_copy(update={"status": "error", "error": "verify: boom", "result": None})
    store.save(changed)
    assert store.get(first.run_id).status == "error"
    assert len(store.list(limit=100)) == 3
    summary = next(s for s in store.list(limit=100) if s.run_id == first.run_id)
    assert summary.answer is None and summary.status == "error"


def test_bad_and_unknown_run_ids(store: TraceStore) -> None:
    for bad in ("", "../etc/passwd", "A" * 32, "0" * 31):
        with pytest.raises(InvalidRunIdError):
            store.get(bad)
    with pytest.raises(TraceNotFoundError):
        store.get(new_run_id())


def test_text_postgres_cannot_hold_survives_in_the_document(store: TraceStore) -> None:
    trace = _run(store)
    odd = trace.model_copy(
        update={"run_id": new_run_id(), "question": "nul\x00byte, emoji 🙂, quote ' and \\ backslash"}
    )
    store.save(odd)
    assert store.get(odd.run_id).question == odd.question
    listed = next(s for s in store.list(limit=100) if s.run_id == odd.run_id)
    assert listed.question.replace("\x00", "") == odd.question.replace("\x00", "")
    later = odd.model_copy(update={"run_id": new_run_id(), "started_at": odd.started_at + timedelta(seconds=5)})
    store.save(later)
    assert store.list(limit=1)[0].run_id == later.run_id


def test_migrations_are_idempotent_and_safe_when_replicas_open_at_once(pg_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresTraceStore(pg_url, pool_size=1), range(4)))
    try:
        assert {s.schema_version for s in stores} == {SCHEMA_VERSION}
        trace = _run(stores[0])
        assert stores[3].get(trace.run_id) == trace
    finally:
        for s in stores:
            s.close()
    reopened = PostgresTraceStore(pg_url, pool_size=1)
    try:
        assert reopened.schema_version == SCHEMA_VERSION and len(reopened.list()) == 1
    finally:
        reopened.close()


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    import psycopg

    PostgresTraceStore(pg_url, pool_size=1).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE specrag_trace_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(TraceError, match="newer than this release"):
        PostgresTraceStore(pg_url, pool_size=1)


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    from tests.reliability.harness import free_port

    url = f"postgresql://specrag:hunter2@127.0.0.1:{free_port()}/specrag"
    with pytest.raises(TraceError) as info:
        PostgresTraceStore(url, pool_size=1, connect_timeout_s=2)
    message = str(info.value)
    assert "cannot open the trace store" in message and "\n" not in message
    assert "hunter2" not in message and "specrag:***@127.0.0.1" in message
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_settings_choose_the_store(pg_url: str, tmp_path: Path) -> None:
    sqlite_settings = Settings(traces=TraceSettings(path=tmp_path / "t.sqlite"))
    assert trace_backend(sqlite_settings) == "sqlite"
    opened = open_trace_store(settings=sqlite_settings)
    assert isinstance(opened, SQLiteTraceStore) and opened.path == tmp_path / "t.sqlite"
    # auto: the checkpointer's Postgres server
    shared = Settings(checkpointer=CheckpointerSettings(provider="postgres", url=SecretStr(pg_url)))
    assert trace_backend(shared) == "postgres"
    pg = open_trace_store(settings=shared)
    try:
        assert isinstance(pg, PostgresTraceStore)
        trace = _run(pg)
    finally:
        pg.close()
    # an explicit sqlite choice wins over the checkpointer; postgres without any URL is a clear error
    explicit = Settings(
        checkpointer=CheckpointerSettings(provider="postgres", url=SecretStr(pg_url)),
        traces=TraceSettings(backend="sqlite", path=tmp_path / "x.sqlite"),
    )
    assert isinstance(open_trace_store(settings=explicit), SQLiteTraceStore)
    with pytest.raises(TraceError, match="SPECRAG_TRACES__URL"):
        open_trace_store(settings=Settings(traces=TraceSettings(backend="postgres")))
    own = Settings(traces=TraceSettings(backend="postgres", url=SecretStr(pg_url)))
    again = open_trace_store(settings=own)
    try:
        assert again.get(trace.run_id) == trace
    finally:
        again.close()
