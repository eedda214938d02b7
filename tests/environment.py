"""The environment of a subprocess under test (``specrag ...``, ``langgraph dev``): the caller's, without any
``SPECRAG_`` variable the test does not set itself.

A developer's shell or a CI job may carry settings such as ``SPECRAG_VERIFIER__PROVIDER``,
``SPECRAG_EMBEDDER__MODEL``, ``SPECRAG_STORE__PROVIDER`` or ``SPECRAG_SERVER__API_KEY``; a subprocess that inherited
them would test another configuration than the test states. Only the two locations of installed data are carried
over, as the test process resolved them (absolute paths): where the packaged models are assembled
(``SPECRAG_MODEL_CACHE``) and the shared evaluation data (``SPECRAG_SHARED_DIR``), so a run pointed at other data
is followed and nothing is assembled twice. Hugging Face is kept offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from app.settings import get_settings

PREFIX = "SPECRAG_"
REPO = Path(__file__).resolve().parent.parent


def _absolute(path: Path) -> Path:
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def subprocess_env(settings: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``os.environ`` without any ``SPECRAG_*`` variable, offline, with the model cache and shared data locations
    this process resolved, then ``settings`` (``SPECRAG_...`` names to values) and ``extra`` (other variables).

    Raises:
        ValueError: a name in ``settings`` does not start with ``SPECRAG_``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    resolved = get_settings()
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "SPECRAG_MODEL_CACHE": str(_absolute(resolved.model_cache)),
            # relative to the repository (tests run from it), as tests/conftest.py reads it
            "SPECRAG_SHARED_DIR": str(
                resolved.shared_dir if resolved.shared_dir.is_absolute() else REPO / resolved.shared_dir
            ),
        }
    )
    for name, value in (settings or {}).items():
        if not name.startswith(PREFIX):
            raise ValueError(f"{name}: not a specrag setting (pass other variables as keyword arguments)")
        env[name] = value
    env.update(extra)
    return env
