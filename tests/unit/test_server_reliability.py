"""The chat endpoint under load, faults and hostile conditions, with fake backends (the real-server versions are in
tests/integration/test_server_reliability.py and tests/reliability/load.py).

Backpressure: a full queue is a 429 with Retry-After at once. Faults: a backend that raises, hangs past the run
timeout, or vanishes mid-run gives the client a clear error in time, the trace names the failing node, and the
next request succeeds once the backend is back; a hung call keeps its run slot until it returns. Exposure: no
pickle in the code base, the API key never in logs or bodies, CORS off by default, auth on every route.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver

from app.llm.protocol import BackendUnavailableError, ScoreRequest, ScoreResult
from app.server.app import create_app
from app.server.runner import RunAbandonedError, RunWork
from app.settings import ServerSettings, Settings
from app.trace.store import SQLiteTraceStore
from graphs.backends import StaticBackends
from tests.conftest import REPO
from tests.fakes import FakeLLM
from tests.unit.test_graph import make, paris_judge
from tests.unit.test_server import QUESTION, assert_error, openai_client, sse_events

BODY: dict[str, Any] = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
SAFETY_S = 30.0  # no fake blocks longer than this, whatever happens


class FaultyVerifier(FakeLLM):
    """The fake verifier, whose ``score`` can be made to hang (until released), raise, or refuse connections."""

    def __init__(self) -> None:
        super().__init__(reply=lambda p: "capital city France", judge=paris_judge)
        self.mode = "ok"
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()
        self.score_calls = 0

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.score_calls += 1
        self.entered.set()
        try:
            if self.mode == "hang":
                assert self.release.wait(SAFETY_S), "the test never released the hung backend"
            elif self.mode == "raise":
                raise RuntimeError("llama_decode returned -3 (device lost)")
            elif self.mode == "down":
                raise BackendUnavailableError("cannot connect to the verifier at http://gpu:8000/v1 (refused)")
            return super().score(requests)
        finally:
            self.returned.set()


class Server:
    """The app on fake backends with the given server settings, a temporary trace store and an open TestClient."""

    def __init__(self, tmp_path: Path, **server: Any) -> None:
        base = make(paris_judge)[0]
        self.verifier = FaultyVerifier()
        self.drafter_calls = 0

        def draft_reply(prompt: Any) -> str:
            self.drafter_calls += 1
            if self.on_draft is not None:
                self.on_draft()
            return "Rationale: Paris is the capital of France. Answer: Paris"

        self.on_draft: Callable[[], None] | None = None
        backends = StaticBackends(
            drafter=FakeLLM(reply=draft_reply), verifier=self.verifier, embedder=base.embedder, store=base.store
        )
        self.traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
        self.app = create_app(
            Settings(server=ServerSettings(**server)),
            provider=lambda ctx: backends,
            checkpointer=InMemorySaver(),
            trace_store=self.traces,
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def load(self) -> dict[str, int]:
        return dict(self.app.state.runner.load())

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def build(**server: Any) -> Server:
        s = Server(tmp_path / str(len(servers)), **server)
        s.client.__enter__()
        servers.append(s)
        return s

    yield build
    for s in servers:
        s.verifier.release.set()
        s.client.__exit__(None, None, None)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# ---------------------------------------------------------------- backpressure


@pytest.mark.timeout(120)  # a refusal that waited for a slot would wait for the test's release: it fails here
def test_a_full_queue_is_a_429_with_retry_after_at_once(make_server: Callable[..., Server]) -> None:
    server = make_server(max_concurrent_runs=1, max_queued_runs=2)
    server.verifier.mode = "hang"
    post = lambda: server.client.post("/v1/chat/completions", json=BODY)  # noqa: E731
    with ThreadPoolExecutor(max_workers=3) as pool:
        running = pool.submit(timed, post)
        assert server.verifier.entered.wait(10)
        queued: list[Future[Any]] = [pool.submit(timed, post), pool.submit(timed, post)]
        server.wait_for(lambda: server.load()["queued"] == 2, "two queued requests")
        assert server.load() == {"running": 1, "queued": 2, "stuck": 0}
        refused = post()
        error = assert_error(refused, 429)
        # at once: refused while the running request still holds the only slot (its backend call has not
        # returned, nothing was released) and both queued requests still wait: the refusal waited for nothing
        assert not server.verifier.returned.is_set()
        assert server.load() == {"running": 1, "queued": 2, "stuck": 0}
        assert error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        assert "SPECRAG_SERVER__MAX_QUEUED_RUNS" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        with pytest.raises(openai.RateLimitError):  # what the official client makes of it
            openai_client(server.client).chat.completions.create(
                model="speculative-rag", messages=[{"role": "user", "content": QUESTION}]
            )
        server.verifier.mode = "ok"
        server.verifier.release.set()
        done = [f.result(timeout=SAFETY_S) for f in [running, *queued]]
    assert [response.status_code for response, _ in done] == [200, 200, 200]
    assert server.load() == {"running": 0, "queued": 0, "stuck": 0}
    last, last_seconds = timed(post)
    assert last.status_code == 200
    # Retry-After now follows the runs' measured durations (the median of those that ended), no longer the 5 s
    # default: each run lasted at most as long as its request took as seen by the client
    client_seconds = [seconds for _, seconds in done] + [last_seconds]
    assert 1 <= server.app.state.runner.retry_after_s() <= max(1, math.ceil(statistics.median(client_seconds)))


def test_a_request_waiting_for_its_own_thread_counts_as_queued(make_server: Callable[..., Server]) -> None:
    server = make_server(max_concurrent_runs=2, max_queued_runs=0)
    first = server.client.post("/v1/chat/completions", json=BODY)
    thread = first.json()["specrag"]["thread_id"]
    server.verifier.mode = "hang"
    server.verifier.entered.clear()
    follow = {**BODY, "thread_id": thread, "messages": [{"role": "user", "content": "and its river?"}]}
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(lambda: server.client.post("/v1/chat/completions", json=follow))
        assert server.verifier.entered.wait(10)
        # a free slot exists, but the thread is busy and no one may queue: refused at once
        assert server.load() == {"running": 1, "queued": 0, "stuck": 0}
        assert_error(server.client.post("/v1/chat/completions", json=follow), 429)
        server.verifier.mode = "ok"
        server.verifier.release.set()
        assert running.result(timeout=SAFETY_S).status_code == 200


# ---------------------------------------------------------------- faults


def test_a_hung_backend_is_a_504_within_the_run_timeout_and_keeps_its_slot_until_it_returns(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(run_timeout_s=1.0, max_queued_runs=0)
    server.verifier.mode = "hang"
    response, seconds = timed(lambda: server.client.post("/v1/chat/completions", json=BODY))
    error = assert_error(response, 504)
    # within the run timeout: not before it, and while the backend call still hangs (it would hang SAFETY_S)
    assert seconds >= 1.0 and not server.verifier.returned.is_set(), f"the 504 took {seconds:.2f} s"
    assert error["code"] == "run_timeout" and error["type"] == "timeout_error"
    assert "did not finish within 1 s" in error["message"] and "SPECRAG_SERVER__RUN_TIMEOUT_S" in error["message"]
    [summary] = server.traces.list()
    trace = server.traces.get(summary.run_id)
    assert trace.status == "error" and trace.failed_node == "verify"
    assert trace.error == "verify: RunTimeoutError: the run did not finish within 1 s"
    verify = [s for s in trace.steps if s.node == "verify"]
    assert len(verify) == 1 and verify[0].error == "did not finish"
    assert [s.node for s in trace.steps if s.error is None][:3] == ["condense", "retrieve", "partition"]
    # the hung call still holds the run slot: the server says so at once instead of starting another run
    assert server.load() == {"running": 0, "queued": 0, "stuck": 1}
    assert assert_error(server.client.post("/v1/chat/completions", json=BODY), 429)["code"] == "queue_full"
    assert server.client.get("/v1/models").status_code == 200  # the server itself is fine
    # the backend comes back: the hung call returns, the slot is free, the next request succeeds
    server.verifier.mode = "ok"
    server.verifier.release.set()
    server.wait_for(lambda: server.load()["stuck"] == 0, "the slot to come back")
    ok = server.client.post("/v1/chat/completions", json={**BODY, "thread_id": trace.thread_id})
    assert ok.status_code == 200, ok.text  # on the same thread: the cut-off run left it usable
    # the abandoned run never finished behind the client's back: its trace is unchanged, nothing was added
    assert server.traces.get(summary.run_id) == trace
    assert len(server.traces.list()) == 2


def test_a_hung_backend_ends_a_stream_with_an_error_event_in_time(make_server: Callable[..., Server]) -> None:
    server = make_server(run_timeout_s=1.0)
    server.verifier.mode = "hang"
    with server.client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
        assert r.status_code == 200
        events = sse_events(r.read().decode())
    # in time: the stream ended on the run timeout while the backend call still hangs (it would hang SAFETY_S)
    assert not server.verifier.returned.is_set()
    assert events[-1]["error"]["code"] == "run_timeout"
    ends = [e["specrag"] for e in events[:-1] if e.get("specrag", {}).get("event") == "node_end"]
    assert [e["node"] for e in ends][-1] == "draft" and all("error" not in e for e in ends)
    server.verifier.mode = "ok"
    server.verifier.release.set()
    server.wait_for(lambda: server.load()["stuck"] == 0, "the slot to come back")
    assert server.client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_a_backend_that_raises_is_a_clear_error_and_the_next_request_succeeds(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    server.verifier.mode = "raise"
    with caplog.at_level(logging.ERROR):
        response = server.client.post("/v1/chat/completions", json=BODY)
    error = assert_error(response, 500)
    # at once: the first failing call ends the run (no retries, no waiting for a timeout: not a 504)
    assert error["code"] == "run_failed" and server.verifier.score_calls == 1
    assert "RuntimeError: llama_decode returned -3 (device lost)" in error["message"]
    assert "raised by verifier.score" in error["message"] and "run id: " in error["message"]
    [summary] = server.traces.list()
    trace = server.traces.get(summary.run_id)
    assert trace.failed_node == "verify" and "device lost" in (trace.error or "")
    assert any("run failed" in r.getMessage() for r in caplog.records)  # logged for the operator
    server.verifier.mode = "ok"
    assert server.client.post("/v1/chat/completions", json=BODY).status_code == 200
    assert server.load() == {"running": 0, "queued": 0, "stuck": 0}


def test_a_backend_that_vanishes_mid_run_is_a_503_and_the_next_request_succeeds(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()

    def vanish() -> None:  # the verifier goes away while the drafts are being written
        server.verifier.mode = "down"

    server.on_draft = vanish
    response = server.client.post("/v1/chat/completions", json=BODY)
    error = assert_error(response, 503)
    # at once: the first refused call ends the run (no retries, no waiting for a timeout: not a 504)
    assert error["code"] == "backend_unavailable" and server.verifier.score_calls == 1
    assert "cannot connect to the verifier" in error["message"] and "raised by verifier.score" in error["message"]
    [summary] = server.traces.list()
    assert server.traces.get(summary.run_id).failed_node == "verify"
    server.on_draft = None
    server.verifier.mode = "ok"  # back
    assert server.client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_run_work_refuses_calls_once_closed_and_wakes_when_the_last_returns() -> None:
    async def scenario() -> None:
        work = RunWork()
        assert work.close("ended") is None  # nothing in flight: the slot may go back at once
        with pytest.raises(RunAbandonedError):
            work.enter("drafter.generate")
        busy = RunWork()
        busy.enter("drafter.generate")
        busy.enter("drafter.generate")
        idle = busy.close("timed out")
        assert idle is not None and busy.in_flight() == ["drafter.generate", "drafter.generate"]
        with pytest.raises(RunAbandonedError, match=r"verifier\.score not started"):
            busy.enter("verifier.score")
        threading.Thread(target=busy.exit, args=("drafter.generate",)).start()
        await asyncio.sleep(0.05)
        assert not idle.is_set()
        threading.Thread(target=busy.exit, args=("drafter.generate",)).start()
        await asyncio.wait_for(idle.wait(), 5)
        assert busy.in_flight() == []

    asyncio.run(scenario())


# ---------------------------------------------------------------- exposure

FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def pickle_uses(path: Path) -> list[str]:
    """Where a Python file imports a pickle-based module, calls ``torch.load`` without ``weights_only=True`` (its
    restricted unpickler: tensors and plain containers only), or turns pickling on."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        line = getattr(node, "lineno", 0)
        found += [f"{path}:{line}: import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            func = node.func
            restricted = any(
                kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            )
            torch_load = isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch"
            if torch_load and not restricted:
                found.append(f"{path}:{node.lineno}: torch.load")
            for kw in node.keywords:
                on = isinstance(kw.value, ast.Constant) and kw.value.value is True
                if kw.arg in ("allow_pickle", "pickle_fallback") and on:
                    found.append(f"{path}:{node.lineno}: {kw.arg}=True")
    return found


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import pickle\nfrom dill import loads\nimport torch\nimport numpy as np\n"
        "torch.load('m.pt')\nnp.load('x.npy', allow_pickle=True)\nS(pickle_fallback=True)\n"
        "torch.load('m.pt', weights_only=False)\ntorch.load('safe.pt', weights_only=True)\n"
    )
    assert len(pickle_uses(planted)) == 6  # the scanner sees every form it looks for
    files = [p for d in ("app", "graphs", "bench", "tests", "deploy") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50
    assert [u for p in files for u in pickle_uses(p)] == []
    # the checkpointer's serializer never falls back to pickle
    from graphs.state import state_serializer

    assert state_serializer().pickle_fallback is False


def test_the_api_key_never_reaches_logs_or_responses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-specrag-9f2c41d7e0b84a6c"
    server = Server(tmp_path, api_key=key)
    server.verifier.mode = "raise"  # a failing run logs a traceback
    auth = {"Authorization": f"Bearer {key}"}
    with caplog.at_level(logging.DEBUG), server.client:
        responses = [
            server.client.post("/v1/chat/completions", json=BODY),
            server.client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}x"}),
            server.client.post("/v1/chat/completions", json=BODY, headers=auth),
            server.client.post("/v1/chat/completions", json={"model": "x"}, headers=auth),
            server.client.get("/v1/traces/" + "a" * 32, headers=auth),
        ]
    assert [r.status_code for r in responses] == [401, 401, 500, 422, 404]
    assert all("error" in r.json() for r in responses)
    bodies = [r.text + str(r.headers) for r in responses]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "run failed" in logged and "Traceback" in caplog.text  # the failure was logged, in full
    assert key not in logged and all(key not in b for b in bodies)
    settings = Settings(server=ServerSettings(api_key=key))
    assert key not in repr(settings) and key not in settings.model_dump_json()
    saved = [server.traces.get(s.run_id).model_dump_json() for s in server.traces.list()]
    assert saved and all(key not in t for t in saved)


