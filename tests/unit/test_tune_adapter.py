"""LoRA adapters at load time (app/models.py ``resolve_adapter``, app/llm/factory.py): the sha256 is always checked,
a mismatch or a missing hash is a one-line error, packaged adapters resolve to committed files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.llm.factory import make_llm
from app.models import ADAPTER_REGISTRY, AdapterError, resolve_adapter
from app.settings import LLMSettings


def _adapter(tmp_path: Path, body: bytes = b"GGUF" + b"\0" * 60) -> Path:
    path = tmp_path / "adapter.gguf"
    path.write_bytes(body)
    return path


def test_a_path_is_checked_against_its_sidecar(tmp_path: Path) -> None:
    path = _adapter(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "adapter.gguf.sha256").write_text(f"{digest}  adapter.gguf\n")
    got = resolve_adapter(str(path))
    assert got.sha256 == digest and got.label == "adapter.gguf" and got.path == path


def test_the_setting_overrides_the_sidecar(tmp_path: Path) -> None:
    path = _adapter(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "adapter.gguf.sha256").write_text("0" * 64 + "\n")
    assert resolve_adapter(str(path), expected_sha256=digest).sha256 == digest
    with pytest.raises(AdapterError, match="sha256 mismatch"):
        resolve_adapter(str(path))


def test_a_mismatch_is_one_line(tmp_path: Path) -> None:
    path = _adapter(tmp_path)
    with pytest.raises(AdapterError, match="sha256 mismatch") as info:
        resolve_adapter(str(path), expected_sha256="a" * 64)
    assert "\n" not in str(info.value)


def test_no_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="no sha256"):
        resolve_adapter(str(_adapter(tmp_path)))


def test_not_a_gguf_or_missing(tmp_path: Path) -> None:
    path = _adapter(tmp_path, b"nope" * 4)
    with pytest.raises(AdapterError, match="not a GGUF"):
        resolve_adapter(str(path), expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(AdapterError, match="neither a file nor a packaged adapter"):
        resolve_adapter(str(tmp_path / "missing.gguf"))


def test_packaged_adapters_are_committed_with_their_sha256() -> None:
    for name, spec in ADAPTER_REGISTRY.items():
        got = resolve_adapter(name)
        assert got.sha256 == spec.sha256
        assert got.path.stat().st_size == spec.size
        with pytest.raises(AdapterError, match="disagrees"):
            resolve_adapter(name, expected_sha256="0" * 64)


def test_server_backends_refuse_a_lora(tmp_path: Path) -> None:
    settings = LLMSettings(provider="ollama", model="qwen2.5-coder:0.5b", lora="specrag-drafter-v1")
    with pytest.raises(ValueError, match="Modelfile ADAPTER"):
        make_llm(settings, threads=1, cache_dir=tmp_path)


def test_the_setting_validates_the_hash_format() -> None:
    with pytest.raises(ValueError):
        LLMSettings(model="x", lora="a.gguf", lora_sha256="not-a-hash")
    assert LLMSettings(model="x").lora == ""


def test_the_answer_lead_comes_from_the_adapters_data_card_or_the_setting(tmp_path: Path) -> None:
    import json

    from app.models import adapter_answer_lead, answer_lead

    assert adapter_answer_lead("specrag-drafter-v2") == "The documents say:"  # its data card's config
    assert adapter_answer_lead("") == "" and adapter_answer_lead(str(tmp_path / "none.gguf")) == ""
    path = _adapter(tmp_path)
    assert adapter_answer_lead(str(path)) == ""  # no data card beside it
    (tmp_path / "data_card.json").write_text(json.dumps({"config": {"answer_lead": "Evidence says:"}}))
    assert adapter_answer_lead(str(path)) == "Evidence says:"
    (tmp_path / "data_card.json").write_text("not json")
    assert adapter_answer_lead(str(path)) == ""
    plain = LLMSettings(model="qwen2.5-coder-0.5b-instruct", lora="specrag-drafter-v2")
    assert answer_lead(plain) == "The documents say:"
    assert answer_lead(plain.model_copy(update={"answer_lead": ""})) == ""
    assert answer_lead(plain.model_copy(update={"answer_lead": "Found:"})) == "Found:"
