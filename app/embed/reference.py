"""The reference all-MiniLM-L6-v2: sentence-transformers on torch (the ``torch`` extra, never needed at run time).

The runtime embedder (:class:`app.embed.minilm.MiniLMEmbedder`) runs an ONNX export of this model. This one is what
that export is made from and checked against (``python -m app.embed.export``, ``bench/bench_embed.py``, the parity
test), and what ``SPECRAG_EMBEDDER__PROVIDER=minilm-torch`` selects for anyone who wants the original float32 vectors.
The Hugging Face offline switches are set before sentence-transformers is imported, so nothing can reach the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from app.embed.minilm import MODEL_NAME, EmbedderUnavailableError, model_dim, model_dir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TORCH_EXTRA_HINT = "install the torch extra: .venv/bin/pip install -e '.[torch]' (make install includes it)"


def set_offline() -> None:
    """Forbid Hugging Face downloads in this process (must run before transformers is imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_sentence_transformer(path: Path) -> SentenceTransformer:
    """The packaged model on torch, CPU, offline.

    Args:
        path: The model directory.

    Returns:
        The loaded model.

    Raises:
        EmbedderUnavailableError: sentence-transformers (the torch extra) is not installed.
    """
    set_offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailableError(f"the torch MiniLM needs sentence-transformers: {TORCH_EXTRA_HINT}") from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class TorchMiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers (implements :class:`app.embed.protocol.Embedder`).

    Args:
        batch_size: Texts per forward pass.
        model_path: Override the model directory (defaults to the packaged one).
    """

    def __init__(self, *, batch_size: int = 32, model_path: Path | None = None) -> None:
        self._batch_size = batch_size
        self._model_path = model_path if model_path is not None else model_dir()
        self._dim = model_dim(self._model_path)
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model name stored with the index (the same as the ONNX embedder's: same model, same vectors within
        the cosine stated in app/embed/models/README.md)."""
        return MODEL_NAME

    @property
    def dim(self) -> int:
        """Vector dimension (384)."""
        return self._dim

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                self._model = load_sentence_transformer(self._model_path)
            return self._model

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts (truncated by the model at 256 word pieces); rows of unit length, float32."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
