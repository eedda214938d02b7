"""Embeddings from an Ollama server (``/api/embed``, https://docs.ollama.com/api/embed), L2-normalised here."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.llm.ollama import call, default_host, make_client


class OllamaEmbedder:
    """Embedder on an Ollama embedding model (implements :class:`app.embed.protocol.Embedder`).

    Args:
        model: The embedding model name (e.g. ``nomic-embed-text``).
        base_url: Server URL (default: ``$OLLAMA_HOST`` or http://127.0.0.1:11434).
        timeout_s: Per-request timeout.
        batch_size: Texts per request.
        dim: The vector dimension if known; otherwise one request on first use discovers it.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        batch_size: int = 32,
        dim: int | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url or default_host()
        self.timeout_s = timeout_s
        self._batch_size = batch_size
        self._dim = dim
        self._client = make_client(self.base_url, timeout_s=timeout_s)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """``ollama:<model>`` (stored with the index)."""
        return f"ollama:{self.model}"

    @property
    def dim(self) -> int:
        """Vector dimension (discovered with one request when not configured)."""
        with self._lock:
            if self._dim is None:
                self._dim = int(self._request(["dimension probe"]).shape[1])
            return self._dim

    def _request(self, texts: list[str]) -> npt.NDArray[np.float32]:
        resp = call(self.base_url, self.model, self.timeout_s, self._client.embed, input=texts)
        vectors = np.asarray(resp.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"Ollama at {self.base_url} returned {vectors.shape[0] if vectors.ndim else 0} embeddings "
                f"for {len(texts)} texts (model {self.model!r})"
            )
        return vectors

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts; rows are L2-normalised (a zero vector stays zero).

        Raises:
            app.llm.protocol.BackendUnavailableError: the server cannot be reached, timed out, or lacks the model.
            ValueError: the server returned vectors of an unexpected shape or dimension.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._request(list(texts[i : i + self._batch_size])) for i in range(0, len(texts), self._batch_size)]
        vectors = np.concatenate(parts, axis=0)
        expected = self._dim if self._dim is not None else vectors.shape[1]
        if vectors.shape[1] != expected:
            raise ValueError(f"model {self.model!r} returned {vectors.shape[1]}-d vectors, expected {expected}")
        self._dim = expected
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)
