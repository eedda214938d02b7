"""Shared test rules: data and models that are absent skip with a stated reason, except under CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.settings import get_settings

REPO = Path(__file__).resolve().parent.parent


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under CI=true, fail instead (CI must have everything)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this must be available)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    """``<shared_dir>/eval/dev`` (setting SPECRAG_SHARED_DIR, default ../shared relative to the repo)."""
    shared = get_settings().shared_dir
    path = (shared if shared.is_absolute() else REPO / shared) / "eval" / "dev"
    if not (path / "questions.jsonl").is_file():
        unavailable(f"shared eval data not found at {path} (set SPECRAG_SHARED_DIR)")
    return path
