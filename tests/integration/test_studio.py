"""LangGraph Studio's server (`langgraph dev`, in-memory) serves both graphs offline, through ``langgraph-sdk``.

One server per module on a free loopback port, with analytics and the version check off, the sample corpus in a
temporary store and the smallest packaged model as drafter and verifier. Checks: both graphs are listed, the
context schema has a description per field (Studio's form), a streamed run (``updates`` + ``debug``) passes
through every node, the thread history holds the superstep states, and a run interrupted before ``verify`` and
``reflect`` resumes to completion.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from app.trace.model import RunTrace
from app.trace.store import SQLiteTraceStore
from tests.conftest import REPO, unavailable
from tests.environment import subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
QUESTION = "Who deciphered the Egyptian hieroglyphs?"
BIN = Path(sys.executable).parent
NODES = {"retrieve", "partition", "draft", "verify", "reflect", "answer"}


def values(state: Any) -> dict[str, Any]:
    """The ``values`` of a thread state (a dict for these graphs)."""
    out = state["values"]
    assert isinstance(out, dict), out
    return out


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, packaged_model: Callable[[str], Path]) -> Path:
    packaged_model(MODEL)
    path = tmp_path_factory.mktemp("studio") / "store"
    env = subprocess_env()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", str(REPO / "samples" / "corpus"), "--store", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a `langgraph dev` server (killed with its process group at the end)."""
    langgraph = BIN / "langgraph"
    if not langgraph.exists():
        unavailable("langgraph-cli is not installed (run `make install`: it is in the dev group)")
    # `langgraph dev` keeps .langgraph_api/ in its cwd and resolves graph paths against it: it runs in a temporary
    # directory, on a copy of the repo's langgraph.json whose graph paths are made absolute.
    work = tmp_path_factory.mktemp("langgraph-dev")
    config = json.loads((REPO / "langgraph.json").read_text())
    config["graphs"] = {name: str(REPO / spec) for name, spec in config["graphs"].items()}
    config["dependencies"] = [str(REPO)]
    (work / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    env = subprocess_env(
        {
            "SPECRAG_STORE__PATH": str(store),
            "SPECRAG_DRAFTER__MODEL": MODEL,
            "SPECRAG_VERIFIER__MODEL": MODEL,
            "SPECRAG_TRACES__PATH": str(TRACES.setdefault("path", work / "traces.sqlite")),
        },
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
    )
    cmd = [
        str(langgraph),
        "dev",
        "--config",
        str(work / "langgraph.json"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
    ]
    log_path = work / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev not ready after 180 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


TRACES: dict[str, Path] = {}
"""Where the server writes specrag traces (set by the ``server`` fixture)."""


def studio_trace(thread_id: str) -> RunTrace:
    """The one specrag trace the server recorded for a thread (runs from Studio are traced by the node wrapper)."""
    store = SQLiteTraceStore(TRACES["path"])
    summaries = store.list(thread_id=thread_id)
    assert len(summaries) == 1, summaries
    return store.get(summaries[0].run_id)


@pytest.fixture(scope="module")
def client(server: str) -> SyncLangGraphClient:
    return get_sync_client(url=server, timeout=600)


def test_both_graphs_are_served_with_a_described_context_form(client: SyncLangGraphClient) -> None:
    assistants = client.assistants.search(limit=20)
    by_graph = {a["graph_id"]: a for a in assistants}
    assert {"speculative_rag", "standard_rag"} <= set(by_graph)
    schemas = client.assistants.get_schemas(by_graph["speculative_rag"]["assistant_id"])
    context = schemas.get("context_schema") or schemas.get("config_schema")
    assert context is not None
    properties: dict[str, Any] = context["properties"]
    assert {"top_n", "n_drafts", "per_draft", "max_rounds", "accept_confidence", "fallback"} <= set(properties)
    assert all(p.get("description") for p in properties.values()), [k for k, p in properties.items() if not p]
    input_schema = schemas["input_schema"]
    assert input_schema is not None and "question" in input_schema["properties"]


def test_streamed_run_passes_every_node_and_keeps_history(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    events: set[str] = set()
    nodes: list[str] = []
    errors: list[Any] = []
    for part in client.runs.stream(
        thread["thread_id"],
        "speculative_rag",
        input={"question": QUESTION},
        context={"max_rounds": 1, "fallback": False},
        stream_mode=["updates", "debug"],
    ):
        events.add(part.event.split("|")[0])
        if part.event == "error":
            errors.append(part.data)
        elif part.event.startswith("updates") and isinstance(part.data, dict):
            nodes.extend(part.data)
    assert not errors
    assert {"updates", "debug"} <= events
    assert set(nodes) >= NODES and nodes.count("draft") >= 1 and nodes[-1] == "answer"
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == [] and values(state)["answer"]
    assert len(values(state)["drafts"]) >= 1 and values(state)["chosen"] is not None
    # Studio's state shows the reflection: the confidence with its inputs, and the decision
    assert values(state)["decision"] == "accept" and 0.0 <= values(state)["confidence"]["value"] <= 1.0
    assert values(state)["confidence"]["inputs"]
    history = client.threads.get_history(thread["thread_id"], limit=20)
    assert len(history) > 1
    assert {tuple(h["next"]) for h in history} >= {("verify",), ("reflect",), ("answer",)}
    trace = studio_trace(thread["thread_id"])
    assert trace.status == "ok" and trace.question == QUESTION and {s.node for s in trace.steps} >= NODES
    assert trace.result is not None and trace.result.answer == values(state)["answer"]


def test_interrupt_before_verify_and_reflect_then_resume(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    tid = thread["thread_id"]

    def run_until_pause(payload: dict[str, Any] | None) -> list[str]:
        nodes: list[str] = []
        for part in client.runs.stream(
            tid,
            "speculative_rag",
            input=payload,
            context={"max_rounds": 1, "fallback": False},
            interrupt_before=["verify", "reflect"],
            stream_mode="updates",
        ):
            assert part.event != "error", part.data
            if part.event == "updates" and isinstance(part.data, dict):
                nodes.extend(k for k in part.data if not k.startswith("__"))
        return nodes

    first = run_until_pause({"question": QUESTION})
    assert "draft" in first and "verify" not in first
    state = client.threads.get_state(tid)
    assert state["next"] == ["verify"] and client.threads.get(tid)["status"] == "interrupted"
    assert all(d["scores"] is None for d in values(state)["drafts"])

    assert run_until_pause(None) == ["verify"]
    state = client.threads.get_state(tid)
    assert state["next"] == ["reflect"]
    assert all(d["scores"] is not None for d in values(state)["drafts"])

    assert run_until_pause(None) == ["reflect", "answer"]
    state = client.threads.get_state(tid)
    assert state["next"] == [] and values(state)["answer"] and client.threads.get(tid)["status"] == "idle"
    # the three runs (interrupted twice, resumed twice) are one specrag trace
    trace = studio_trace(tid)
    nodes = [s.node for s in trace.steps]
    assert trace.status == "ok" and nodes[0] == "retrieve" and nodes[-3:] == ["verify", "reflect", "answer"]
