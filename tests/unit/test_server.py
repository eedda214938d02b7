"""The chat endpoint with fake backends: OpenAI compatibility, SSE framing, threads, traces, errors, auth, binding."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver
from openai import OpenAI
from typer.testing import CliRunner

from app.llm.protocol import BackendUnavailableError, ChatPrompt, ScoreRequest, ScoreResult
from app.server.app import create_app
from app.server.chat import _pieces
from app.server.security import bind_refusal, is_loopback
from app.settings import ServerSettings, Settings
from app.trace.store import SQLiteTraceStore
from graphs.backends import StaticBackends
from tests.fakes import FakeLLM
from tests.unit.test_graph import make, paris_judge

QUESTION = "What is the capital of France?"
REWRITE = "Which river flows through Paris?"


class Setup:
    """A running app (TestClient) with fake backends; ``prompts`` collects the verifier's generate prompts."""

    def __init__(self, tmp_path: Path, *, api_key: str | None = None, verifier: FakeLLM | None = None) -> None:
        self.prompts: list[ChatPrompt] = []
        base = make(paris_judge)[0]

        def reply(p: ChatPrompt) -> str:
            self.prompts.append(p)
            return REWRITE

        self.backends = StaticBackends(
            drafter=base.drafter,
            verifier=verifier or FakeLLM(reply=reply, judge=paris_judge),
            embedder=base.embedder,
            store=base.store,
        )
        self.traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
        server = ServerSettings(api_key=api_key, max_body_bytes=20_000, stream_chunk_chars=8)
        self.app = create_app(
            Settings(server=server),
            provider=lambda ctx: self.backends,
            checkpointer=InMemorySaver(),
            trace_store=self.traces,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
def client(setup: Setup) -> Iterator[TestClient]:
    with TestClient(setup.app, raise_server_exceptions=False) as c:
        yield c


def openai_client(client: TestClient, api_key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0)  # type: ignore[arg-type]


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_lists_both_graphs(client: TestClient) -> None:
    models = openai_client(client).models.list()
    assert [m.id for m in models.data] == ["speculative-rag", "standard-rag"]


def test_completion_with_the_openai_client(client: TestClient, setup: Setup) -> None:
    oai = openai_client(client)
    completion = oai.chat.completions.create(
        model="speculative-rag", messages=[{"role": "user", "content": QUESTION}], extra_body={"context": {"seed": 3}}
    )
    content = completion.choices[0].message.content or ""
    ext: dict[str, Any] = completion.model_extra["specrag"]  # type: ignore[index]
    assert content.startswith(ext["answer"]) and "\n\nSources: [1] " in content
    assert completion.choices[0].finish_reason == "stop" and completion.model == "speculative-rag"
    assert len(ext["drafts"]) == 3 and all(len(d["passage_ids"]) == 2 for d in ext["drafts"])
    assert [s["title"] for s in ext["sources"]] == [
        s.split("] ", 1)[1] for s in content.split("Sources: ")[1].split("; ")
    ]
    trace = setup.traces.get(ext["run_id"])
    assert trace.thread_id == ext["thread_id"] and trace.context["seed"] == 3
    assert [s.node for s in trace.steps][:2] == ["condense", "retrieve"]
    assert completion.id == f"chatcmpl-{ext['run_id']}"


def test_standard_model_runs_the_baseline(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "standard-rag", "messages": [{"role": "user", "content": QUESTION}]}
    )
    assert r.status_code == 200
    ext = r.json()["specrag"]
    assert ext["graph"] == "standard_rag" and ext["drafts"] == [] and ext["answer"] == REWRITE
    assert r.headers["X-Thread-Id"] == ext["thread_id"]


def test_stream_sends_progress_before_content_then_the_extension_and_done(client: TestClient) -> None:
    body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and len(c["choices"]) == 1 for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    progress = [c for c in chunks if c.get("specrag", {}).get("event") in ("node_start", "node_end")]
    first_content = next(i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("content"))
    assert progress and all(chunks.index(p) < first_content for p in progress)
    assert all(p["choices"][0]["delta"] == {} and p["choices"][0]["finish_reason"] is None for p in progress)
    starts = [p["specrag"]["node"] for p in progress if p["specrag"]["event"] == "node_start"]
    assert starts[:3] == ["condense", "retrieve", "partition"] and starts.count("draft") == 3
    assert starts[-3:] == ["verify", "reflect", "answer"]
    assert all(isinstance(p["specrag"]["round"], int) for p in progress)
    content = [c["choices"][0]["delta"]["content"] for c in chunks[first_content:-1]]
    assert len(content) > 1
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    ext = final["specrag"]
    assert "".join(content).startswith(ext["answer"]) and "Sources:" in "".join(content)
    assert len(ext["drafts"]) == 3 and ext["run_id"] and ext["sources"]


