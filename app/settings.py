"""Process settings: which backends and models, where data lives.

Read once from the environment (prefix ``SPECRAG_``, nested with ``__``), e.g.::

    SPECRAG_DRAFTER__MODEL=/models/my-drafter.gguf
    SPECRAG_VERIFIER__MODEL=qwen2.5-coder-1.5b-instruct
    SPECRAG_LLM_THREADS=4
    SPECRAG_STORE__PATH=/data/specrag

Per-run knobs (top-n, number of drafts, ...) are not settings: they live in ``graphs.context.Context``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path.home() / ".cache" / "specrag"


class LLMSettings(BaseModel):
    """One language model backend."""

    provider: Literal["llamacpp"] = Field("llamacpp", description="Backend: 'llamacpp' (embedded, in-process).")
    model: str = Field(description="A packaged model name (see `specrag models`) or a path to a GGUF file.")
    n_ctx: int = Field(4096, ge=256, description="Context window per sequence (tokens).")
    n_seq_max: int = Field(8, ge=1, le=64, description="Sequences decoded together in one batch.")
    n_batch: int = Field(512, ge=32, description="Tokens per llama_decode call.")
    batch_window_ms: float = Field(
        30.0, ge=0, description="Concurrent generate calls arriving within this window run as one batch."
    )


class EmbedderSettings(BaseModel):
    """The text embedder."""

    provider: Literal["minilm"] = Field("minilm", description="'minilm': all-MiniLM-L6-v2, offline.")
    batch_size: int = Field(32, ge=1, description="Texts per embedding batch.")


class StoreSettings(BaseModel):
    """The vector store."""

    provider: Literal["lancedb"] = Field("lancedb", description="'lancedb': embedded, on disk.")
    path: Path = Field(Path(".specrag/store"), description="Directory of the default knowledge base.")


class Settings(BaseSettings):
    """All process settings."""

    model_config = SettingsConfigDict(env_prefix="SPECRAG_", env_nested_delimiter="__", extra="ignore")

    drafter: LLMSettings = LLMSettings(model="qwen2.5-coder-0.5b-instruct")
    verifier: LLMSettings = LLMSettings(model="qwen2.5-coder-1.5b-instruct")
    embedder: EmbedderSettings = EmbedderSettings()
    store: StoreSettings = StoreSettings()
    llm_threads: int = Field(2, ge=1, description="CPU threads per model (n_threads).")
    model_cache: Path = Field(
        default_factory=lambda: _default_cache() / "models",
        description="Where packaged GGUF files are assembled and checked.",
    )
    shared_dir: Path = Field(
        Path("../shared"), description="Shared evaluation data (eval/dev/...), used by tests and eval."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings (read from the environment once, on first use)."""
    return Settings()