ORIGIN = "https://chat.example"


def cors_headers(client: TestClient, origin: str) -> dict[str, str]:
    preflight = client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    simple = client.get("/v1/models", headers={"Origin": origin})
    return {
        "preflight": preflight.headers.get("access-control-allow-origin", ""),
        "simple": simple.headers.get("access-control-allow-origin", ""),
    }


def test_cors_is_off_by_default_and_on_only_for_listed_origins(make_server: Callable[..., Server]) -> None:
    assert ServerSettings().cors_origins == []
    assert cors_headers(make_server().client, ORIGIN) == {"preflight": "", "simple": ""}
    listed = make_server(cors_origins=[ORIGIN]).client
    assert cors_headers(listed, ORIGIN) == {"preflight": ORIGIN, "simple": ORIGIN}
    assert cors_headers(listed, "https://evil.example") == {"preflight": "", "simple": ""}


def test_every_route_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    assert ServerSettings().host == "127.0.0.1"  # loopback unless told otherwise
    server = Server(tmp_path, api_key="t0ken")
    operations = [(m.upper(), path) for path, ops in server.app.openapi()["paths"].items() for m in ops]
    operations.append(("GET", "/v1/openapi.json"))
    assert {("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/ui/runs/{run_id}")} <= set(operations)
    with server.client:
        for method, path in operations:
            filled = path.replace("{run_id}", "a" * 32).replace("{thread_id}", "t1")
            r = server.client.request(method, filled, json=BODY if method == "POST" else None)
            assert r.status_code == 401, f"{method} {path} answered {r.status_code} without the token"
        ok = server.client.get("/v1/openapi.json", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200 and "/v1/chat/completions" in ok.json()["paths"]
