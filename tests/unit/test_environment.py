"""The subprocess environment of the tests (tests/environment.py): no ambient ``SPECRAG_`` setting leaks through."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import get_settings
from tests.environment import subprocess_env


def test_ambient_specrag_settings_are_stripped_and_the_tests_own_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings()  # the test process's own settings, read before the ambient variables below appear
    monkeypatch.setenv("SPECRAG_VERIFIER__PROVIDER", "openai")
    monkeypatch.setenv("SPECRAG_EMBEDDER__PROVIDER", "ollama")
    monkeypatch.setenv("SPECRAG_STORE__PROVIDER", "weaviate")
    monkeypatch.setenv("SPECRAG_SERVER__API_KEY", "ambient-key")
    monkeypatch.setenv("SPECRAG_TEST_SERVER_MODEL", "other-model")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    env = subprocess_env({"SPECRAG_DRAFTER__MODEL": "smollm2-135m-instruct"}, PYTHONUNBUFFERED="1")
    specrag = {k: v for k, v in env.items() if k.startswith("SPECRAG_")}
    assert set(specrag) == {"SPECRAG_DRAFTER__MODEL", "SPECRAG_MODEL_CACHE", "SPECRAG_SHARED_DIR"}
    assert specrag["SPECRAG_DRAFTER__MODEL"] == "smollm2-135m-instruct"
    assert Path(specrag["SPECRAG_MODEL_CACHE"]).is_absolute() and Path(specrag["SPECRAG_SHARED_DIR"]).is_absolute()
    assert env["UNRELATED_VARIABLE"] == "kept" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_a_setting_must_be_named_as_one() -> None:
    with pytest.raises(ValueError, match="not a specrag setting"):
        subprocess_env({"DRAFTER__MODEL": "x"})
