"""``specrag serve`` as a subprocess, driven by the real ``openai`` client, on real models and a real store.

SmolLM2-135M plays drafter and verifier by default to keep the model work small (set
``SPECRAG_TEST_SERVER_MODEL=qwen2.5-coder-0.5b-instruct`` or another packaged name for a bigger one); every run uses
``max_rounds=1`` through the ``context`` extension. Checks: one non-streaming and one streaming completion, a
follow-up in the same thread, the follow-up's trace (nodes in order, five drafts with three finite scores each),
and that traces outlive a server restart.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import REPO
from tests.environment import subprocess_env

pytestmark = pytest.mark.integration

SPECRAG = [sys.executable, "-m", "app.cli"]
CONTEXT = {"max_rounds": 1, "n_drafts": 3, "draft_max_tokens": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, packaged_model: Callable[[str], Path]) -> dict[str, str]:
    model = os.environ.get("SPECRAG_TEST_SERVER_MODEL", "smollm2-135m-instruct")
    packaged_model(model)  # skips (or fails under CI) when the model is not installed
    root = tmp_path_factory.mktemp("server")
    env = subprocess_env(
        {
            "SPECRAG_DRAFTER__MODEL": model,
            "SPECRAG_VERIFIER__MODEL": model,
            "SPECRAG_STORE__PATH": str(root / "store"),
            "SPECRAG_CHECKPOINTER__PROVIDER": "sqlite",
            "SPECRAG_CHECKPOINTER__PATH": str(root / "checkpoints.sqlite"),
            "SPECRAG_TRACES__PATH": str(root / "traces.sqlite"),
        }
    )
    done = subprocess.run(
        [*SPECRAG, "ingest", str(REPO / "samples" / "corpus"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return env


class Server:
    """``specrag serve`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [*SPECRAG, "serve", "--port", str(self.port)], cwd=REPO, env=env, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"server did not start: {log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(env, tmp_path_factory.mktemp("log") / "server.log")
    yield running
    running.stop()


def ext(obj: Any) -> dict[str, Any]:
    """The ``specrag`` extension of a completion or chunk."""
    extra = obj.model_extra or {}
    return dict(extra["specrag"])


def test_bad_requests_are_openai_errors_not_500(server: Server) -> None:
    client = OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="speculative-rag", messages=[{"role": "user", "content": " "}])
    url = f"{server.base_url}/chat/completions"
    headers = {"content-type": "application/json"}
    cases = [
        (b'{"model": "speculative-rag", "messages": [', 400),
        (b'{"model": "speculative-rag"}', 422),
        (b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "' + b"x" * 2_000_000 + b'"}]}', 413),
    ]
    for body, status in cases:
        r = httpx.post(url, content=body, headers=headers, timeout=60)
        assert r.status_code == status, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_chat_threads_and_traces_over_the_openai_client(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    client = OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0, timeout=900)
    assert {m.id for m in client.models.list().data} == {"speculative-rag", "standard-rag"}

    # one non-streaming completion
    first = client.chat.completions.create(
        model="speculative-rag",
        messages=[{"role": "user", "content": "Who deciphered the Egyptian hieroglyphs?"}],
        extra_body={"context": CONTEXT},
    )
    content = first.choices[0].message.content or ""
    meta = ext(first)
    assert content and meta["run_id"] and meta["thread_id"] and len(meta["drafts"]) == 3
    assert meta["sources"] and "Sources: [1] " in content
    # the extension carries the reflection: the confidence (0-1) with its inputs, and the decision
    assert meta["decision"] in ("accept", "fallback") and 0.0 <= meta["confidence"]["value"] <= 1.0
    assert set(meta["confidence"]["inputs"]) >= {"agreement", "p_yes", "margin"}

    # one streaming completion, on a thread of its own
    chunks = list(
        client.chat.completions.create(
            model="speculative-rag",
            messages=[{"role": "user", "content": "Where was the Rosetta Stone found?"}],
            extra_body={"context": CONTEXT},
            stream=True,
        )
    )
    progress = [i for i, c in enumerate(chunks) if (c.model_extra or {}).get("specrag", {}).get("event")]
    texts = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    assert progress and texts and max(progress) < min(texts)
    assert chunks[-1].choices[0].finish_reason == "stop" and len(ext(chunks[-1])["drafts"]) == 3

    # a follow-up in the first thread
    follow = client.chat.completions.create(
        model="speculative-rag",
        messages=[{"role": "user", "content": "And when was he born?"}],
        extra_body={"thread_id": meta["thread_id"], "context": CONTEXT},
    )
    fmeta = ext(follow)
    assert fmeta["thread_id"] == meta["thread_id"] and fmeta["original_question"] == "And when was he born?"

    # the follow-up's trace
    trace = httpx.get(f"{server.base_url}/traces/{fmeta['run_id']}", timeout=30).json()
    nodes = [s["node"] for s in trace["steps"]]
    last = "fallback" if fmeta["decision"] == "fallback" else "answer"
    assert nodes == ["condense", "retrieve", "partition", *["draft"] * 3, "verify", "reflect", last]
    condense = trace["steps"][0]
    assert (
        condense["reads"]["history_turns"] == 2 and condense["writes"]["original_question"] == "And when was he born?"
    )
    assert condense["writes"]["question"].strip()
    drafts = trace["result"]["drafts"]
    assert len(drafts) == 3
    for d in drafts:
        scores = [d["scores"][k] for k in ("draft", "self_consistency", "self_reflection")]
        assert all(s is not None and math.isfinite(s) for s in scores), d["scores"]
    listed = httpx.get(f"{server.base_url}/threads/{meta['thread_id']}/traces", timeout=30).json()["data"]
    assert [t["run_id"] for t in listed] == [fmeta["run_id"], meta["run_id"]]

    # traces survive a restart
    server.stop()
    again = Server(env, tmp_path / "restart.log")
    try:
        kept = httpx.get(f"{again.base_url}/traces/{fmeta['run_id']}", timeout=30)
        assert kept.status_code == 200 and kept.json() == trace
        listed = httpx.get(f"{again.base_url}/threads/{meta['thread_id']}/traces", timeout=30).json()["data"]
        assert len(listed) == 2
    finally:
        again.stop()
