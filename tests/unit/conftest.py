"""Unit tests run the graphs on scripted fakes: their reflection decides on a scripted confidence (a steep function
of the best draft's P(Yes), ``tests.fakes.p_yes_confidence``), not on the fitted model's coefficients, so a refit
never changes what graph logic they check. ``tests/unit/test_confidence.py`` checks the bundled model itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import p_yes_confidence


@pytest.fixture(autouse=True, scope="session")
def scripted_confidence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the default confidence model (``app.confidence.model.default_path``) at the scripted one."""
    from app.confidence import model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "default_path", Path(p_yes_confidence(tmp_path_factory.mktemp("confidence"))))
        yield
