"""Build the configured embedder."""

from __future__ import annotations

from functools import lru_cache

from app.embed.protocol import Embedder
from app.settings import EmbedderSettings, get_settings

PROVIDERS = ("minilm",)


def make_embedder(settings: EmbedderSettings) -> Embedder:
    """A new embedder for the settings (the model itself loads lazily, on first use).

    Args:
        settings: Which provider, and its batch size.

    Returns:
        The embedder.

    Raises:
        ValueError: Unknown provider.
        app.embed.minilm.EmbedderUnavailableError: The model package is not installed.
    """
    match settings.provider:
        case "minilm":
            from app.embed.minilm import MiniLMEmbedder

            return MiniLMEmbedder(batch_size=settings.batch_size)
        case other:
            raise ValueError(f"unknown embedder provider {other!r}: valid options are {', '.join(PROVIDERS)}")


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """The process-wide embedder from :func:`app.settings.get_settings` (built once, model loaded lazily)."""
    return make_embedder(get_settings().embedder)
