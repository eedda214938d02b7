"""The runtime embedder (int8 MiniLM on onnxruntime) against the torch reference, its file check, its export, and
that a question answered on the runtime path never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.embed.export import check_texts, main
from app.embed.minilm import ONNX_PATH, ONNX_SHA256, EmbedderUnavailableError, MiniLMEmbedder
from app.embed.reference import TorchMiniLMEmbedder
from app.models import sha256_file
from tests.conftest import require_embedding_model

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _model() -> None:
    require_embedding_model()


def test_vectors_match_the_torch_model_and_rank_alike() -> None:
    texts = check_texts()
    ours = MiniLMEmbedder().embed(texts)
    theirs = TorchMiniLMEmbedder().embed(texts)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.99, cosines.min()
    # Retrieval: each question's nearest sample passage is the same under both.
    n_questions = 6
    passages_ours, passages_theirs = ours[:-n_questions], theirs[:-n_questions]
    for q_ours, q_theirs in zip(ours[-n_questions:], theirs[-n_questions:], strict=True):
        assert int(np.argmax(passages_ours @ q_ours)) == int(np.argmax(passages_theirs @ q_theirs))


def test_a_damaged_model_file_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "model.onnx"
    data = bytearray(ONNX_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    embedder = MiniLMEmbedder(onnx_path=damaged, sha256=ONNX_SHA256)
    with pytest.raises(EmbedderUnavailableError, match="sha256"):
        embedder.embed(["a text"])
    with pytest.raises(EmbedderUnavailableError, match="missing"):
        MiniLMEmbedder(onnx_path=tmp_path / "absent.onnx").embed(["a text"])


def test_the_committed_file_is_what_the_export_command_makes(tmp_path: Path) -> None:
    out = tmp_path / "export.onnx"
    assert main(["--out", str(out)]) == 0
    assert sha256_file(out) == sha256_file(ONNX_PATH) == ONNX_SHA256


def test_ingest_and_search_do_not_import_torch(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from app.embed.factory import make_embedder\n"
        "from app.settings import EmbedderSettings, StoreSettings\n"
        "from app.store.factory import open_store\n"
        "from app.store.ingest import ingest_paths\n"
        "embedder = make_embedder(EmbedderSettings())\n"
        f"store = open_store(StoreSettings(), path=Path({str(tmp_path / 'kb')!r}), embedder=embedder, create=True)\n"
        f"ingest_paths([Path({str(REPO / 'samples' / 'corpus')!r})], store, embedder, progress=False)\n"
        "q = 'Who deciphered the hieroglyphs?'\n"
        "hits = store.search(q, embedder.embed([q])[0], k=3)\n"
        "assert hits, 'no hits'\n"
        "heavy = ('torch', 'sentence_transformers', 'transformers')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
