"""Process settings: which backends and models, where data lives.

Read once from the environment (prefix ``SPECRAG_``, nested with ``__``), e.g.::

    SPECRAG_DRAFTER__MODEL=/models/my-drafter.gguf
    SPECRAG_VERIFIER__MODEL=qwen2.5-coder-1.5b-instruct
    SPECRAG_LLM_THREADS=4
    SPECRAG_STORE__PATH=/data/specrag
    SPECRAG_STORE__PROVIDER=weaviate  SPECRAG_STORE__URL=http://weaviate:8080
    SPECRAG_CHECKPOINTER__PROVIDER=postgres  SPECRAG_CHECKPOINTER__URL=postgresql://specrag:...@db:5432/specrag

Per-run knobs (top-n, number of drafts, ...) are not settings: they live in ``graphs.context.Context``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path.home() / ".cache" / "specrag"


class LLMSettings(BaseModel):
    """One language model backend (the drafter and the verifier each have their own, possibly different).

    ``SPECRAG_DRAFTER__PROVIDER=ollama`` / ``SPECRAG_VERIFIER__PROVIDER=openai`` switch backends; ``base_url``,
    ``api_key``, ``timeout_s``, ``max_concurrency`` and ``top_logprobs`` apply to the server backends only, the
    ``n_*`` and ``batch_window_ms`` fields to llamacpp only.
    """

    provider: Literal["llamacpp", "ollama", "openai"] = Field(
        "llamacpp",
        description="Backend: 'llamacpp' (embedded, in-process), 'ollama' (an Ollama server), "
        "'openai' (an OpenAI-compatible server; prompt log-probabilities need vLLM).",
    )
    model: str = Field(
        description="llamacpp: a packaged model name (see `specrag models`) or a path to a GGUF file; "
        "ollama/openai: the model name the server knows (e.g. 'qwen2.5-coder:1.5b', 'Qwen/Qwen2.5-1.5B-Instruct')."
    )
    base_url: str | None = Field(
        None,
        description="Server URL. ollama: default $OLLAMA_HOST, else http://127.0.0.1:11434; "
        "openai: required, e.g. http://gpu:8000/v1.",
    )
    api_key: SecretStr | None = Field(None, description="Bearer token for the server (openai; ollama if set).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout for server backends (seconds).")
    max_concurrency: int = Field(4, ge=1, description="Concurrent requests to the server (server backends).")
    top_logprobs: int = Field(
        20, ge=1, le=20, description="Alternatives per position requested from a server (ollama candidates)."
    )
    n_ctx: int = Field(4096, ge=256, description="Context window per sequence (tokens).")
    n_seq_max: int = Field(8, ge=1, le=64, description="Sequences decoded together in one batch.")
    n_batch: int = Field(512, ge=32, description="Tokens per llama_decode call.")
    batch_window_ms: float = Field(
        30.0, ge=0, description="Concurrent generate calls arriving within this window run as one batch."
    )
    lora: str = Field(
        "",
        description="llamacpp: a LoRA adapter applied to the model: a packaged adapter name (see `python -m "
        "app.models list`, e.g. 'specrag-drafter-v1') or a path to a GGUF LoRA file; empty: the base model. Ollama "
        "takes an adapter through a Modelfile ADAPTER line instead.",
    )
    answer_lead: str | None = Field(
        None,
        description="The opening a tuned drafter writes before an answer (e.g. 'The documents say:'), which lets "
        "abstain_threshold weigh answering against abstaining; None: the lora adapter's data card says; empty: none.",
    )
    lora_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 of a lora given as a path (default: the '<adapter>.sha256' file beside it, "
        "written by `specrag tune convert`); packaged adapters are checked against the registry.",
    )


class EmbedderSettings(BaseModel):
    """The text embedder (``SPECRAG_EMBEDDER__PROVIDER=ollama`` plus ``..__MODEL`` for an Ollama server)."""

    provider: Literal["minilm", "minilm-torch", "ollama"] = Field(
        "minilm",
        description="'minilm': all-MiniLM-L6-v2 int8 on onnxruntime, offline; 'minilm-torch': the same model on "
        "torch (the torch extra; float32 reference vectors); 'ollama': /api/embed of an Ollama server.",
    )
    batch_size: int = Field(32, ge=1, description="Texts per embedding batch.")
    threads: int | None = Field(None, ge=1, description="minilm: onnxruntime threads (default: one per physical core).")
    model: str | None = Field(None, description="ollama: the embedding model name (e.g. 'nomic-embed-text').")
    base_url: str | None = Field(
        None, description="ollama: server URL; default $OLLAMA_HOST, else http://127.0.0.1:11434."
    )
    timeout_s: float = Field(60.0, gt=0, description="ollama: per-request timeout (seconds).")
    dim: int | None = Field(
        None, ge=1, description="ollama: vector dimension; default: discovered with one request on first use."
    )


class StoreSettings(BaseModel):
    """The vector store.

    With ``lancedb`` a knowledge base is a directory (``path``). With ``weaviate`` it is a tenant of one
    multi-tenant collection on a Weaviate server; the tenant name is ``tenant`` if set, else the last component of
    the store path (``--store kb/`` is tenant ``kb``).
    """

    provider: Literal["lancedb", "weaviate"] = Field(
        "lancedb", description="'lancedb': embedded, on disk; 'weaviate': a Weaviate server (url, grpc_port)."
    )
    path: Path = Field(
        Path(".specrag/store"),
        description="Default knowledge base: a directory (lancedb) or, by its last component, a tenant (weaviate).",
    )
    url: str = Field("http://localhost:8080", description="Weaviate REST endpoint (http or https).")
    grpc_port: int = Field(50051, ge=1, le=65535, description="Weaviate gRPC port (same host as url).")
    api_key: SecretStr | None = Field(None, description="Weaviate API key (sent as a bearer token); none if unset.")
    collection: str = Field(
        "SpecragChunk", pattern=r"^[A-Z][_0-9A-Za-z]*$", description="Weaviate collection (class) holding chunks."
    )
    tenant: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Tenant of the default knowledge base (weaviate); default: the last component of path.",
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Hybrid weight (weaviate): 1 = pure vector, 0 = pure BM25.")
    fusion: Literal["relative_score", "ranked"] = Field(
        "relative_score",
        description="Hybrid fusion (weaviate): 'relative_score' (min-max normalised scores, Weaviate's default) "
        "or 'ranked' (reciprocal rank fusion, as the embedded store).",
    )
    timeout_s: float = Field(30.0, gt=0, description="Weaviate query and insert timeout (seconds).")
    init_timeout_s: float = Field(5.0, gt=0, description="Weaviate connect/readiness timeout (seconds).")
    batch_size: int = Field(200, ge=1, description="Objects per Weaviate batch request.")


class CheckpointerSettings(BaseModel):
    """Where LangGraph keeps thread state (chat threads, interrupts, history)."""

    provider: Literal["memory", "sqlite", "postgres"] = Field(
        "sqlite", description="'memory' (lost on exit), 'sqlite' (one file, one process), 'postgres' (shared)."
    )
    path: Path = Field(Path(".specrag/checkpoints.sqlite"), description="SQLite database file (sqlite).")
    url: SecretStr | None = Field(
        None, description="Postgres connection URL, e.g. postgresql://user:pass@host:5432/db (postgres)."
    )
    pool_size: int = Field(10, ge=1, description="Postgres connections in the pool (postgres).")


class OtelSettings(BaseModel):
    """OpenTelemetry export of run traces (``SPECRAG_TRACES__OTEL__*``): off by default."""

    enabled: bool = Field(False, description="Export every saved run trace as OTLP spans (needs the `otel` extra).")
    protocol: Literal["http/protobuf", "grpc"] = Field(
        "http/protobuf", description="OTLP transport: 'http/protobuf' (port 4318) or 'grpc' (port 4317)."
    )
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="Where spans go: the full OTLP/HTTP traces URL (…/v1/traces), or host:port for gRPC.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers, e.g. an API key of a hosted backend."
    )
    insecure: bool = Field(True, description="gRPC without TLS (loopback or a trusted network).")
    timeout_s: float = Field(10.0, gt=0, description="Per-export timeout (seconds); a failed export is logged only.")
    service_name: str = Field("specrag", description="The `service.name` resource attribute.")
    project: str | None = Field(
        None, description="`openinference.project.name` resource attribute (the project in Arize Phoenix)."
    )
    content: bool = Field(
        True, description="Include the question, answers and rationales as attributes (off: scores and timings only)."
    )


class TraceSettings(BaseModel):
    """Where run traces are kept (``specrag trace RUN_ID``, GET /v1/traces/{run_id}) and where they are exported."""

    backend: Literal["auto", "sqlite", "postgres"] = Field(
        "auto",
        description="'sqlite' (one file per replica), 'postgres' (one store for all replicas), or 'auto': postgres "
        "when the checkpointer is postgres (its server, unless url is set), else sqlite.",
    )
    path: Path = Field(
        Path(".specrag/traces.sqlite"), description="SQLite file with one JSON trace per run (created on first run)."
    )
    url: SecretStr | None = Field(
        None, description="Postgres URL of the trace store (default: the checkpointer's URL), postgresql://..."
    )
    pool_size: int = Field(4, ge=1, description="Postgres connections in the trace store's pool.")
    connect_timeout_s: float = Field(10.0, gt=0, description="How long to wait for a Postgres connection (seconds).")
    otel: OtelSettings = OtelSettings()


class ServerSettings(BaseModel):
    """The chat endpoint (``specrag serve``)."""

    host: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_key: SecretStr | None = Field(
        None, description="Bearer token every /v1 request must carry; none: no auth (loopback only, or --allow-public)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (413 above it).")
    max_concurrent_runs: int = Field(1, ge=1, description="Graph runs at once; further requests wait their turn.")
    max_queued_runs: int = Field(
        8,
        ge=0,
        description="Requests that may wait for a run slot; one more gets 429 with Retry-After at once (0: no queue).",
    )
    queue_timeout_s: float = Field(600.0, gt=0, description="How long a request waits for a run slot (503 after).")
    run_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Longest graph run: past it the client gets 504 and the trace names the node that was running "
        "(a backend call that hangs keeps its run slot until it returns: a thread cannot be killed).",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none: CORS off).")
    stream_chunk_chars: int = Field(24, ge=1, description="Characters per streamed content delta (about).")


DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "drafter": {"model": "qwen2.5-coder-0.5b-instruct", "lora": "specrag-drafter-v2"},
    "verifier": {"model": "qwen2.5-coder-1.5b-instruct"},
}
"""The embedded default model (and adapter) of each role."""


class Settings(BaseSettings):
    """All process settings."""

    model_config = SettingsConfigDict(env_prefix="SPECRAG_", env_nested_delimiter="__", extra="ignore")

    drafter: LLMSettings = LLMSettings(**DEFAULT_MODELS["drafter"])
    verifier: LLMSettings = LLMSettings(**DEFAULT_MODELS["verifier"])
    embedder: EmbedderSettings = EmbedderSettings()
    store: StoreSettings = StoreSettings()
    checkpointer: CheckpointerSettings = CheckpointerSettings()
    traces: TraceSettings = TraceSettings()
    server: ServerSettings = ServerSettings()
    llm_threads: int = Field(2, ge=1, description="CPU threads per model (n_threads).")
    model_cache: Path = Field(
        default_factory=lambda: _default_cache() / "models",
        description="Where packaged GGUF files are assembled and checked.",
    )
    shared_dir: Path = Field(
        Path("../shared"), description="Shared evaluation data (eval/dev/...), used by tests and eval."
    )

    @property
    def dev_dir(self) -> Path:
        """``<shared_dir>/eval/dev``, absolute (a relative ``shared_dir`` is taken from the working directory)."""
        return self.shared_dir.absolute() / "eval" / "dev"

    @model_validator(mode="before")
    @classmethod
    def _complete_models(cls, data: Any) -> Any:
        """A partial ``SPECRAG_DRAFTER__*`` / ``SPECRAG_VERIFIER__*`` (say only ``..__N_CTX`` or ``..__LORA``) keeps
        the role's default model; without a model of its own it also keeps the default adapter."""
        if not isinstance(data, dict):
            return data
        for role, defaults in DEFAULT_MODELS.items():
            part = data.get(role)
            if isinstance(part, dict) and "model" not in part:
                data = {**data, role: {**defaults, **part}}
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings (read from the environment once, on first use)."""
    return Settings()
