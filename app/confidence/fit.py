"""Fit the confidence model on a calibration run (speculative and standard on held-out pool questions).

scikit-learn's logistic regression on standardised features; the pool figures it reports are cross-validated
(every question scored by a model that did not see it), and the acceptance threshold is chosen on that curve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.confidence.calibration import THRESHOLDS, Outcome, calibration, choose_threshold, threshold_curve
from app.confidence.features import FEATURES, unknown_features
from app.confidence.model import FORMAT, ConfidenceModel, SelfConsistencyOf
from app.eval.confidence import ConfidenceRow

FOLDS = 5


class FitError(ValueError):
    """Too few usable questions, or only one class among them (one-line message)."""


def fit_model(
    data: Sequence[ConfidenceRow],
    *,
    name: str,
    features: Sequence[str] = FEATURES,
    c: float = 1.0,
    seed: int = 0,
    tolerance: float = 0.01,
    about: dict[str, Any] | None = None,
    self_consistency_of: SelfConsistencyOf = "answer_and_rationale",
) -> ConfidenceModel:
    """Fit, cross-validate and choose the threshold.

    Args:
        data: One row per calibration question (``app.eval.confidence.rows``).
        name: The model's name and version (shown in traces).
        features: The inputs the model reads (names of ``ConfidenceInputs`` fields).
        c: Inverse regularisation strength of the logistic regression.
        seed: Seed of the cross-validation folds.
        tolerance: Accuracy (share) the threshold may give up for accepting more drafts (speed).
        about: Provenance recorded in the file (calibration set, drafter, run directory).
        self_consistency_of: What ρ_sc measured in ``data``'s drafts (the graph refuses the model under another).

    Raises:
        FitError: Fewer than 20 questions with a selected draft, all of them right (or all wrong), or an unknown
            feature.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    unknown = unknown_features(features)
    if unknown or not features:
        raise FitError(f"unknown features {unknown}; choose among {', '.join(FEATURES)}")
    usable = [r for r in data if r.inputs is not None]
    if len(usable) < 20:
        raise FitError(f"{len(usable)} questions with a selected draft; at least 20 are needed to fit")
    x = np.array([r.inputs.vector(features) for r in usable if r.inputs is not None])
    y = np.array([r.draft_correct for r in usable], dtype=int)
    if y.min() == y.max():
        raise FitError("the selected drafts are all right or all wrong: nothing to calibrate")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    folds = StratifiedKFold(n_splits=min(FOLDS, int(min(y.sum(), len(y) - y.sum()))), shuffle=True, random_state=seed)
    held = cross_val_predict(pipeline, x, y, cv=folds, method="predict_proba")[:, 1]
    by_row = dict(zip((r.id for r in usable), held, strict=True))
    outs = [
        Outcome(
            confidence=float(by_row.get(r.id, 0.0)),
            draft_correct=r.draft_correct,
            fallback_correct=r.fallback_correct,
            draft_seconds=r.draft_seconds,
            fallback_seconds=r.fallback_seconds,
        )
        for r in data
    ]
    curve = threshold_curve(outs, THRESHOLDS)
    chosen = choose_threshold(curve, tolerance=tolerance)
    pipeline.fit(x, y)
    scaler, lr = pipeline[0], pipeline[-1]
    cv = calibration([o.confidence for o in outs], [o.draft_correct for o in outs])
    return ConfidenceModel(
        format=FORMAT,
        name=name,
        features=list(features),
        mean=[float(v) for v in scaler.mean_],
        scale=[float(v) for v in scaler.scale_],
        coef=[float(v) for v in lr.coef_[0]],
        intercept=float(lr.intercept_[0]),
        accept_confidence=chosen.threshold,
        self_consistency_of=self_consistency_of,
        fit={
            **(about or {}),
            "estimator": f"StandardScaler + LogisticRegression(C={c}) (scikit-learn)",
            "questions": len(data),
            "with_selected_draft": len(usable),
            "tasks": dict(sorted(Counter(r.task for r in data).items())),
            "draft_accuracy": round(float(np.mean([r.draft_correct for r in data])), 4),
            "fallback_accuracy": round(float(np.mean([r.fallback_correct for r in data])), 4),
            "cross_validated": {
                "folds": folds.n_splits,
                "ece": cv.ece,
                "auroc": cv.auroc,
                "brier": cv.brier,
                "curve": [p.model_dump() for p in curve],
            },
            "chosen_point": chosen.model_dump(),
            "threshold_rule": f"the most accurate point of the cross-validated curve; within {tolerance:.0%} of it, "
            "the one that accepts the most drafts",
        },
    )
