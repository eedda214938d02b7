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
