"""The packaged model registry (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.models import GGUF_MAGIC, REGISTRY, check_gguf, get_spec, resolve_model


def test_registry_names() -> None:
    assert set(REGISTRY) == {
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
    }
    for spec in REGISTRY.values():
        assert len(spec.sha256) == 64
        assert spec.size > 0
        assert len(spec.modules) == len(spec.packages) == spec.n_parts
    assert get_spec("qwen2.5-coder-1.5b-instruct").n_parts == 22


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("no-such-model", tmp_path)


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="not a GGUF"):
        resolve_model(str(bogus), tmp_path)


def test_existing_gguf_path_is_returned_as_is(tmp_path: Path) -> None:
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00")
    check_gguf(fake)
    assert resolve_model(str(fake), tmp_path / "cache") == fake
