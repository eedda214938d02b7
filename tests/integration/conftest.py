"""Fixtures that locate packaged models (skip when absent, fail under CI=true)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from app.models import ModelNotInstalledError, resolve_model
from app.settings import get_settings
from tests.conftest import unavailable


@pytest.fixture(scope="session")
def packaged_model() -> Callable[[str], Path]:
    """A function: packaged model name -> assembled GGUF path (skips if it cannot be provided)."""

    def find(name: str) -> Path:
        if importlib.util.find_spec("llama_cpp") is None:
            unavailable("llama-cpp-python is not installed (run `make install`)")
        try:
            return resolve_model(name, get_settings().model_cache)
        except ModelNotInstalledError as exc:
            unavailable(str(exc))
        raise AssertionError("unreachable")

    return find
