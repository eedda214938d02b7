"""The trace page in a real browser: headless Chromium renders the score bars; a screenshot is kept.

A tiny FastAPI app with only the UI router is served by uvicorn on a free loopback port; the trace comes from a
scripted run (fakes). Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); without it the test
skips, except under CI=true where it fails. The screenshot is written to ``test-artifacts/trace-page.png``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from app.ask import run
from app.server.ui.routes import router
from app.trace.store import SQLiteTraceStore
from graphs.context import Context
from tests.conftest import REPO, unavailable
from tests.unit.test_graph import make
from tests.unit.test_trace_page import width, with_class

pytestmark = pytest.mark.integration

SCREENSHOT = REPO / "test-artifacts" / "trace-page.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,2000",
]


# Scripted verifier evidence per drafted answer, so the bars differ visibly: (log ρ_sc, P(Yes)).
_EVIDENCE = {"France": (-1.5, 0.96), "Rome": (-6.0, 0.62), "Loire": (-4.0, 0.81), "Berlin": (-8.0, 0.35)}


def varied_judge(continuation: str) -> tuple[float, float]:
    """Scores by the answer in ``continuation`` (``Answer: <title> ...``)."""
    return next((v for k, v in _EVIDENCE.items() if f"Answer: {k}" in continuation), (-5.0, 0.5))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        unavailable("chromium is not installed (apt-get install chromium; .ci/run does it)")
    assert path is not None
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, run id): a scripted run's trace served by uvicorn on a free loopback port."""
    store = SQLiteTraceStore(tmp_path / "traces.sqlite")
    backends, _, _ = make(varied_judge)
    result = run("What is the capital of France?", Context(seed=3), traces=store, provider=lambda ctx: backends)
    assert result.run_id is not None
    app = FastAPI()
    app.state.trace_store = store
    app.include_router(router)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", result.run_id
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _chromium(binary: str, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; the whole process group is killed on timeout."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=profile
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium timed out after {timeout}s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_trace_page_renders_score_bars_in_chromium(chromium: str, served: tuple[str, str], tmp_path: Path) -> None:
    base, run_id = served
    url = f"{base}/ui/runs/{run_id}"

    dump = _chromium(chromium, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", url)
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = dump.stdout
    assert run_id in dom and "Path through the graph" in dom
    cards = with_class(dom, "draft")
    assert len(cards) == 5
    bars = with_class(dom, "bar")
    assert len(bars) == 20 and all(width(b["style"]) > 0 for b in bars)
    assert {b["data-metric"] for b in bars} == {"draft", "self_consistency", "p_yes", "total"}
    assert len({width(b["style"]) for b in with_class(dom, "bar-total")}) > 1
    assert len(with_class(dom, "winner")) == 1

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    shot = _chromium(
        chromium, tmp_path / "profile-shot", "--virtual-time-budget=5000", f"--screenshot={SCREENSHOT}", url
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert SCREENSHOT.is_file() and SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 20_000
