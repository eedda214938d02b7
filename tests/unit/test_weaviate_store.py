"""Weaviate adapter specifics beyond the store contract, on the wire-level fake (tests/weaviate_fake)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.settings import Settings, StoreSettings
from app.store.errors import StoreError
from app.store.factory import open_store, weaviate_tenant
from app.store.protocol import Chunk
from app.store.weaviate_store import WeaviateStore, chunk_uuid, tenant_name
from tests.fakes import FakeEmbedder
from tests.weaviate_fake import FakeWeaviate

EMBEDDER = FakeEmbedder()


@pytest.fixture
def fake() -> Iterator[FakeWeaviate]:
    with FakeWeaviate() as server:
        yield server


def settings_for(fake: FakeWeaviate, **kwargs: object) -> StoreSettings:
    return StoreSettings(provider="weaviate", url=fake.url, grpc_port=fake.grpc_port, **kwargs)


def chunk(cid: str, text: str, dim: int = 64) -> Chunk:
    vector = tuple(float(x) for x in EMBEDDER.embed([text])[0])
    return Chunk(id=cid, doc_id="d", title="t", text=text, vector=(vector + (0.0,) * dim)[:dim])


def test_collection_schema_and_deterministic_uuids(fake: FakeWeaviate) -> None:
    store = WeaviateStore.open(settings_for(fake), tenant="kb", embedder=EMBEDDER, create=True)
    try:
        assert store.add([chunk("abc", "hello world")]) == 1
    finally:
        store.close()
    coll = fake.index.collections["SpecragChunk"]
    schema = coll.schema
    assert schema["multiTenancyConfig"]["enabled"] is True
    assert schema["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
    assert schema["vectorConfig"]["default"]["vectorIndexConfig"]["distance"] == "cosine"
    assert schema["vectorConfig"]["default"]["vectorIndexType"] == "hnsw"
    assert {p["name"]: p["tokenization"] for p in schema["properties"]} == {
        "chunk_id": "field",
        "doc_id": "field",
        "title": "word",
        "text": "word",
    }
    assert list(coll.tenants["kb"]) == [chunk_uuid("abc")]
    assert chunk_uuid("abc") == chunk_uuid("abc") != chunk_uuid("abd")


def test_failed_objects_are_reported(fake: FakeWeaviate) -> None:
    settings = settings_for(fake)
    store = WeaviateStore.open(settings, tenant="kb", embedder=EMBEDDER, create=True)
    assert store.add([chunk("ok", "fine")]) == 1
    # A store object that believes in another dimension: the server refuses its vectors, object by object.
    wrong = WeaviateStore(
        store._client, collection=settings.collection, tenant="kb", embedder_name="x", dim=65, settings=settings
    )
    with pytest.raises(StoreError, match=r"rejected 2 of 2 objects .*bad1: .*length 65.*bad2: "):
        wrong.add([chunk("bad1", "one", dim=65), chunk("bad2", "two", dim=65)])
    assert store.existing_ids(["ok", "bad1", "bad2"]) == {"ok"}
    store.close()


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    settings = StoreSettings(provider="weaviate", url=f"http://127.0.0.1:{port}", init_timeout_s=2)
    with pytest.raises(StoreError, match=rf"cannot reach Weaviate at http://127.0.0.1:{port}"):
        open_store(settings, path=Path("kb"), embedder=EMBEDDER, create=True)


def test_api_key_is_sent(fake: FakeWeaviate) -> None:
    with FakeWeaviate(api_key="s3cret") as secured:
        ok = settings_for(secured, api_key=SecretStr("s3cret"))
        store = WeaviateStore.open(ok, tenant="kb", embedder=EMBEDDER, create=True)
        assert store.add([chunk("a", "alpha")]) == 1
        store.close()
        with pytest.raises(StoreError):
            WeaviateStore.open(settings_for(secured), tenant="kb", embedder=EMBEDDER, create=True)


def test_tenant_names() -> None:
    assert tenant_name("kb") == tenant_name("kb/") == tenant_name("/data/kb") == "kb"
    assert tenant_name(".specrag/demo-store") == "demo-store"
    with pytest.raises(ValueError, match="not a valid Weaviate tenant name"):
        tenant_name("my kb")
    with pytest.raises(ValueError, match="not a valid Weaviate tenant name"):
        tenant_name("x" * 65)
    settings = StoreSettings(provider="weaviate", tenant="team-a")
    assert weaviate_tenant(settings, None) == "team-a"
    assert weaviate_tenant(settings, settings.path) == "team-a"  # the default knowledge base, spelled out
    assert weaviate_tenant(settings, Path("other")) == "other"
    assert weaviate_tenant(StoreSettings(provider="weaviate"), None) == "store"


def test_unknown_provider_lists_options() -> None:
    settings = StoreSettings.model_construct(provider="qdrant", path=Path("kb"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid options are lancedb, weaviate"):
        open_store(settings, embedder=None, create=False)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECRAG_STORE__PROVIDER", "weaviate")
    monkeypatch.setenv("SPECRAG_STORE__URL", "https://weaviate.internal:8443")
    monkeypatch.setenv("SPECRAG_STORE__API_KEY", "k")
    monkeypatch.setenv("SPECRAG_STORE__ALPHA", "0.7")
    monkeypatch.setenv("SPECRAG_CHECKPOINTER__PROVIDER", "postgres")
    monkeypatch.setenv("SPECRAG_CHECKPOINTER__URL", "postgresql://u:p@db:5432/specrag")
    settings = Settings()
    assert settings.store.provider == "weaviate"
    assert settings.store.url == "https://weaviate.internal:8443"
    assert settings.store.api_key is not None and settings.store.api_key.get_secret_value() == "k"
    assert settings.store.alpha == 0.7
    assert settings.checkpointer.provider == "postgres"
    assert settings.checkpointer.url is not None
    assert "p@db" not in repr(settings.checkpointer)  # secrets stay out of logs


@pytest.mark.parametrize("fusion", ["relative_score", "ranked"])
def test_hybrid_fusion_setting(fake: FakeWeaviate, fusion: str) -> None:
    store = WeaviateStore.open(settings_for(fake, fusion=fusion), tenant="kb", embedder=EMBEDDER, create=True)
    store.add([chunk("a", "alpha beta"), chunk("b", "gamma delta")])
    hits = store.search("alpha", [float(x) for x in EMBEDDER.embed(["alpha"])[0]], k=2)
    assert hits[0].chunk.id == "a"
    if fusion == "ranked":
        assert hits[0].score == pytest.approx(1 / 60)  # both rankings put it first: 0.5/60 + 0.5/60
    store.close()
