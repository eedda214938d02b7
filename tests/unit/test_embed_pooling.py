"""Mean pooling and normalisation of the ONNX embedder (sentence-transformers' Pooling + Normalize)."""

from __future__ import annotations

import numpy as np

from app.embed.minilm import mean_pool


def test_mean_pool_averages_only_unmasked_tokens_and_normalises() -> None:
    hidden = np.array([[[3.0, 4.0], [100.0, -100.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    mask = np.array([[1, 0], [1, 1]], dtype=np.int64)
    pooled = mean_pool(hidden, mask)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled[0], [0.6, 0.8], atol=1e-6)  # the masked token is ignored
    np.testing.assert_allclose(pooled[1], [2**-0.5, 2**-0.5], atol=1e-6)