def test_stream_with_the_openai_client(client: TestClient) -> None:
    stream = openai_client(client).chat.completions.create(
        model="speculative-rag", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert text.startswith(final.model_extra["specrag"]["answer"])  # type: ignore[index]


def test_follow_up_in_the_same_thread_sees_the_history(client: TestClient, setup: Setup) -> None:
    oai = openai_client(client)
    first = oai.chat.completions.create(model="speculative-rag", messages=[{"role": "user", "content": QUESTION}])
    thread = first.model_extra["specrag"]["thread_id"]  # type: ignore[index]
    answer = first.model_extra["specrag"]["answer"]  # type: ignore[index]
    assert setup.prompts == []  # first turn: no rewrite
    second = oai.chat.completions.create(
        model="speculative-rag",
        messages=[{"role": "user", "content": "and which river?"}],
        extra_body={"thread_id": thread},
    )
    ext: dict[str, Any] = second.model_extra["specrag"]  # type: ignore[index]
    assert ext["thread_id"] == thread and ext["question"] == REWRITE and ext["original_question"] == "and which river?"
    shown = setup.prompts[0].messages[-1].content
    assert f"User: {QUESTION}\nAssistant: {answer}" in shown and "Follow-up message: and which river?" in shown
    # the run's trace: condense first, with the original and the rewritten question
    trace = client.get(f"/v1/traces/{ext['run_id']}").json()
    assert trace["thread_id"] == thread and trace["question"] == "and which river?"
    assert trace["steps"][0]["node"] == "condense"
    assert trace["steps"][0]["writes"] == {
        "original_question": "and which river?",
        "question": REWRITE,
        "rewritten": True,
    }
    nodes = [s["node"] for s in trace["steps"]]
    assert nodes == ["condense", "retrieve", "partition", *["draft"] * 3, "verify", "reflect", "answer"]
    listed = client.get(f"/v1/threads/{thread}/traces").json()
    assert [t["run_id"] for t in listed["data"]] == [ext["run_id"], first.model_extra["specrag"]["run_id"]]  # type: ignore[index]
    # a client that resends the whole conversation (with the sources line) adds only its new user turn
    third = client.post(
        "/v1/chat/completions",
        headers={"X-Thread-Id": thread},
        json={
            "model": "standard-rag",
            "messages": [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "and which river?"},
                {"role": "assistant", "content": second.choices[0].message.content},
                {"role": "user", "content": [{"type": "text", "text": "how long is it?"}]},
            ],
        },
    )
    assert third.status_code == 200, third.text
    shown = setup.prompts[-2].messages[-1].content  # standard RAG's answer prompt is the last one
    assert shown.count("User: ") == 2 and "Follow-up message: how long is it?" in shown


def test_a_new_thread_takes_the_client_history(client: TestClient, setup: Setup) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about Paris."},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "which river?"},
    ]
    r = client.post("/v1/chat/completions", json={"model": "speculative-rag", "messages": messages})
    assert r.status_code == 200 and r.json()["specrag"]["question"] == REWRITE
    assert "Be brief" not in setup.prompts[0].messages[-1].content


