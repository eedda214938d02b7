"""A :class:`app.store.protocol.VectorStore` on a Weaviate server (``weaviate-client`` v4, imported lazily).

Layout: one multi-tenant collection (default ``SpecragChunk``) on the server; each knowledge base is one tenant, so
knowledge bases share the schema but never each other's objects (every read and write names the tenant, and the
server keeps each tenant in its own shard). The collection has:

* one self-provided vector named :data:`VECTOR_NAME` (no vectorizer module: the app embeds), indexed by HNSW with
  cosine distance;
* properties ``chunk_id`` (the content-hash id; exact-match token), ``doc_id`` (exact-match token, filterable),
  ``title`` and ``text`` (word-tokenized; BM25 searches both);
* a description recording the embedder (name and dimension) that built it, checked on open like the embedded
  store's metadata file.

Idempotence: the Weaviate object UUID is ``generate_uuid5(chunk.id)``, a deterministic function of the content-hash
id, so a chunk has one UUID everywhere. :meth:`WeaviateStore.add` inserts only ids not stored yet; a concurrent add
of the same chunk is a same-UUID upsert of identical content, so nothing is duplicated either way.

Hybrid search fuses BM25 and vector search on the server with ``alpha`` (setting ``SPECRAG_STORE__ALPHA``; 1 is
pure vector) and ``relativeScore`` fusion by default: each ranking's scores are min-max normalised and summed with
weights ``1 - alpha`` / ``alpha``. It is Weaviate's default since 1.24 and keeps score magnitudes (a passage that is
far ahead on BM25 stays far ahead), which rank fusion throws away. ``SPECRAG_STORE__FUSION=ranked`` selects
reciprocal rank fusion instead, the same rule (k=60) as the embedded LanceDB store, for identical semantics across
backends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.embed.protocol import Embedder
from app.store.errors import EmbedderMismatchError, StoreError
from app.store.protocol import Chunk, Hit, SearchMode, StoreNotFoundError, StoreStats, check_where

if TYPE_CHECKING:
    from app.settings import StoreSettings

VECTOR_NAME = "default"
"""Name of the collection's single self-provided vector."""
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Weaviate's rule for tenant names."""
_ID_QUERY_BATCH = 500
_PROPERTIES = ["chunk_id", "doc_id", "title", "text"]
_DESCRIPTION_PREFIX = "specrag chunks; embedder="


def tenant_name(path: Path | str) -> str:
    """The tenant for a knowledge base given as a store path or name: its last component, validated.

    Args:
        path: ``kb``, ``kb/``, ``/data/kb``: all name tenant ``kb``.

    Returns:
        The tenant name.

    Raises:
        ValueError: The name is not a valid Weaviate tenant name (1-64 of ``A-Z a-z 0-9 _ -``).
    """
    name = Path(path).name
    if not TENANT_PATTERN.fullmatch(name):
        raise ValueError(
            f"store {str(path)!r}: {name!r} is not a valid Weaviate tenant name (1-64 characters of A-Z, a-z, 0-9, "
            "'_' and '-'); use --store NAME or SPECRAG_STORE__TENANT"
        )
    return name


def chunk_uuid(chunk_id: str) -> str:
    """The deterministic Weaviate UUID of a chunk id (UUIDv5 of the id)."""
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(chunk_id))


def _description(embedder_name: str, dim: int) -> str:
    return f"{_DESCRIPTION_PREFIX}{embedder_name}; dim={dim}"


def _parse_description(description: str | None) -> tuple[str, int] | None:
    if not description or not description.startswith(_DESCRIPTION_PREFIX):
        return None
    name, _, dim = description[len(_DESCRIPTION_PREFIX) :].rpartition("; dim=")
    try:
        return name, int(dim)
    except ValueError:
        return None


