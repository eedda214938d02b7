"""Vector-store backends for the store contract suite.

Each backend is a ``KnowledgeBases`` factory: ``open(name)`` gives a fresh knowledge base called ``name`` (a
directory for LanceDB, a tenant for Weaviate), opened through :func:`app.store.factory.open_store` exactly as the
app opens it.

* ``lancedb``: real LanceDB in a temp directory.
* ``weaviate-fake``: the real ``weaviate-client`` against :class:`tests.weaviate_fake.FakeWeaviate` (wire-level
  fake on loopback, shapes from the Weaviate API docs).
* ``weaviate-live``: a real Weaviate when ``WEAVIATE_URL`` (and optionally ``WEAVIATE_GRPC_PORT``,
  ``WEAVIATE_API_KEY``) points at one; a throw-away collection is created and deleted. Skipped when unset; when set
  but not answering it is a skip, or a failure under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.embed.protocol import Embedder
from app.settings import StoreSettings
from app.store.errors import StoreError
from app.store.factory import open_store
from app.store.protocol import VectorStore
from tests.conftest import unavailable
from tests.fakes import FakeEmbedder
from tests.weaviate_fake import FakeWeaviate

BACKENDS = ["lancedb", "weaviate-fake", "weaviate-live"]


class KnowledgeBases:
    """Opens knowledge bases of one backend; closes them at teardown."""

    def __init__(self, backend: str, settings: StoreSettings, root: Path) -> None:
        self.backend = backend
        self.settings = settings
        self.root = root
        self._opened: list[VectorStore] = []

    def open(self, name: str, *, embedder: Embedder | None = None, create: bool = True) -> VectorStore:
        """Open (creating by default) the knowledge base ``name`` with the fake 64-d embedder."""
        path = self.root / name if self.backend == "lancedb" else Path(name)
        store = open_store(self.settings, path=path, embedder=embedder or FakeEmbedder(), create=create)
        self._opened.append(store)
        return store

    def close(self) -> None:
        """Close every store that has a ``close``."""
        for store in self._opened:
            close: Callable[[], None] | None = getattr(store, "close", None)
            if close is not None:
                close()


@pytest.fixture(scope="session")
def fake_weaviate() -> Iterator[FakeWeaviate]:
    """One fake Weaviate for the session (tests use distinct tenants)."""
    with FakeWeaviate() as fake:
        yield fake


def _live_settings() -> StoreSettings:
    url = os.environ.get("WEAVIATE_URL", "").strip()
    if not url:
        pytest.skip("no live Weaviate: set WEAVIATE_URL (and WEAVIATE_GRPC_PORT, WEAVIATE_API_KEY) to run against one")
    key = os.environ.get("WEAVIATE_API_KEY")
    settings = StoreSettings(
        provider="weaviate",
        url=url,
        grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
        api_key=SecretStr(key) if key else None,
        collection=f"SpecragTest{uuid.uuid4().hex[:10]}",
    )
    from app.store.weaviate_store import connect

    try:
        connect(settings).close()
    except StoreError as exc:
        unavailable(f"WEAVIATE_URL={url} does not answer: {exc}")
    return settings


@pytest.fixture(scope="session")
def live_weaviate_settings() -> Iterator[StoreSettings]:
    """Settings for the live server with a throw-away collection (deleted at the end)."""
    settings = _live_settings()
    yield settings
    from app.store.weaviate_store import connect

    client = connect(settings)
    try:
        client.collections.delete(settings.collection)
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def kbs(request: pytest.FixtureRequest, tmp_path: Path, fake_weaviate: FakeWeaviate) -> Iterator[KnowledgeBases]:
    """Knowledge bases of each backend (fresh names per test)."""
    backend: str = request.param
    settings: Any
    if backend == "lancedb":
        settings = StoreSettings()
    elif backend == "weaviate-fake":
        settings = StoreSettings(provider="weaviate", url=fake_weaviate.url, grpc_port=fake_weaviate.grpc_port)
    else:
        settings = request.getfixturevalue("live_weaviate_settings")
    factory = KnowledgeBases(backend, settings, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def kb_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique knowledge-base names per test (tenants share one collection on the Weaviate backends)."""
    prefix = uuid.uuid4().hex[:8]
    return lambda suffix: f"kb-{prefix}-{suffix}"
