"""A real ``specrag serve`` subprocess on a free loopback port, for the load test and the fault tests.

Everything stays on 127.0.0.1 and offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``); the server's data (store,
SQLite checkpoints, SQLite traces) lives under one directory, so a restarted server sees the same files.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.environment import subprocess_env

REPO = Path(__file__).resolve().parents[2]
SPECRAG = [sys.executable, "-m", "app.cli"]
FAST_MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(root: Path, *, model: str = FAST_MODEL, **settings: str) -> dict[str, str]:
    """The environment of a server whose data lives under ``root``: ``model`` as drafter and verifier, the
    embedded defaults (LanceDB, SQLite checkpoints and traces), offline, no API key unless given in ``settings``
    (``SPECRAG_...`` names to values); no other ``SPECRAG_`` variable of the caller's (``tests.environment``)."""
    return subprocess_env(
        {
            "SPECRAG_DRAFTER__MODEL": model,
            "SPECRAG_VERIFIER__MODEL": model,
            "SPECRAG_STORE__PATH": str(root / "store"),
            "SPECRAG_CHECKPOINTER__PROVIDER": "sqlite",
            "SPECRAG_CHECKPOINTER__PATH": str(root / "checkpoints.sqlite"),
            "SPECRAG_TRACES__PATH": str(root / "traces.sqlite"),
            **settings,
        }
    )


def ingest_samples(env: Mapping[str, str], timeout_s: float = 600) -> None:
    """Ingest ``samples/corpus`` into the env's store."""
    done = subprocess.run(
        [*SPECRAG, "ingest", str(REPO / "samples" / "corpus"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env=dict(env),
    )
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed: {done.stderr}")


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file ('ok' when sound)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


class SpecragServer:
    """``specrag serve`` on a free loopback port, its output in ``log``.

    Args:
        env: The process environment (see :func:`server_env`).
        log: Where stdout and stderr go (appended).
        api_key: Sent with the readiness probe when the server requires one.
        start_timeout_s: How long to wait for ``GET /v1/models``.
    """

    def __init__(
        self, env: Mapping[str, str], log: Path, *, api_key: str | None = None, start_timeout_s: float = 180
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._out = log.open("a")
        self.proc = subprocess.Popen(
            [*SPECRAG, "serve", "--port", str(self.port)], cwd=REPO, env=dict(env), stdout=self._out, stderr=self._out
        )
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._out.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/models", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not start within {start_timeout_s:g} s: {log.read_text()}")

    def alive(self) -> bool:
        """The process runs and answers ``GET /v1/models``."""
        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.base_url}/models", headers=self.headers, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._out.closed:
            self._out.close()