BAD: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("missing messages", {"model": "speculative-rag"}, 422, "messages"),
    ("empty messages", {"model": "speculative-rag", "messages": []}, 422, "messages"),
    ("unknown model", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ("empty content", {"model": "speculative-rag", "messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
    ("null content", {"model": "speculative-rag", "messages": [{"role": "user", "content": None}]}, 400, "messages"),
    (
        "last is assistant",
        {"model": "speculative-rag", "messages": [{"role": "assistant", "content": "x"}]},
        400,
        "messages",
    ),
    ("bad role", {"model": "speculative-rag", "messages": [{"role": "robot", "content": "x"}]}, 422, "messages.0.role"),
    ("messages not a list", {"model": "speculative-rag", "messages": "hi"}, 422, "messages"),
    (
        "bad context",
        {"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "context": {"top_n": 0}},
        400,
        "context.top_n",
    ),
    (
        "unknown knob",
        {"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "context": {"nope": 1}},
        400,
        "context.nope",
    ),
    (
        "store via API",
        {"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "context": {"store": "/etc"}},
        400,
        "context.store",
    ),
    (
        "bad thread id",
        {"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "thread_id": "../x"},
        400,
        "thread_id",
    ),
]


def assert_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


@pytest.mark.parametrize(("body", "status", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors(
    client: TestClient, body: dict[str, Any], status: int, param: str | None
) -> None:
    error = assert_error(client.post("/v1/chat/completions", json=body), status)
    assert error["param"] == param


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert_error(
        client.post("/v1/chat/completions", content=b'{"model": "speculative-rag", "messages": [', headers=headers), 400
    )
    assert_error(client.post("/v1/chat/completions", content=b"[1, 2]", headers=headers), 422)
    big = json.dumps({"model": "speculative-rag", "messages": [{"role": "user", "content": "x" * 30_000}]})
    error = assert_error(client.post("/v1/chat/completions", content=big, headers=headers), 413)
    assert "20000 bytes" in error["message"]

    def chunked() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1000

    assert_error(client.post("/v1/chat/completions", content=chunked(), headers=headers), 413)


def test_unknown_routes_and_methods_are_json_errors(client: TestClient) -> None:
    assert_error(client.get("/v1/nope"), 404)
    assert_error(client.get("/v1/chat/completions"), 405)


def test_trace_endpoints_validate_ids(client: TestClient) -> None:
    assert client.get("/v1/traces/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)
    assert_error(client.get("/v1/traces/" + "A" * 32), 400)
    assert_error(client.get("/v1/traces/" + "a" * 32), 404)
    assert client.get("/v1/threads/never-used/traces").json() == {
        "object": "list",
        "thread_id": "never-used",
        "data": [],
    }
    assert_error(client.get("/v1/threads/" + "x" * 200 + "/traces"), 400)


class _DownVerifier(FakeLLM):
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise BackendUnavailableError("cannot reach the verifier at http://gpu:8000/v1 (connection refused)")


def test_a_backend_failure_is_a_503_and_its_trace_is_kept(tmp_path: Path) -> None:
    setup = Setup(tmp_path, verifier=_DownVerifier(reply=lambda p: "x"))
    with TestClient(setup.app, raise_server_exceptions=False) as client:
        body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
        error = assert_error(client.post("/v1/chat/completions", json=body), 503)
        assert "connection refused" in error["message"] and "run id: " in error["message"]
        [summary] = setup.traces.list()
        assert summary.status == "error"
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            events = sse_events(r.read().decode())
        assert events[-1]["error"]["code"] == "backend_unavailable"
        assert any(e.get("specrag", {}).get("event") == "node_end" for e in events[:-1])


def test_bearer_token_auth(tmp_path: Path) -> None:
    setup = Setup(tmp_path, api_key="s3cret-token")
    with TestClient(setup.app, raise_server_exceptions=False) as client:
        body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
        error = assert_error(client.post("/v1/chat/completions", json=body), 401)
        assert "s3cret" not in json.dumps(error)
        assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(client.get("/v1/traces/" + "a" * 32), 401)
        assert openai_client(client, api_key="s3cret-token").models.list().data
        ok = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200


def test_bind_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    assert bind_refusal("127.0.0.1", api_key_set=False, allow_public=False) is None
    assert bind_refusal("0.0.0.0", api_key_set=True, allow_public=False) is None
    assert bind_refusal("0.0.0.0", api_key_set=False, allow_public=True) is None
    assert "SPECRAG_SERVER__API_KEY" in (bind_refusal("0.0.0.0", api_key_set=False, allow_public=False) or "")


def test_serve_refuses_a_public_address_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import app
    from app.settings import get_settings

    monkeypatch.delenv("SPECRAG_SERVER__API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refusing to bind to 0.0.0.0")


def test_pieces_rejoin_to_the_text() -> None:
    for text in ["", "one", "a b c d e f g h", "The answer is Paris.\n\nSources: [1] Paris"]:
        pieces = _pieces(text, 5)
        assert "".join(pieces) == text


def test_a_missing_store_is_a_503_and_a_too_long_question_a_400(tmp_path: Path) -> None:
    from app.store.protocol import StoreNotFoundError

    class NoStore:
        drafter = verifier = FakeLLM(reply=lambda p: "x")
        embedder = make(paris_judge)[0].embedder
        drafter_lead = ""

        @property
        def store(self) -> Any:
            raise StoreNotFoundError("no store at /data/kb: run `specrag ingest` first")

    setup = Setup(tmp_path)
    setup.app = create_app(
        Settings(), provider=lambda ctx: NoStore(), checkpointer=InMemorySaver(), trace_store=setup.traces
    )
    body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
    with TestClient(setup.app, raise_server_exceptions=False) as client:
        error = assert_error(client.post("/v1/chat/completions", json=body), 503)
        assert "no store at /data/kb" in error["message"] and error["code"] == "backend_unavailable"
        assert_error(client.post("/v1/chat/completions", json={**body, "stream": True}), 503)
    small = Setup(tmp_path / "small", verifier=FakeLLM(reply=lambda p: "x", context_window=520))
    with TestClient(small.app, raise_server_exceptions=False) as client:
        long_body = {"model": "speculative-rag", "messages": [{"role": "user", "content": "word " * 50}]}
        assert (
            assert_error(client.post("/v1/chat/completions", json=long_body), 400)["code"] == "context_length_exceeded"
        )


def test_no_free_run_slot_is_a_503(tmp_path: Path) -> None:
    import asyncio

    from app.server.errors import APIError
    from app.server.runner import ChatRunner

    async def scenario() -> None:
        runner = ChatRunner(
            {}, SQLiteTraceStore(tmp_path / "t.sqlite"), lambda ctx: make(paris_judge)[0], queue_timeout_s=0.05
        )
        async with runner.lease("a"):
            with pytest.raises(APIError) as info:
                async with runner.lease("b"):
                    pass
            assert info.value.status == 503 and info.value.code == "server_busy"
        async with runner.lease("b"):  # the slot is free again
            pass

    asyncio.run(scenario())
