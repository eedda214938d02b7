"""Backend factory (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.llm.factory import make_llm
from app.settings import LLMSettings


def test_unknown_provider_lists_valid_options(tmp_path: Path) -> None:
    settings = LLMSettings(model="x").model_copy(update={"provider": "nope"})
    with pytest.raises(ValueError, match="llamacpp"):
        make_llm(settings, threads=1, cache_dir=tmp_path)


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        make_llm(LLMSettings(model="no-such-model"), threads=1, cache_dir=tmp_path)


def test_server_providers_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.embed.factory import make_embedder
    from app.embed.ollama import OllamaEmbedder
    from app.llm.ollama import OllamaModel
    from app.llm.openai_compat import OpenAICompatModel
    from app.settings import Settings

    monkeypatch.setenv("SPECRAG_DRAFTER__PROVIDER", "ollama")
    monkeypatch.setenv("SPECRAG_DRAFTER__MODEL", "qwen2.5-coder:0.5b")
    monkeypatch.setenv("SPECRAG_DRAFTER__BASE_URL", "http://ollama:11434")
    monkeypatch.setenv("SPECRAG_VERIFIER__PROVIDER", "openai")
    monkeypatch.setenv("SPECRAG_VERIFIER__MODEL", "Qwen/Qwen2.5-1.5B-Instruct")
    monkeypatch.setenv("SPECRAG_VERIFIER__BASE_URL", "http://gpu:8000/v1")
    monkeypatch.setenv("SPECRAG_VERIFIER__API_KEY", "secret")
    monkeypatch.setenv("SPECRAG_EMBEDDER__PROVIDER", "ollama")
    monkeypatch.setenv("SPECRAG_EMBEDDER__MODEL", "nomic-embed-text")
    s = Settings()
    assert "secret" not in repr(s.verifier)
    drafter = make_llm(s.drafter, threads=1, cache_dir=tmp_path)
    verifier = make_llm(s.verifier, threads=1, cache_dir=tmp_path)
    assert isinstance(drafter, OllamaModel) and drafter.base_url == "http://ollama:11434"
    assert isinstance(verifier, OpenAICompatModel) and verifier.base_url == "http://gpu:8000/v1"
    assert not drafter.capabilities.score_continuation and verifier.capabilities.score_continuation
    assert isinstance(make_embedder(s.embedder), OllamaEmbedder)


def test_ollama_host_is_the_default_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "otherhost:1234")
    llm = make_llm(LLMSettings(provider="ollama", model="m"), threads=1, cache_dir=tmp_path)
    assert llm.provenance("generate").endswith("at http://otherhost:1234")


def test_openai_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SPECRAG_VERIFIER__BASE_URL"):
        make_llm(LLMSettings(provider="openai", model="m"), threads=1, cache_dir=tmp_path)


def test_ollama_embedder_needs_a_model() -> None:
    from app.embed.factory import make_embedder
    from app.settings import EmbedderSettings

    with pytest.raises(ValueError, match="SPECRAG_EMBEDDER__MODEL"):
        make_embedder(EmbedderSettings(provider="ollama"))


def test_a_partial_model_setting_keeps_the_roles_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import DEFAULT_MODELS, Settings

    monkeypatch.setenv("SPECRAG_DRAFTER__LORA", "some-adapter.gguf")
    monkeypatch.setenv("SPECRAG_VERIFIER__N_CTX", "2048")
    s = Settings()
    assert s.drafter.model == DEFAULT_MODELS["drafter"]["model"] and s.drafter.lora == "some-adapter.gguf"
    assert s.verifier.model == DEFAULT_MODELS["verifier"]["model"] and s.verifier.n_ctx == 2048
    monkeypatch.setenv("SPECRAG_DRAFTER__MODEL", "/models/other.gguf")
    monkeypatch.delenv("SPECRAG_DRAFTER__LORA")
    assert Settings().drafter.model == "/models/other.gguf" and Settings().drafter.lora == ""


def test_the_default_drafter_is_the_tuned_adapter_on_the_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.models import ADAPTER_REGISTRY
    from app.settings import DEFAULT_MODELS, Settings

    for name in ("SPECRAG_DRAFTER__LORA", "SPECRAG_DRAFTER__MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.drafter.lora == "specrag-drafter-v2" == DEFAULT_MODELS["drafter"]["lora"]
    assert ADAPTER_REGISTRY[s.drafter.lora].base == s.drafter.model  # trained on the default drafter model
    monkeypatch.setenv("SPECRAG_DRAFTER__LORA", "")
    assert Settings().drafter.lora == ""  # the base model, one setting away
