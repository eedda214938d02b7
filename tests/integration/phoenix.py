"""A real OTLP receiver for the export test: Arize Phoenix (``phoenix serve``: OTLP over HTTP on its web port and
over gRPC, spans readable back through its REST API).

The OpenTelemetry Collector ships only as a Go binary from GitHub releases, which this project's machines cannot
reach; Phoenix is on PyPI. It brings ~75 packages of its own (an LLM-ops server), so it lives in its own venv under
``.specrag/test-tools/`` (created on first use, pinned, reused afterwards) instead of in the project's dependencies.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO
from tests.reliability.harness import free_port

PHOENIX = "arize-phoenix==20.26.1"
VENV = REPO / ".specrag" / "test-tools" / "phoenix-20.26.1"


class PhoenixUnavailableError(RuntimeError):
    """Phoenix could not be installed or started (the message says why)."""


def ensure_installed(timeout_s: float = 1500) -> Path:
    """The ``phoenix`` executable of the pinned venv, installing it first if needed (one installer at a time)."""
    exe = VENV / "bin" / "phoenix"
    done = VENV / ".installed"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / "phoenix.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and exe.is_file():
            return exe
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--progress-bar", "off", PHOENIX],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=timeout_s, check=False)
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                raise PhoenixUnavailableError(f"could not install {PHOENIX}: {' / '.join(tail)}")
        done.write_text(PHOENIX + "\n")
    return exe


@dataclass
class Phoenix:
    """A running Phoenix: where to send OTLP, and how to read spans back."""

    http_port: int
    grpc_port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http(self) -> str:
        return f"{self.base_url}/v1/traces"

    @property
    def otlp_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def spans(self, project: str, *, expect: int, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Spans of ``project`` once at least ``expect`` arrived (ingestion is asynchronous)."""
        deadline = time.monotonic() + timeout_s
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.base_url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=30)
            if r.status_code == 200:
                got = list(r.json().get("data", []))
                if len(got) >= expect:
                    return got
            time.sleep(0.5)
        return got


@contextmanager
def running_phoenix(work: Path, start_timeout_s: float = 240) -> Iterator[Phoenix]:
    """Start ``phoenix serve`` on free loopback ports with its data in ``work``; stop it afterwards."""
    exe = ensure_installed()
    phoenix = Phoenix(http_port=free_port(), grpc_port=free_port(), log=work / "phoenix.log")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(phoenix.http_port),
        "PHOENIX_GRPC_PORT": str(phoenix.grpc_port),
        "PHOENIX_WORKING_DIR": str(work / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    with phoenix.log.open("w") as out:
        proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=out, stderr=out, cwd=work)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if proc.poll() is not None:
                    raise PhoenixUnavailableError(f"phoenix exited with {proc.returncode}: {phoenix.log.read_text()}")
                try:
                    if httpx.get(f"{phoenix.base_url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise PhoenixUnavailableError(f"phoenix did not start in {start_timeout_s:g} s")
                time.sleep(0.5)
            yield phoenix
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
