"""Build language model backends from settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from app.llm.protocol import LanguageModel
from app.settings import LLMSettings

PROVIDERS = ("llamacpp", "ollama", "openai")


def make_llm(settings: LLMSettings, *, threads: int, cache_dir: Path) -> LanguageModel:
    """A new backend for ``settings`` (imports the backend lazily).

    Args:
        settings: Which provider and model.
        threads: CPU threads for the model.
        cache_dir: Where packaged models are assembled.

    Raises:
        ValueError: unknown provider, or the model cannot be resolved.
    """
    match settings.provider:
        case "llamacpp":
            from app.llm.llamacpp import LlamaCppModel
            from app.models import resolve_adapter, resolve_model

            path = resolve_model(settings.model, cache_dir)
            adapter = (
                resolve_adapter(settings.lora, expected_sha256=settings.lora_sha256, base=path)
                if settings.lora
                else None
            )
            return LlamaCppModel(
                path,
                adapter=adapter,
                n_ctx=settings.n_ctx,
                n_seq_max=settings.n_seq_max,
                n_batch=settings.n_batch,
                n_threads=threads,
                batch_window_s=settings.batch_window_ms / 1000.0,
            )
        case "ollama" | "openai" if settings.lora:
            raise ValueError(
                f"a LoRA adapter ({settings.lora}) is applied by the llamacpp backend only; for Ollama, build a model "
                "with a Modelfile ADAPTER line and name it as the model"
            )
        case "ollama":
            from app.llm.ollama import OllamaModel

            return OllamaModel(
                settings.model,
                base_url=settings.base_url,
                timeout_s=settings.timeout_s,
                max_concurrency=settings.max_concurrency,
                top_logprobs=settings.top_logprobs,
                context_window=settings.n_ctx,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            )
        case "openai":
            from app.llm.openai_compat import OpenAICompatModel

            if not settings.base_url:
                raise ValueError(
                    "provider 'openai' needs base_url (e.g. SPECRAG_VERIFIER__BASE_URL=http://gpu:8000/v1)"
                )
            return OpenAICompatModel(
                settings.model,
                base_url=settings.base_url,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                timeout_s=settings.timeout_s,
                max_concurrency=settings.max_concurrency,
                context_window=settings.n_ctx,
            )
        case other:
            raise ValueError(f"Unknown LLM provider {other!r}; valid: {', '.join(PROVIDERS)}")


def get_llm(settings: LLMSettings, *, threads: int, cache_dir: Path) -> LanguageModel:
    """A process-wide shared backend.

    For llamacpp, settings that resolve to the same model file (e.g. a drafter named by its packaged name and a
    verifier given the assembled path) with the same context parameters share one loaded model. Server backends
    are shared when their settings are equal.
    """
    resolved = settings
    if settings.provider == "llamacpp":
        from app.models import resolve_model

        path = resolve_model(settings.model, cache_dir.expanduser())
        resolved = settings.model_copy(update={"model": str(path.resolve())})
    key = tuple(sorted(resolved.model_dump().items()))
    return _cached_llm(key, threads, cache_dir.expanduser().resolve())


@lru_cache(maxsize=8)
def _cached_llm(key: tuple[tuple[str, object], ...], threads: int, cache_dir: Path) -> LanguageModel:
    return make_llm(LLMSettings.model_validate(dict(key)), threads=threads, cache_dir=cache_dir)


def clear_llm_cache() -> None:
    """Forget the shared backends (they are freed when no longer referenced)."""
    _cached_llm.cache_clear()
