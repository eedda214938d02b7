"""The calibrated confidence model: logistic regression over ``ConfidenceInputs``, kept as a small JSON file.

The file holds the standardisation and the coefficients that scikit-learn fitted (``app.confidence.fit``), the
feature names they follow, and how it was fitted (calibration set, drafter, pool figures, the chosen threshold).
Reading it needs no scikit-learn: the probability is ``sigmoid(coef · (x - mean) / scale + intercept)``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from app.confidence.features import (
    CLOSED_BOOK_FEATURES,
    FEATURES,
    OPEN_BOOK_FEATURES,
    ConfidenceInputs,
    unknown_features,
)

FORMAT = 1
"""Version of the file format this code reads."""


SelfConsistencyOf = Literal["answer_and_rationale", "answer_given_rationale"]
"""What the verifier's ρ_sc measures (``graphs.context.Context.self_consistency_of``)."""

BUNDLED = Path(__file__).resolve().parent / "specrag-confidence-v5.json"
"""The model shipped with the project (fitted on held-out pool questions; see its ``fit`` section), for drafts
scored with the default ``self_consistency_of='answer_given_rationale'``."""

BUNDLED_PAPER_SCORING = BUNDLED.with_name("specrag-confidence-v1.json")
"""The earlier bundled model, for drafts scored the paper's way (``answer_and_rationale``; its threshold 0.60)."""

BUNDLED_FOR: dict[SelfConsistencyOf, Path] = {
    "answer_given_rationale": BUNDLED,
    "answer_and_rationale": BUNDLED_PAPER_SCORING,
}
"""The shipped model for each scoring (named when a model is refused under the other)."""

default_path = BUNDLED
"""What an empty ``confidence_model`` means (the bundled model; unit tests point it at a scripted one)."""


class ConfidenceModelError(ValueError):
    """The model file is missing, not JSON of this format, or fitted on other features (one-line message)."""


class ConfidenceModel(BaseModel):
    """A fitted confidence model (the JSON file's content)."""

    format: int = Field(FORMAT, description="File format version")
    name: str = Field(description="Model name and version, shown in traces, e.g. 'specrag-confidence-v1'")
    features: list[str] = Field(description="Feature names (of ConfidenceInputs), in coefficient order")
    mean: list[float] = Field(description="Per feature: the mean removed before scaling")
    scale: list[float] = Field(description="Per feature: the standard deviation divided by")
    coef: list[float] = Field(description="Logistic-regression coefficients on the standardised features")
    intercept: float
    accept_confidence: float = Field(description="The acceptance threshold chosen on the calibration set")
    self_consistency_of: SelfConsistencyOf = Field(
        "answer_and_rationale",
        description="What ρ_sc measured in the drafts the model was fitted on (graphs.context.Context."
        "self_consistency_of): its inputs sc_per_token and margin mean something else under the other setting",
    )
    fit: dict[str, Any] = Field(default_factory=dict, description="How, on what, and with what result it was fitted")

    @property
    def reads_closed_book(self) -> bool:
        """Whether the model reads the verifier's closed-book inputs (computed by one more verifier request)."""
        return any(f in CLOSED_BOOK_FEATURES for f in self.features)

    @property
    def reads_open_book(self) -> bool:
        """Whether the model reads the verifier's open-book inputs (one more verifier request over the selected
        draft's passages)."""
        return any(f in OPEN_BOOK_FEATURES for f in self.features)

    def predict(self, inputs: ConfidenceInputs) -> float:
        """P(the selected draft's answer is correct), 0-1."""
        x = inputs.vector(self.features)
        z = self.intercept + sum(
            c * (v - m) / (s or 1.0) for c, v, m, s in zip(self.coef, x, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0

    def require_scoring(self, self_consistency_of: SelfConsistencyOf) -> None:
        """Refuse to read drafts scored otherwise than the ones this model was fitted on.

        Raises:
            ConfidenceModelError: The graph's ``self_consistency_of`` differs from the model's.
        """
        if self_consistency_of != self.self_consistency_of:
            shipped = BUNDLED_FOR[self_consistency_of]
            raise ConfidenceModelError(
                f"confidence model {self.name!r} was fitted on drafts scored with self_consistency_of="
                f"{self.self_consistency_of!r}, but this graph scores with {self_consistency_of!r}; use a model "
                f"fitted that way (specrag confidence fit; for {self_consistency_of!r} the project ships "
                f"confidence_model={shipped}, its threshold accept_confidence={read_model(shipped).accept_confidence:g}"
                ") or set the context's self_consistency_of to match"
            )

    def contributions(self, inputs: ConfidenceInputs) -> dict[str, float]:
        """Each feature's term in the logit (how much it raised or lowered the confidence), for the trace."""
        x = inputs.vector(self.features)
        return {
            name: round(c * (v - m) / (s or 1.0), 4)
            for name, c, v, m, s in zip(self.features, self.coef, x, self.mean, self.scale, strict=True)
        }


def read_model(path: Path) -> ConfidenceModel:
    """Read and check a model file.

    Raises:
        ConfidenceModelError: Missing, unreadable, another format, or features this code does not compute.
    """
    try:
        model = ConfidenceModel.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfidenceModelError(f"confidence model not found: {path}") from None
    except (OSError, ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfidenceModelError(f"confidence model {path} is not readable: {first}") from None
    if model.format != FORMAT:
        raise ConfidenceModelError(f"confidence model {path} has format {model.format}; this code reads {FORMAT}")
    unknown = unknown_features(model.features)
    if unknown or not model.features or len(set(model.features)) != len(model.features):
        raise ConfidenceModelError(
            f"confidence model {path} was fitted on features {model.features}, this code computes {list(FEATURES)}; "
            "refit it (specrag confidence fit)"
        )
    sizes = {len(model.mean), len(model.scale), len(model.coef)}
    if sizes != {len(model.features)}:
        raise ConfidenceModelError(f"confidence model {path}: one mean, scale and coefficient per feature expected")
    return model


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int) -> ConfidenceModel:
    return read_model(path)


def load_model(path: str | Path = "") -> ConfidenceModel:
    """The model at ``path`` (empty: :data:`default_path`, the bundled one), read once per file version.

    Raises:
        ConfidenceModelError: See :func:`read_model`.
    """
    file = Path(path).expanduser().resolve() if path else default_path
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        raise ConfidenceModelError(f"confidence model not found: {file}") from None
    return _cached(file, mtime)
