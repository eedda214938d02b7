"""Open the configured vector store."""

from __future__ import annotations

from pathlib import Path

from app.embed.protocol import Embedder
from app.settings import StoreSettings
from app.store.protocol import VectorStore

PROVIDERS = ("lancedb", "weaviate")


def weaviate_tenant(settings: StoreSettings, path: Path | None) -> str:
    """The Weaviate tenant of a knowledge base.

    The default knowledge base (``path`` is ``None`` or names ``settings.path``) is ``settings.tenant`` when set;
    otherwise the tenant is the last component of the path (``--store kb`` is tenant ``kb``).

    Args:
        settings: Store settings.
        path: The store path given for this run, if any.

    Returns:
        The validated tenant name.

    Raises:
        ValueError: The derived name is not a valid tenant name.
    """
    from app.store.weaviate_store import tenant_name

    is_default = path is None or Path(path).expanduser().resolve() == settings.path.expanduser().resolve()
    if is_default and settings.tenant:
        return settings.tenant
    return tenant_name(path if path is not None else settings.path)


def open_store(
    settings: StoreSettings,
    *,
    path: Path | None = None,
    embedder: Embedder | None,
    create: bool,
) -> VectorStore:
    """Open (or create) a store.

    Args:
        settings: Which provider, the default path, and the provider's connection settings.
        path: Store directory (lancedb) or knowledge-base name (weaviate: the tenant, by its last component);
            defaults to ``settings.path``.
        embedder: The embedder used with the store (checked against the one that built it; ``None`` skips the
            check, e.g. for stats; required when creating).
        create: Create the store if there is none.

    Returns:
        The store.

    Raises:
        ValueError: Unknown provider, or a path that is not a valid Weaviate tenant name.
        app.store.protocol.StoreNotFoundError: No store there and ``create`` is false.
        app.store.errors.StoreError: The store cannot be used (e.g. built with another embedder, server unreachable).
    """
    match settings.provider:
        case "lancedb":
            from app.store.lancedb_store import LanceDBStore

            target = Path(path) if path is not None else settings.path
            return LanceDBStore.open(target, embedder=embedder, create=create)
        case "weaviate":
            from app.store.weaviate_store import WeaviateStore

            tenant = weaviate_tenant(settings, path)
            return WeaviateStore.open(settings, tenant=tenant, embedder=embedder, create=create)
        case other:
            raise ValueError(f"unknown store provider {other!r}: valid options are {', '.join(PROVIDERS)}")