def connect(settings: StoreSettings) -> Any:
    """Connect a ``weaviate.WeaviateClient`` to ``settings.url`` (REST) and ``settings.grpc_port`` (gRPC).

    The client's own start-up checks are skipped (one of them asks pypi.org for the latest client version); instead
    the REST endpoint must answer ``/v1/meta`` and ``/v1/.well-known/ready``, and gRPC is exercised by the first
    tenant look-up in :meth:`WeaviateStore.open`.

    Args:
        settings: URL, gRPC port, API key and timeouts.

    Returns:
        The connected client (close it when done).

    Raises:
        StoreError: The server is unreachable or not ready.
    """
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout
    from weaviate.exceptions import WeaviateBaseError

    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"invalid Weaviate url {settings.url!r}: expected http(s)://host[:port]")
    secure = parts.scheme == "https"
    auth = Auth.api_key(settings.api_key.get_secret_value()) if settings.api_key is not None else None
    try:
        client = weaviate.connect_to_custom(
            http_host=parts.hostname,
            http_port=parts.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=parts.hostname,
            grpc_port=settings.grpc_port,
            grpc_secure=secure,
            auth_credentials=auth,
            additional_config=AdditionalConfig(
                timeout=Timeout(init=settings.init_timeout_s, query=settings.timeout_s, insert=settings.timeout_s)
            ),
            skip_init_checks=True,
        )
    except (WeaviateBaseError, OSError) as exc:
        raise StoreError(f"cannot reach Weaviate at {settings.url}: {exc}") from exc
    if not client.is_ready():
        client.close()
        raise StoreError(f"Weaviate at {settings.url} is not ready (GET /v1/.well-known/ready failed)")
    return client


