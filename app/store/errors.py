"""Store errors beyond the protocol's :class:`app.store.protocol.StoreNotFoundError`."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot be used as asked (wrong directory contents, unreadable metadata, ...)."""


class EmbedderMismatchError(StoreError):
    """The store was built with a different embedder than the one configured."""
