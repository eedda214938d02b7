"""Build the configured embedder."""

from __future__ import annotations

from functools import lru_cache

from app.embed.protocol import Embedder
from app.settings import EmbedderSettings, get_settings

PROVIDERS = ("minilm", "minilm-torch", "ollama")


def make_embedder(settings: EmbedderSettings) -> Embedder:
    """A new embedder for the settings (the model itself loads lazily, on first use).

    Args:
        settings: Which provider, its model and server (ollama), and the batch size.

    Returns:
        The embedder.

    Raises:
        ValueError: Unknown provider.
        app.embed.minilm.EmbedderUnavailableError: The model package is not installed.
    """
    match settings.provider:
        case "minilm":
            from app.embed.minilm import MiniLMEmbedder

            return MiniLMEmbedder(threads=settings.threads)
        case "minilm-torch":
            from app.embed.reference import TorchMiniLMEmbedder

            return TorchMiniLMEmbedder(batch_size=settings.batch_size)
        case "ollama":
            from app.embed.ollama import OllamaEmbedder

            if not settings.model:
                raise ValueError("embedder provider 'ollama' needs a model (SPECRAG_EMBEDDER__MODEL=nomic-embed-text)")
            return OllamaEmbedder(
                settings.model,
                base_url=settings.base_url,
                timeout_s=settings.timeout_s,
                batch_size=settings.batch_size,
                dim=settings.dim,
            )
        case other:
            raise ValueError(f"unknown embedder provider {other!r}: valid options are {', '.join(PROVIDERS)}")


def get_embedder(settings: EmbedderSettings | None = None) -> Embedder:
    """A shared embedder: one per distinct settings in this process (the model loads lazily, once).

    Args:
        settings: Embedder settings; defaults to those of :func:`app.settings.get_settings`.

    Returns:
        The embedder (the same object for equal settings).
    """
    chosen = settings if settings is not None else get_settings().embedder
    return _cached_embedder(chosen.model_dump_json())


@lru_cache(maxsize=4)
def _cached_embedder(settings_json: str) -> Embedder:
    return make_embedder(EmbedderSettings.model_validate_json(settings_json))
