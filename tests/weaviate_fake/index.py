"""The fake Weaviate's data: collections (class JSON), tenants, objects; exact cosine, BM25 and hybrid fusion."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Weaviate's "en" stopword preset (abridged): removed from BM25 queries.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


class FakeError(Exception):
    """A request the real server would refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def fixture(name: str) -> Any:
    """A JSON fixture from ``fixtures/`` (see fixtures/SOURCES.md)."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def tokens(text: str) -> list[str]:
    """Weaviate's ``word`` tokenization: lower-cased runs of letters and digits."""
    return re.findall(r"[0-9a-z]+", text.lower())


@dataclass
class StoredObject:
    """One object: uuid, properties and named vectors."""

    uuid: str
    properties: dict[str, Any]
    vectors: dict[str, list[float]]


@dataclass
class Collection:
    """A class: its JSON definition and, per tenant, its objects."""

    schema: dict[str, Any]
    tenants: dict[str, dict[str, StoredObject]] = field(default_factory=dict)

    @property
    def multi_tenant(self) -> bool:
        """Whether multi-tenancy is enabled."""
        return bool(self.schema["multiTenancyConfig"]["enabled"])


def complete_class(posted: dict[str, Any]) -> dict[str, Any]:
    """The class JSON the server stores for a POST /v1/schema body: the body plus the documented defaults."""
    defaults = fixture("class_defaults.json")
    schema = copy.deepcopy(posted)
    for key in ("invertedIndexConfig", "multiTenancyConfig", "replicationConfig", "shardingConfig"):
        merged = copy.deepcopy(defaults[key])
        for sub, value in (schema.get(key) or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(sub), dict):
                merged[sub].update(value)
            else:
                merged[sub] = value
        schema[key] = merged
    for vector in (schema.get("vectorConfig") or {}).values():
        index = copy.deepcopy(defaults["vectorIndexConfigHnsw"])
        index.update(vector.get("vectorIndexConfig") or {})
        vector["vectorIndexConfig"] = index
        vector.setdefault("vectorIndexType", "hnsw")
    for prop in schema.get("properties", []):
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", True)
        prop.setdefault("tokenization", "word")
    schema.setdefault("vectorizer", "none")
    schema.setdefault("moduleConfig", {})
    return schema


class FakeIndex:
    """All collections, guarded by one lock (the servers are threaded)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}

    # ------------------------------------------------------------------ schema

    def collection(self, name: str) -> Collection:
        """The collection called ``name`` (class names are capitalised by the server)."""
        coll = self.collections.get(name[:1].upper() + name[1:])
        if coll is None:
            raise FakeError(f"class {name!r} not found", status=404)
        return coll

    def create_class(self, posted: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/schema."""
        name = str(posted.get("class", ""))
        name = name[:1].upper() + name[1:]
        if not name:
            raise FakeError("class name is required")
        if name in self.collections:
            raise FakeError(f"class name {name!r} already exists")
        schema = complete_class({**posted, "class": name})
        self.collections[name] = Collection(schema=schema)
        return schema

    def create_tenants(self, class_name: str, names: Sequence[str]) -> None:
        """POST /v1/schema/{class}/tenants."""
        coll = self.collection(class_name)
        if not coll.multi_tenant:
            raise FakeError(f"multi-tenancy is not enabled for class {class_name!r}")
        for name in names:
            if not TENANT_RE.fullmatch(name):
                raise FakeError(f"tenant name {name!r} is invalid")
            coll.tenants.setdefault(name, {})

    def objects(self, class_name: str, tenant: str) -> dict[str, StoredObject]:
        """The objects of one tenant (the real server refuses a missing or superfluous tenant)."""
        coll = self.collection(class_name)
        if coll.multi_tenant:
            if not tenant:
                raise FakeError(f"class {class_name} has multi-tenancy enabled, but request was without tenant")
            if tenant not in coll.tenants:
                raise FakeError(f'tenant not found: "{tenant}"')
            return coll.tenants[tenant]
        if tenant:
            raise FakeError(f"class {class_name} has multi-tenancy disabled, but request was with tenant")
        return coll.tenants.setdefault("", {})

    # ------------------------------------------------------------------ scoring

    @staticmethod
    def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
        """``1 - cos(a, b)`` (Weaviate's cosine distance)."""
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        return 1.0 - (dot / (na * nb) if na and nb else 0.0)

    def bm25(
        self, class_name: str, candidates: Sequence[StoredObject], query: str, properties: Sequence[str]
    ) -> dict[str, float]:
        """Okapi BM25 (k1, b from the class config) summed over ``properties``; objects scoring 0 are left out."""
        schema = self.collection(class_name).schema
        k1 = float(schema["invertedIndexConfig"]["bm25"]["k1"])
        b = float(schema["invertedIndexConfig"]["bm25"]["b"])
        searchable = [
            p["name"] for p in schema.get("properties", []) if p.get("indexSearchable") and p["tokenization"] == "word"
        ]
        props = [p.split("^")[0] for p in properties] or searchable
        terms = [t for t in tokens(query) if t not in STOPWORDS]
        scores: dict[str, float] = {}
        n = len(candidates)
        for prop in props:
            docs = {o.uuid: tokens(str(o.properties.get(prop, ""))) for o in candidates}
            avg = sum(len(d) for d in docs.values()) / n if n else 0.0
            for term in set(terms):
                df = sum(1 for d in docs.values() if term in d)
                if not df:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                for uuid, doc in docs.items():
                    tf = doc.count(term)
                    if tf:
                        norm = tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / (avg or 1.0)))
                        scores[uuid] = scores.get(uuid, 0.0) + idf * norm
        return scores


Predicate = Callable[[StoredObject], bool]


def relative_score_fusion(
    rankings: Sequence[tuple[float, dict[str, float]]],
) -> dict[str, float]:
    """Weaviate's ``relativeScore`` fusion: min-max normalise each ranking's scores, weight, sum."""
    fused: dict[str, float] = {}
    for weight, scores in rankings:
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        for uuid, score in scores.items():
            norm = (score - low) / (high - low) if high > low else 1.0
            fused[uuid] = fused.get(uuid, 0.0) + weight * norm
    return fused


def ranked_fusion(rankings: Sequence[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Weaviate's ``ranked`` fusion: sum of ``weight / (60 + rank)`` (rank from 0) over the rankings."""
    fused: dict[str, float] = {}
    for weight, scores in rankings:
        order = sorted(scores, key=lambda u: (-scores[u], u))
        for rank, uuid in enumerate(order):
            fused[uuid] = fused.get(uuid, 0.0) + weight / (60 + rank)
    return fused