class WeaviateStore:
    """One knowledge base (a tenant) of the chunk collection on a Weaviate server. Use :meth:`open` to get one.

    Args:
        client: A connected ``weaviate.WeaviateClient`` (closed by :meth:`close`).
        collection: The collection name.
        tenant: The tenant of this knowledge base.
        embedder_name: Embedder that built the collection.
        dim: Vector dimension.
        settings: Hybrid alpha and fusion, batch size.
    """

    def __init__(
        self,
        client: Any,
        *,
        collection: str,
        tenant: str,
        embedder_name: str,
        dim: int,
        settings: StoreSettings,
    ) -> None:
        self._client = client
        self._collection_name = collection
        self._tenant = tenant
        self._embedder_name = embedder_name
        self._dim = dim
        self._settings = settings
        self._collection = client.collections.get(collection).with_tenant(tenant)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        settings: StoreSettings,
        *,
        tenant: str,
        embedder: Embedder | None,
        create: bool,
    ) -> WeaviateStore:
        """Open the knowledge base ``tenant``, creating the collection and the tenant if asked.

        Args:
            settings: Server, collection and search settings.
            tenant: The tenant (see :func:`tenant_name`).
            embedder: The embedder used with the store, checked against the one recorded on the collection; ``None``
                skips the check (read-only uses); required when creating.
            create: Create the collection and tenant if missing.

        Returns:
            The open store.

        Raises:
            StoreNotFoundError: No such collection or tenant and ``create`` is false.
            EmbedderMismatchError: The collection was built with a different embedder.
            StoreError: The server is unreachable, or the collection is not a specrag collection.
            ValueError: Invalid tenant name, or ``create`` without an embedder.
        """
        from weaviate.exceptions import WeaviateBaseError

        if not TENANT_PATTERN.fullmatch(tenant):
            raise ValueError(f"{tenant!r} is not a valid Weaviate tenant name (1-64 of A-Z, a-z, 0-9, '_', '-')")
        if create and embedder is None:
            raise ValueError("an embedder is needed to create a store")
        client = connect(settings)
        try:
            name, dim = cls._ensure_collection(client, settings, embedder, create)
            cls._ensure_tenant(client, settings.collection, tenant, create)
        except WeaviateBaseError as exc:
            client.close()
            raise StoreError(f"Weaviate at {settings.url}: {exc}") from exc
        except BaseException:
            client.close()
            raise
        return cls(
            client, collection=settings.collection, tenant=tenant, embedder_name=name, dim=dim, settings=settings
        )

    @staticmethod
    def _ensure_collection(
        client: Any, settings: StoreSettings, embedder: Embedder | None, create: bool
    ) -> tuple[str, int]:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

        name = settings.collection
        if client.collections.exists(name):
            config = client.collections.get(name).config.get()
            recorded = _parse_description(config.description)
            if recorded is None:
                raise StoreError(f"collection {name} exists but was not created by specrag (no embedder recorded)")
            if not config.multi_tenancy_config.enabled:
                raise StoreError(f"collection {name} exists without multi-tenancy: use another collection name")
            if embedder is not None and recorded != (embedder.name, embedder.dim):
                raise EmbedderMismatchError(
                    f"collection {name} was built with embedder {recorded[0]} (dim {recorded[1]}), but the configured "
                    f"embedder is {embedder.name} (dim {embedder.dim}): use another SPECRAG_STORE__COLLECTION"
                )
            return recorded
        if not create:
            raise StoreNotFoundError(f"no collection {name} on {settings.url}: run `specrag ingest` first")
        assert embedder is not None
        client.collections.create(
            name,
            description=_description(embedder.name, embedder.dim),
            vector_config=Configure.Vectors.self_provided(
                name=VECTOR_NAME,
                vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
            ),
            properties=[
                Property(name="chunk_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
                Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            ],
            inverted_index_config=Configure.inverted_index(bm25_b=0.75, bm25_k1=1.2),
            multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=False),
        )
        return embedder.name, embedder.dim

    @staticmethod
    def _ensure_tenant(client: Any, collection: str, tenant: str, create: bool) -> None:
        from weaviate.classes.tenants import Tenant

        tenants = client.collections.get(collection).tenants
        if tenant in tenants.get_by_names([tenant]):  # gRPC: also proves the gRPC port answers
            return
        if not create:
            raise StoreNotFoundError(f"no knowledge base {tenant!r} in collection {collection}: run `specrag ingest`")
        tenants.create([Tenant(name=tenant)])

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    # ------------------------------------------------------------------ properties

    @property
    def tenant(self) -> str:
        """The tenant (knowledge base) this store reads and writes."""
        return self._tenant

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def count(self) -> int:
        """Number of chunks in this tenant."""
        return int(self._collection.aggregate.over_all(total_count=True).total_count or 0)

    # ------------------------------------------------------------------ writes

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored in this tenant."""
        from weaviate.classes.query import Filter

        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), _ID_QUERY_BATCH):
            batch = wanted[start : start + _ID_QUERY_BATCH]
            result = self._collection.query.fetch_objects(
                filters=Filter.by_id().contains_any([chunk_uuid(i) for i in batch]),
                limit=len(batch),
                return_properties=["chunk_id"],
            )
            found.update(str(o.properties["chunk_id"]) for o in result.objects)
        return found

    def add(self, chunks: Sequence[Chunk]) -> int:
        """Store the chunks whose ids are new, in batches of ``settings.batch_size``.

        Args:
            chunks: Chunks with vectors of the store's dimension. Duplicate ids within ``chunks`` keep the first.

        Returns:
            How many chunks were inserted.

        Raises:
            ValueError: A vector has the wrong dimension.
            StoreError: The server rejected objects (the message lists each failed chunk id and the server's reason;
                the other objects of the batch are stored).
        """
        from weaviate.classes.data import DataObject
        from weaviate.exceptions import WeaviateBaseError, WeaviateInsertManyAllFailedError

        unique: dict[str, Chunk] = {}
        for chunk in chunks:
            if len(chunk.vector) != self._dim:
                raise ValueError(f"chunk {chunk.id}: vector has {len(chunk.vector)} values, expected {self._dim}")
            unique.setdefault(chunk.id, chunk)
        existing = self.existing_ids(list(unique))
        new = [c for c in unique.values() if c.id not in existing]
        added = 0
        size = self._settings.batch_size
        for start in range(0, len(new), size):
            batch = new[start : start + size]
            objects = [
                DataObject(
                    properties={"chunk_id": c.id, "doc_id": c.doc_id, "title": c.title, "text": c.text},
                    uuid=chunk_uuid(c.id),
                    vector={VECTOR_NAME: [float(x) for x in c.vector]},
                )
                for c in batch
            ]
            try:
                errors = {i: err.message for i, err in self._collection.data.insert_many(objects).errors.items()}
            except WeaviateInsertManyAllFailedError as exc:  # raised instead of a result when every object failed
                errors = {i: exc.message for i in range(len(batch))}
            except WeaviateBaseError as exc:
                raise StoreError(f"Weaviate batch insert failed ({added} stored so far): {exc}") from exc
            added += len(batch) - len(errors)
            if errors:
                failed = "; ".join(f"{batch[i].id}: {message}" for i, message in sorted(errors.items()))
                raise StoreError(
                    f"Weaviate rejected {len(errors)} of {len(batch)} objects ({added} stored so far): {failed}"
                )
        return added

    def optimize(self) -> None:
        """Nothing to do: Weaviate updates its HNSW and inverted (BM25) indexes on every write."""

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        vector: Sequence[float],
        *,
        k: int,
        mode: SearchMode = "hybrid",
        exclude_ids: Sequence[str] = (),
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """Top-k chunks for the query, best first, skipping ``exclude_ids``.

        Args:
            query: The query text (used by ``text`` and ``hybrid``).
            vector: The query embedding (used by ``vector`` and ``hybrid``).
            k: How many hits.
            mode: ``hybrid`` (server-side fusion, see the module doc), ``vector`` (HNSW, cosine) or ``text`` (BM25
                over text and title).
            exclude_ids: Chunk ids to leave out (a filter on the object UUIDs).
            where: Exact-match metadata filter, keys ``doc_id`` and/or ``title``. ``title`` is word-tokenized on
                Weaviate, so it matches objects whose title contains all the given words.

        Returns:
            Hits, best first; scores are cosine similarity (vector), BM25 (text) or the fused score (hybrid).
        """
        from weaviate.classes.query import Filter, HybridFusion, MetadataQuery

        check_where(where)
        if k <= 0:
            return []
        filters = [Filter.by_id().contains_none([chunk_uuid(i) for i in exclude_ids])] if exclude_ids else []
        filters += [Filter.by_property(key).equal(value) for key, value in (where or {}).items()]
        combined = Filter.all_of(filters) if filters else None
        common: dict[str, Any] = {
            "limit": k,
            "filters": combined,
            "include_vector": [VECTOR_NAME],
            "return_properties": _PROPERTIES,
        }
        match mode:
            case "vector":
                self._check_vector(vector)
                result = self._collection.query.near_vector(
                    near_vector=[float(x) for x in vector],
                    target_vector=VECTOR_NAME,
                    return_metadata=MetadataQuery(distance=True),
                    **common,
                )
                hits = [self._hit(o, 1.0 - float(o.metadata.distance)) for o in result.objects]
            case "text":
                if not query.strip():
                    return []
                result = self._collection.query.bm25(
                    query=query,
                    query_properties=["text", "title"],
                    return_metadata=MetadataQuery(score=True),
                    **common,
                )
                hits = [self._hit(o, float(o.metadata.score or 0.0)) for o in result.objects]
            case "hybrid":
                self._check_vector(vector)
                fusion = HybridFusion.RANKED if self._settings.fusion == "ranked" else HybridFusion.RELATIVE_SCORE
                result = self._collection.query.hybrid(
                    query=query,
                    vector=[float(x) for x in vector],
                    target_vector=VECTOR_NAME,
                    alpha=self._settings.alpha,
                    fusion_type=fusion,
                    query_properties=["text", "title"],
                    return_metadata=MetadataQuery(score=True),
                    **common,
                )
                hits = [self._hit(o, float(o.metadata.score or 0.0)) for o in result.objects]
            case other:
                raise ValueError(f"unknown search mode {other!r}: valid options are hybrid, vector, text")
        hits.sort(key=lambda h: (-h.score, h.chunk.id))
        return hits

    def _check_vector(self, vector: Sequence[float]) -> None:
        if len(vector) != self._dim:
            raise ValueError(f"query vector has {len(vector)} values, expected {self._dim}")

    @staticmethod
    def _hit(obj: Any, score: float) -> Hit:
        props = obj.properties
        raw = obj.vector.get(VECTOR_NAME, []) if isinstance(obj.vector, dict) else []
        chunk = Chunk(
            id=str(props["chunk_id"]),
            doc_id=str(props["doc_id"]),
            title=str(props.get("title") or ""),
            text=str(props.get("text") or ""),
            vector=tuple(float(x) for x in raw),
        )
        return Hit(chunk=chunk, score=score)

    # ------------------------------------------------------------------ stats

    def stats(self) -> StoreStats:
        """Counts for this tenant, and the collection's index configuration."""
        from weaviate.classes.aggregate import GroupByAggregate

        chunks = self.count()
        documents = 0
        if chunks:
            grouped = self._collection.aggregate.over_all(
                group_by=GroupByAggregate(prop="doc_id", limit=chunks), total_count=True
            )
            documents = len(grouped.groups)
        config = self._client.collections.get(self._collection_name).config.get()
        tenants = len(self._client.collections.get(self._collection_name).tenants.get())
        vector_config = config.vector_config[VECTOR_NAME].vector_index_config if config.vector_config else None
        metric = getattr(vector_config, "distance_metric", None)
        hnsw = (
            f"HNSW ({getattr(metric, 'value', 'cosine')}, ef_construction="
            f"{getattr(vector_config, 'ef_construction', '?')}, max_connections="
            f"{getattr(vector_config, 'max_connections', '?')})"
        )
        bm25 = config.inverted_index_config.bm25
        return StoreStats(
            path=f"{self._settings.url} collection {self._collection_name} tenant {self._tenant} ({tenants} tenants)",
            documents=documents,
            chunks=chunks,
            embedder=f"{self._embedder_name} (dim {self._dim})",
            vector_index=f"{hnsw}: {chunks:,} objects, indexed on write",
            text_index=f"BM25 (k1={bm25.k1}, b={bm25.b}) on text, title: indexed on write",
        )
