"""Open the configured vector store."""

from __future__ import annotations

from pathlib import Path

from app.embed.protocol import Embedder
from app.settings import StoreSettings
from app.store.protocol import VectorStore

PROVIDERS = ("lancedb",)


def open_store(
    settings: StoreSettings,
    *,
    path: Path | None = None,
    embedder: Embedder | None,
    create: bool,
) -> VectorStore:
    """Open (or create) a store.

    Args:
        settings: Which provider, and the default path.
        path: Store directory; defaults to ``settings.path``.
        embedder: The embedder used with the store (checked against the one that built it; ``None`` skips the
            check, e.g. for stats; required when creating).
        create: Create the store if there is none.

    Returns:
        The store.

    Raises:
        ValueError: Unknown provider.
        app.store.protocol.StoreNotFoundError: No store there and ``create`` is false.
        app.store.errors.StoreError: The store cannot be used (e.g. built with another embedder).
    """
    target = Path(path) if path is not None else settings.path
    match settings.provider:
        case "lancedb":
            from app.store.lancedb_store import LanceDBStore

            return LanceDBStore.open(target, embedder=embedder, create=create)
        case other:
            raise ValueError(f"unknown store provider {other!r}: valid options are {', '.join(PROVIDERS)}")
