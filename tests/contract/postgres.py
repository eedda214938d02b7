"""A Postgres for tests: ``SPECRAG_TEST_POSTGRES_URL`` if set (``.ci/run`` sets it), else a throw-away cluster
started from Debian's binaries (``/usr/lib/postgresql/<v>/bin``) on a free loopback port.

``initdb`` refuses to run as root, so as root the cluster is created and run as the ``postgres`` user
(``runuser``), in a temp directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import unavailable

ENV = "SPECRAG_TEST_POSTGRES_URL"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` that has ``initdb`` and ``pg_ctl``, if any."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    candidates = sorted(
        (p / "bin" for p in root.iterdir() if (p / "bin" / "initdb").is_file()),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
    )
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], user: str | None) -> None:
    command = ["runuser", "-u", user, "--", *args] if user else args
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")


@contextlib.contextmanager
def temporary_cluster(bin_dir: Path) -> Iterator[str]:
    """Start a trust-auth cluster on 127.0.0.1 in a temp dir; yields its URL; stops and removes it after."""
    user = "postgres" if os.geteuid() == 0 else None
    data = Path(tempfile.mkdtemp(prefix="specrag-pg-"))
    if user:
        shutil.chown(data, user=user, group=user)
    port = _free_port()
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"], user)
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start"],
            user,
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "-w", "stop"], user)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A reachable Postgres URL (see the module doc)."""
    import psycopg

    url = os.environ.get(ENV, "").strip()
    if url:
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            unavailable(f"{ENV}={url} does not answer: {exc}")
        yield url
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable(f"no Postgres: set {ENV} or install Debian's postgresql (`.ci/run` does both)")
    assert bin_dir is not None
    try:
        with temporary_cluster(bin_dir) as started:
            yield started
    except RuntimeError as exc:
        unavailable(f"could not start a temporary Postgres from {bin_dir}: {exc}")


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new empty schema on ``url``'s database; yields a URL whose ``search_path`` is that schema (so tables a
    test creates are its own), and drops the schema afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
