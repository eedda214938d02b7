"""CLI failures: exit 1, one ``error:`` line on stderr, no traceback, and the store left untouched.

These fail before any model is loaded, so they are fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner, Result

from app.cli import app
from app.store.lancedb_store import LanceDBStore
from tests.conftest import require_embedding_model

runner = CliRunner()


class _FakeEmbedder:
    def __init__(self, name: str = "fake-embedder", dim: int = 4) -> None:
        self.name, self.dim = name, dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        raise AssertionError("not used")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _assert_one_line_error(result: Result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture
def existing_store(tmp_path: Path) -> Path:
    path = tmp_path / "kb"
    LanceDBStore.open(path, embedder=_FakeEmbedder(), create=True)
    return path


@pytest.mark.parametrize("with_store", [False, True])
@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.txt", None, "missing.txt: no such file or directory"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "photo.txt: not a text file"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> trailer garbage", "broken.pdf: not a readable PDF"),
        ("bad.jsonl", b'{"id": "a", "title": "t", "text": "x"}\n{oops\n', "bad.jsonl:2: not valid JSON"),
    ],
)
def test_ingest_bad_input(
    tmp_path: Path, existing_store: Path, with_store: bool, name: str, content: bytes | None, needle: str
) -> None:
    good = tmp_path / "good.txt"
    good.write_text("A good file that must not be ingested either.", encoding="utf-8")
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    store = existing_store if with_store else tmp_path / "new-kb"
    before = _snapshot(store)
    result = runner.invoke(app, ["ingest", str(good), str(bad), "--store", str(store)])
    _assert_one_line_error(result, needle)
    assert _snapshot(store) == before
    if not with_store:
        assert not store.exists()


def test_stats_missing_store(tmp_path: Path) -> None:
    store = tmp_path / "nothing-here"
    result = runner.invoke(app, ["stats", "--store", str(store)])
    _assert_one_line_error(result, f"no store at {store}: run `specrag ingest` first")
    assert not store.exists()


def test_stats_of_store_without_model(existing_store: Path) -> None:
    result = runner.invoke(app, ["stats", "--store", str(existing_store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["chunks"] == 0 and info["documents"] == 0
    assert info["embedder"] == "fake-embedder (dim 4)"
    assert info["vector_index"].startswith("none (exact search")


def test_ingest_into_store_of_other_embedder_is_refused(tmp_path: Path, existing_store: Path) -> None:
    require_embedding_model()
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.", encoding="utf-8")
    before = _snapshot(existing_store)
    result = runner.invoke(app, ["ingest", str(doc), "--store", str(existing_store)])
    _assert_one_line_error(result, "was built with embedder fake-embedder (dim 4)")
    assert _snapshot(existing_store) == before


def test_store_path_that_is_a_non_store_directory(tmp_path: Path) -> None:
    require_embedding_model()
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.", encoding="utf-8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "unrelated.txt").write_text("x", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(doc), "--store", str(busy)])
    _assert_one_line_error(result, "not empty and is not a store")
    assert sorted(p.name for p in busy.iterdir()) == ["unrelated.txt"]


def test_keyboard_interrupt_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.store.ingest as ingest_module

    def interrupted(paths: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "load_documents", interrupted)
    result = runner.invoke(app, ["ingest", str(tmp_path), "--store", str(tmp_path / "kb")])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted; re-run to resume"
    assert "Traceback" not in result.output


def test_help_has_examples() -> None:
    result = runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    assert "specrag ingest samples/corpus" in result.stdout
    result = runner.invoke(app, ["stats", "--help"])
    assert "specrag stats --store" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compress-target", "1.5"], "invalid option compress_target"),
        (["--compress-target", "0"], "invalid option compress_target"),
        (["--normalization", "median"], "invalid option score_normalization"),
    ],
)
def test_eval_refuses_bad_knobs_before_reading_anything(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", str(tmp_path / "questions.jsonl"), "--out", str(out), *args])
    _assert_one_line_error(result, needle)
    assert not out.exists()
