"""Two ``specrag serve`` replicas on one Postgres (checkpoints and traces; the trace store follows the
checkpointer by default): a run served by one is read from the other over HTTP, a chat thread continues on the
other replica, and the trace survives kill -9 of the replica that ran it. SmolLM2-135M drafts and verifies (the
graph logic is what is under test, not answer quality); one LanceDB store with the sample corpus, read by both.

Postgres: ``SPECRAG_TEST_POSTGRES_URL`` (set by ``.ci/run``), else a temporary cluster from Debian's binaries, else
skipped with the reason (a failure under CI=true).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.postgres import fresh_schema, postgres_url  # noqa: F401 (a fixture)
from tests.reliability.harness import SpecragServer, ingest_samples, server_env

pytestmark = [pytest.mark.integration]

CONTEXT = {"max_rounds": 1, "n_drafts": 2, "draft_max_tokens": 32}


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SpecragServer, SpecragServer, str]]:
    root = tmp_path_factory.mktemp("replicas")
    with fresh_schema(postgres_url) as url:
        env = server_env(
            root,
            SPECRAG_CHECKPOINTER__PROVIDER="postgres",
            SPECRAG_CHECKPOINTER__URL=url,
            SPECRAG_CHECKPOINTER__POOL_SIZE="2",
        )
        env.pop("SPECRAG_TRACES__PATH")  # no SQLite file: a trace can only come from Postgres
        ingest_samples(env)
        a = SpecragServer(env, root / "a.log")
        try:
            b = SpecragServer(env, root / "b.log")
        except BaseException:
            a.stop()
            raise
        try:
            yield a, b, url
        finally:
            a.stop()
            b.stop()


def _chat(server: SpecragServer, question: str, thread: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "speculative-rag",
        "messages": [{"role": "user", "content": question}],
        "context": CONTEXT,
    }
    if thread:
        body["thread_id"] = thread
    r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    payload: dict[str, Any] = r.json()
    return payload


def _trace(server: SpecragServer, run_id: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/traces/{run_id}", timeout=30)


def test_a_run_served_by_one_replica_is_read_from_the_other_and_survives_kill9(
    replicas: tuple[SpecragServer, SpecragServer, str], tmp_path: Path
) -> None:
    a, b, url = replicas
    done = _chat(a, "Where was the Rosetta Stone found?", thread="replica-thread")
    run_id = done["specrag"]["run_id"]
    from_a = _trace(a, run_id)
    from_b = _trace(b, run_id)
    assert from_a.status_code == 200 and from_b.status_code == 200
    assert from_b.json() == from_a.json()
    trace = from_b.json()
    assert trace["run_id"] == run_id and trace["status"] == "ok"
    assert [s["node"] for s in trace["steps"]][:3] == ["condense", "retrieve", "partition"]
    assert done["choices"][0]["message"]["content"].startswith(trace["result"]["answer"].strip())
    assert done["specrag"]["answer"] == trace["result"]["answer"]
    # the thread continues on the other replica (the checkpointer is shared too) and lists both runs there
    follow = _chat(b, "And who deciphered it?", thread="replica-thread")
    listed = httpx.get(f"{a.base_url}/threads/replica-thread/traces", timeout=30)
    assert listed.status_code == 200
    assert {t["run_id"] for t in listed.json()["data"]} >= {run_id, follow["specrag"]["run_id"]}
    # kill -9 the replica that ran the first run: its trace is still served by the other, unchanged
    a.kill9()
    after = _trace(b, run_id)
    assert after.status_code == 200 and after.json() == trace
    # and straight from the database, as an operator would look
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, graph FROM specrag_traces WHERE run_id = %s", (run_id,)).fetchone()
    assert row == ("ok", "speculative_rag")
