"""The fake Weaviate's gRPC side: ``weaviate.v1.Weaviate`` (Search, BatchObjects, TenantsGet, Aggregate) and the
health check, on the protobuf messages the client ships (``weaviate.proto.v1``; see fixtures/SOURCES.md).

Search supports what :class:`app.store.weaviate_store.WeaviateStore` sends: filters (and/or/not, equal, not-equal,
contains-any/none on properties and ``_id``), near_vector (exact cosine), bm25, hybrid (relativeScore or ranked
fusion, alpha), plain fetch ordered by uuid with an ``after`` cursor, requested properties and named vectors.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

from tests.weaviate_fake.index import (
    FakeError,
    FakeIndex,
    Predicate,
    StoredObject,
    ranked_fusion,
    relative_score_fusion,
)

Op = base_pb2.Filters.Operator


def unpack(data: bytes) -> list[float]:
    """Little-endian float32 bytes to floats."""
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def pack(vector: Sequence[float]) -> bytes:
    """Floats to little-endian float32 bytes."""
    return struct.pack(f"<{len(vector)}f", *vector)


def _filter_values(f: base_pb2.Filters) -> list[Any]:
    for name in ("value_text_array", "value_int_array", "value_number_array", "value_boolean_array"):
        if f.HasField(name):
            return list(getattr(f, name).values)
    for name in ("value_text", "value_int", "value_number", "value_boolean"):
        if f.HasField(name):
            return [getattr(f, name)]
    return []


def compile_filter(f: base_pb2.Filters) -> Predicate:
    """A predicate over stored objects for a ``Filters`` message."""
    if f.operator in (Op.OPERATOR_AND, Op.OPERATOR_OR, Op.OPERATOR_NOT):
        parts = [compile_filter(sub) for sub in f.filters]
        if f.operator == Op.OPERATOR_AND:
            return lambda o: all(p(o) for p in parts)
        if f.operator == Op.OPERATOR_OR:
            return lambda o: any(p(o) for p in parts)
        return lambda o: not parts[0](o)
    prop = f.target.property if f.HasField("target") else (f.on[0] if f.on else "")
    values = _filter_values(f)

    def value(o: StoredObject) -> Any:
        return o.uuid if prop == "_id" else o.properties.get(prop)

    match f.operator:
        case Op.OPERATOR_EQUAL:
            return lambda o: value(o) == values[0]
        case Op.OPERATOR_NOT_EQUAL:
            return lambda o: value(o) != values[0]
        case Op.OPERATOR_CONTAINS_ANY:
            return lambda o: value(o) in values
        case Op.OPERATOR_CONTAINS_NONE:
            return lambda o: value(o) not in values
        case other:
            raise FakeError(f"fake Weaviate: filter operator {Op.Name(other)} not implemented")


def _query_vector(messages: Iterable[Any]) -> list[float] | None:
    """The query vector from a NearVector or Hybrid message (whichever encoding the client chose)."""
    for m in messages:
        if m is None:
            continue
        if m.vector_bytes:
            return unpack(m.vector_bytes)
        if m.vectors:
            return unpack(m.vectors[0].vector_bytes)
        if getattr(m, "vector_for_targets", None):
            target = m.vector_for_targets[0]
            return unpack(target.vectors[0].vector_bytes if target.vectors else target.vector_bytes)
        if m.vector:
            return list(m.vector)
    return None


class FakeWeaviateService(weaviate_pb2_grpc.WeaviateServicer):
    """The ``weaviate.v1.Weaviate`` service on a :class:`FakeIndex`."""

    def __init__(self, index: FakeIndex, api_key: str | None, calls: list[str]) -> None:
        self.index = index
        self.api_key = api_key
        self.calls = calls

    def _enter(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls.append(f"grpc {name}")
        if self.api_key is not None:
            metadata = dict(context.invocation_metadata())
            if metadata.get("authorization") != f"Bearer {self.api_key}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled")

    # ------------------------------------------------------------------ batch

    def BatchObjects(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Upsert objects; per-object failures go to ``errors`` (index into the request)."""
        self._enter("BatchObjects", context)
        started = time.perf_counter()
        errors = []
        with self.index.lock:
            for i, obj in enumerate(request.objects):
                try:
                    self._store(obj)
                except FakeError as exc:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=i, error=str(exc)))
        return batch_pb2.BatchObjectsReply(took=time.perf_counter() - started, errors=errors)

    def _store(self, obj: Any) -> None:
        objects = self.index.objects(obj.collection, obj.tenant)
        schema = self.index.collection(obj.collection).schema
        known = {p["name"] for p in schema.get("properties", [])}
        props = MessageToDict(obj.properties.non_ref_properties) if obj.HasField("properties") else {}
        for name in props:
            if name not in known:
                raise FakeError(f"no such prop with name '{name}' found in class '{schema['class']}' in the schema")
        vectors = {v.name or "default": unpack(v.vector_bytes) for v in obj.vectors}
        if obj.vector_bytes:
            vectors["default"] = unpack(obj.vector_bytes)
        for name, vector in vectors.items():
            if name not in (schema.get("vectorConfig") or {}):
                raise FakeError(f"collection {schema['class']} does not have a vector named {name!r}")
            lengths = {
                len(o.vectors[name]) for coll in self._all_objects(obj.collection) for o in coll if name in o.vectors
            }
            if lengths and len(vector) not in lengths:
                raise FakeError(
                    f"new node has a vector with length {len(vector)}. Existing nodes have vectors with length "
                    f"{lengths.pop()}"
                )
        objects[obj.uuid] = StoredObject(uuid=obj.uuid, properties=props, vectors=vectors)

    def _all_objects(self, collection: str) -> list[list[StoredObject]]:
        return [list(t.values()) for t in self.index.collection(collection).tenants.values()]

    # ------------------------------------------------------------------ tenants, aggregate

    def TenantsGet(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Tenants of a collection, optionally only the named ones."""
        self._enter("TenantsGet", context)
        with self.index.lock:
            try:
                names = sorted(self.index.collection(request.collection).tenants)
            except FakeError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if request.HasField("names"):
            names = [n for n in names if n in set(request.names.values)]
        status = tenants_pb2.TenantActivityStatus.TENANT_ACTIVITY_STATUS_HOT
        return tenants_pb2.TenantsGetReply(tenants=[tenants_pb2.Tenant(name=n, activity_status=status) for n in names])

    def Aggregate(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Object count, optionally grouped by one property."""
        self._enter("Aggregate", context)
        objects = self._candidates(request.collection, request.tenant, request, context)
        if request.HasField("group_by"):
            prop = request.group_by.property
            counts: dict[str, int] = {}
            for o in objects:
                key = str(o.properties.get(prop, ""))
                counts[key] = counts.get(key, 0) + 1
            order = sorted(counts, key=lambda k: (-counts[k], k))[: request.limit or None]
            groups = [
                aggregate_pb2.AggregateReply.Group(
                    objects_count=counts[k],
                    grouped_by=aggregate_pb2.AggregateReply.Group.GroupedBy(path=[prop], text=k),
                )
                for k in order
            ]
            return aggregate_pb2.AggregateReply(grouped_results=aggregate_pb2.AggregateReply.Grouped(groups=groups))
        return aggregate_pb2.AggregateReply(
            single_result=aggregate_pb2.AggregateReply.Single(objects_count=len(objects))
        )

    # ------------------------------------------------------------------ search

    def _candidates(self, collection: str, tenant: str, request: Any, context: grpc.ServicerContext) -> list[Any]:
        try:
            with self.index.lock:
                objects = list(self.index.objects(collection, tenant).values())
                predicate = compile_filter(request.filters) if request.HasField("filters") else None
        except FakeError as exc:
            context.abort(grpc.StatusCode.UNKNOWN, str(exc))
        return [o for o in objects if predicate is None or predicate(o)]

    def Search(self, request: Any, context: grpc.ServicerContext) -> Any:
        """near_vector, bm25, hybrid or a plain fetch, filtered, limited, with requested properties/metadata."""
        self._enter("Search", context)
        started = time.perf_counter()
        objects = self._candidates(request.collection, request.tenant, request, context)
        by_uuid = {o.uuid: o for o in objects}
        limit = request.limit or 10
        distances: dict[str, float] = {}
        scores: dict[str, float] = {}
        if request.HasField("near_vector"):
            query = _query_vector([request.near_vector]) or []
            name = self._target(request.near_vector.target_vectors, request.collection)
            distances = {o.uuid: self.index.cosine_distance(query, o.vectors[name]) for o in objects}
            order = sorted(distances, key=lambda u: (distances[u], u))
        elif request.HasField("bm25_search"):
            bm25 = request.bm25_search
            scores = self.index.bm25(request.collection, objects, bm25.query, list(bm25.properties))
            order = sorted(scores, key=lambda u: (-scores[u], u))
        elif request.HasField("hybrid_search"):
            hybrid = request.hybrid_search
            alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
            hybrid_query = _query_vector([hybrid, hybrid.near_vector if hybrid.HasField("near_vector") else None])
            text_scores = self.index.bm25(request.collection, objects, hybrid.query, list(hybrid.properties))
            vector_scores: dict[str, float] = {}
            if hybrid_query is not None:
                name = self._target(hybrid.target_vectors, request.collection)
                vector_scores = {
                    o.uuid: 1.0 - self.index.cosine_distance(hybrid_query, o.vectors[name]) for o in objects
                }
            rankings = [(1.0 - alpha, text_scores), (alpha, vector_scores)]
            ranked = hybrid.fusion_type == hybrid.FusionType.FUSION_TYPE_RANKED
            scores = ranked_fusion(rankings) if ranked else relative_score_fusion(rankings)
            order = sorted(scores, key=lambda u: (-scores[u], u))
        else:
            order = sorted(u for u in by_uuid if not request.after or u > request.after)
        results = [self._result(by_uuid[u], request, distances.get(u), scores.get(u)) for u in order[:limit]]
        return search_get_pb2.SearchReply(took=time.perf_counter() - started, results=results)

    def _target(self, targets: Sequence[str], collection: str) -> str:
        if targets:
            return targets[0]
        names = list(self.index.collection(collection).schema.get("vectorConfig") or {"default": None})
        if len(names) != 1:
            raise FakeError("multiple vectors: a target vector is required")
        return names[0]

    @staticmethod
    def _result(obj: StoredObject, request: Any, distance: float | None, score: float | None) -> Any:
        wanted = list(request.properties.non_ref_properties) if request.HasField("properties") else []
        if request.HasField("properties") and request.properties.return_all_nonref_properties:
            wanted = list(obj.properties)
        fields = {
            name: properties_pb2.Value(text_value=str(obj.properties[name]))
            for name in wanted
            if name in obj.properties
        }
        metadata = search_get_pb2.MetadataResult(id=obj.uuid)
        if distance is not None:
            metadata.distance, metadata.distance_present = distance, True
        if score is not None:
            metadata.score, metadata.score_present = score, True
        for name in request.metadata.vectors:
            if name in obj.vectors:
                metadata.vectors.append(
                    base_pb2.Vectors(
                        name=name,
                        vector_bytes=pack(obj.vectors[name]),
                        type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32,
                    )
                )
        return search_get_pb2.SearchResult(
            properties=search_get_pb2.PropertiesResult(non_ref_props=properties_pb2.Properties(fields=fields)),
            metadata=metadata,
        )


def _health_check(request: Any, context: grpc.ServicerContext) -> Any:
    return health_weaviate_pb2.WeaviateHealthCheckResponse(
        status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
    )


def make_grpc_server(index: FakeIndex, api_key: str | None, calls: list[str]) -> tuple[grpc.Server, int]:
    """A gRPC server on a free loopback port (not started); returns it and the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    weaviate_pb2_grpc.add_WeaviateServicer_to_server(FakeWeaviateService(index, api_key, calls), server)
    health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                _health_check,
                request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((health,))
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port
