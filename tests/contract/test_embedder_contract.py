"""The ``Embedder`` contract, run by every implementation (see conftest.py for which and how)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from app.embed.protocol import Embedder
from app.llm.protocol import BackendUnavailableError
from tests.contract import servers
from tests.contract.cases import EMBED_CASES, make_embedder


@pytest.fixture(scope="module")
def ollama_wire() -> Iterator[str]:
    """A fake Ollama replaying the documented responses."""
    with servers.serve(servers.ollama_routes) as url:
        yield url


@pytest.fixture(scope="module", params=EMBED_CASES)
def embedder_case(request: pytest.FixtureRequest, ollama_wire: str) -> Embedder:
    """Each embedder implementation in turn."""
    return make_embedder(request.param, ollama_url=ollama_wire)


TEXTS = ["Jean-François Champollion deciphered the hieroglyphs.", "The Rosetta Stone is in the British Museum.", "x"]


def test_is_an_embedder(embedder_case: Embedder) -> None:
    assert isinstance(embedder_case, Embedder)
    assert embedder_case.name
    assert embedder_case.dim > 0


def test_embed_shape_dtype_unit_rows(embedder_case: Embedder) -> None:
    vectors = embedder_case.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder_case.dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_is_deterministic_and_batch_independent(embedder_case: Embedder) -> None:
    together = embedder_case.embed(TEXTS)
    alone = np.stack([embedder_case.embed([t])[0] for t in TEXTS])
    assert np.allclose(together, alone, atol=1e-4)


def test_same_text_same_vector_different_texts_different_vectors(embedder_case: Embedder) -> None:
    """A constant embedder fails here: the same text gives the same vector (also twice in one batch), different
    texts give clearly different vectors."""
    vectors = embedder_case.embed([*TEXTS, TEXTS[0]])
    assert np.allclose(vectors[0], vectors[-1], atol=1e-5)
    assert np.allclose(vectors[0], embedder_case.embed([TEXTS[0]])[0], atol=1e-4)
    distinct = vectors[: len(TEXTS)]
    cosine = distinct @ distinct.T
    off_diagonal = cosine[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.99, cosine


def test_embed_nothing(embedder_case: Embedder) -> None:
    assert embedder_case.embed([]).shape == (0, embedder_case.dim)


def test_ollama_embedder_errors_are_clear() -> None:
    from app.embed.ollama import OllamaEmbedder

    url = servers.refusing_url()
    with pytest.raises(BackendUnavailableError, match="cannot connect"):
        OllamaEmbedder("embeddinggemma", base_url=url, timeout_s=1, dim=10).embed(["a"])
    hang = servers.HangingServer()
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="did not answer"):
            OllamaEmbedder("embeddinggemma", base_url=hang.url, timeout_s=0.3, dim=10).embed(["a"])
        assert time.monotonic() - start < 2
    finally:
        hang.close()
    with servers.serve(servers.ollama_routes) as live, pytest.raises(BackendUnavailableError, match="ollama pull"):
        OllamaEmbedder("no-such-model", base_url=live, timeout_s=2).embed(["a"])
