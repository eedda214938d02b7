"""Implementations under the LLM and embedder contracts, and the live-server probes.

* Embedded implementations run for real (llamacpp on SmolLM2-135M; MiniLM); absence skips, or fails under CI=true.
* Server implementations run against wire-level fakes (``servers.py``) replaying documented JSON.
* Live servers only when ``OLLAMA_HOST`` (+ ``SPECRAG_TEST_OLLAMA_MODEL``, ``SPECRAG_TEST_OLLAMA_EMBED_MODEL``) or
  ``SPECRAG_TEST_OPENAI_BASE_URL`` (+ ``SPECRAG_TEST_OPENAI_MODEL``) point at a server that answers a short probe;
  otherwise they skip with the reason (never a failure: a live server is optional, even under CI).

(The fixtures live in the test modules: tests/contract/conftest.py belongs to the store contract.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embed.protocol import Embedder
from app.llm.protocol import LanguageModel
from tests.conftest import unavailable
from tests.contract import servers

LLM_CASES = ["llamacpp", "ollama-wire", "openai-wire", "ollama-live", "openai-live"]
EMBED_CASES = ["minilm", "ollama-wire", "ollama-live"]


@dataclass
class LLMCase:
    """One implementation under contract."""

    name: str
    model: Any
    wire: bool
    """Runs against a documented-fixture fake (values are replayed, not computed)."""

    @property
    def llm(self) -> LanguageModel:
        """The model, typed as the protocol."""
        model: LanguageModel = self.model
        return model


def _probe(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def live_ollama(model_var: str) -> tuple[str, str]:
    """(host, model) of a live Ollama, or skip with the reason."""
    from app.llm.ollama import default_host

    if not os.environ.get("OLLAMA_HOST"):
        pytest.skip("live Ollama: OLLAMA_HOST is not set")
    host = default_host()
    if not _probe(f"{host}/api/version"):
        pytest.skip(f"live Ollama: nothing answers at {host}")
    model = os.environ.get(model_var)
    if not model:
        pytest.skip(f"live Ollama: set {model_var} to a pulled model")
    return host, model


def live_openai() -> tuple[str, str]:
    """(base_url, model) of a live OpenAI-compatible server, or skip with the reason."""
    base = os.environ.get("SPECRAG_TEST_OPENAI_BASE_URL")
    if not base:
        pytest.skip("live OpenAI-compatible server: SPECRAG_TEST_OPENAI_BASE_URL is not set")
    if not _probe(f"{base.rstrip('/')}/models"):
        pytest.skip(f"live OpenAI-compatible server: nothing answers at {base}")
    model = os.environ.get("SPECRAG_TEST_OPENAI_MODEL")
    if not model:
        pytest.skip("live OpenAI-compatible server: set SPECRAG_TEST_OPENAI_MODEL")
    return base, model


def make_llm_case(name: str, *, packaged_model: Callable[[str], Path], ollama_url: str, vllm_url: str) -> LLMCase:
    """Build the implementation called ``name`` (skips when it cannot be provided)."""
    model: Any
    match name:
        case "llamacpp":
            from app.llm.llamacpp import LlamaCppModel

            model = LlamaCppModel(packaged_model("smollm2-135m-instruct"), n_ctx=1024, n_seq_max=4, n_threads=1)
        case "ollama-wire":
            from app.llm.ollama import OllamaModel

            model = OllamaModel(servers.KNOWN_MODEL, base_url=ollama_url, timeout_s=5)
        case "openai-wire":
            from app.llm.openai_compat import OpenAICompatModel

            model = OpenAICompatModel(servers.KNOWN_MODEL, base_url=f"{vllm_url}/v1", timeout_s=5)
        case "ollama-live":
            from app.llm.ollama import OllamaModel

            host, m = live_ollama("SPECRAG_TEST_OLLAMA_MODEL")
            model = OllamaModel(m, base_url=host, timeout_s=120)
        case "openai-live":
            from app.llm.openai_compat import OpenAICompatModel

            base, m = live_openai()
            model = OpenAICompatModel(m, base_url=base, timeout_s=120)
        case _:
            raise AssertionError(name)
    return LLMCase(name=name, model=model, wire=name.endswith("-wire"))


def make_embedder(name: str, *, ollama_url: str) -> Embedder:
    """Build the embedder called ``name`` (skips when it cannot be provided)."""
    match name:
        case "minilm":
            from app.embed.minilm import EmbedderUnavailableError, MiniLMEmbedder

            try:
                return MiniLMEmbedder()
            except EmbedderUnavailableError as exc:
                unavailable(str(exc))
                raise
        case "ollama-wire":
            from app.embed.ollama import OllamaEmbedder

            return OllamaEmbedder("embeddinggemma", base_url=ollama_url, timeout_s=5)
        case "ollama-live":
            from app.embed.ollama import OllamaEmbedder

            host, m = live_ollama("SPECRAG_TEST_OLLAMA_EMBED_MODEL")
            return OllamaEmbedder(m, base_url=host, timeout_s=60)
    raise AssertionError(name)
