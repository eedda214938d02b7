"""Where the project's data folders are: ``prompts/`` and ``adapters/`` live beside ``app/`` in a checkout (and in
an editable install), and under ``<prefix>/share/specrag/`` in an installed wheel (``pyproject.toml``'s
``data-files``), because a wheel cannot place a top-level folder next to its packages without claiming a
top-level name in ``site-packages``."""

from __future__ import annotations

import site
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
"""The folder that holds ``app/``: the repository root in a checkout or editable install, ``site-packages`` in a
wheel install."""

SHARE = Path("share") / "specrag"
"""Where a wheel puts the data folders, relative to the install prefix."""


def data_dir(name: str, *, checkout: Path = CHECKOUT, prefixes: tuple[str, ...] | None = None) -> Path:
    """The data folder ``name`` (``"prompts"``, ``"adapters"``).

    The checkout's own folder when the code runs from a checkout (``pyproject.toml`` beside ``app/``), else the
    first installed copy among the prefixes (the environment's, then the user's); when there is none, the
    checkout's path, so that an error names where the file was expected.

    Args:
        name: The folder's name at the repository root.
        checkout: The folder holding ``app/`` (tests point it elsewhere).
        prefixes: Install prefixes to search (default: ``sys.prefix``, then ``site.USER_BASE``).
    """
    own = checkout / name
    if (checkout / "pyproject.toml").is_file():
        return own
    for prefix in prefixes if prefixes is not None else _prefixes():
        installed = Path(prefix) / SHARE / name
        if installed.is_dir():
            return installed
    return own


def _prefixes() -> tuple[str, ...]:
    user = site.USER_BASE
    return (sys.prefix, user) if user else (sys.prefix,)
