"""How good a confidence is, and what a fallback threshold buys: calibration error, AUROC, reliability bins, and
the accuracy/latency of 'accept the draft when confidence >= t, else fall back' over thresholds t."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

BINS = 10
"""Equal-width confidence bins of the calibration error and the reliability diagram."""


class ReliabilityBin(BaseModel):
    """One confidence bin: how confident, and how often right."""

    low: float
    high: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


class Calibration(BaseModel):
    """Calibration of a confidence against correctness."""

    n: int = Field(description="Questions")
    ece: float = Field(description="Expected calibration error: Σ_bins |accuracy − mean confidence| · share")
    auroc: float | None = Field(description="Area under the ROC of confidence for correctness (None: one class)")
    brier: float = Field(description="Mean squared error of the confidence")
    mean_confidence: float
    accuracy: float
    bins: list[ReliabilityBin]


def calibration(confidence: Sequence[float], correct: Sequence[bool], *, bins: int = BINS) -> Calibration:
    """ECE, AUROC (scikit-learn), Brier score and reliability bins.

    Raises:
        ValueError: Empty or unequal inputs.
    """
    from sklearn.metrics import roc_auc_score

    p = np.asarray(confidence, dtype=float)
    y = np.asarray(correct, dtype=float)
    if len(p) == 0 or len(p) != len(y):
        raise ValueError("one correctness per confidence, at least one")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out: list[ReliabilityBin] = []
    ece = 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        conf = float(p[mask].mean()) if count else None
        acc = float(y[mask].mean()) if count else None
        if count and conf is not None and acc is not None:
            ece += abs(acc - conf) * count / len(p)
        out.append(ReliabilityBin(low=edges[b], high=edges[b + 1], count=count, mean_confidence=conf, accuracy=acc))
    auroc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    return Calibration(
        n=len(p),
        ece=round(ece, 4),
        auroc=round(auroc, 4) if auroc is not None else None,
        brier=round(float(np.mean((p - y) ** 2)), 4),
        mean_confidence=round(float(p.mean()), 4),
        accuracy=round(float(y.mean()), 4),
        bins=out,
    )


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One question: the speculative draft's confidence and correctness, and the fallback's (standard RAG's)."""

    confidence: float
    draft_correct: bool
    fallback_correct: bool
    draft_seconds: float
    fallback_seconds: float
    """What the fallback adds: the verifier reading all passages (standard RAG's answer time)."""


class ThresholdPoint(BaseModel):
    """'Accept when confidence >= threshold, else fall back', over a question set."""

    threshold: float
    accuracy: float
    accepted: float = Field(description="Share of questions answered by the draft")
    mean_seconds: float
    median_seconds: float


def threshold_curve(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[ThresholdPoint]:
    """Accuracy and latency of the accept-or-fall-back rule at each threshold (1.01: always fall back)."""
    out: list[ThresholdPoint] = []
    for t in thresholds:
        accept = [o.confidence >= t for o in outcomes]
        right = [o.draft_correct if a else o.fallback_correct for o, a in zip(outcomes, accept, strict=True)]
        secs = [o.draft_seconds + (0.0 if a else o.fallback_seconds) for o, a in zip(outcomes, accept, strict=True)]
        out.append(
            ThresholdPoint(
                threshold=round(float(t), 4),
                accuracy=round(float(np.mean(right)), 4),
                accepted=round(float(np.mean(accept)), 4),
                mean_seconds=round(float(np.mean(secs)), 3),
                median_seconds=round(float(np.median(secs)), 3),
            )
        )
    return out


THRESHOLDS: tuple[float, ...] = (*(round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)), 1.01)
"""The thresholds a curve is drawn over (1.01: every question falls back)."""


def choose_threshold(points: Sequence[ThresholdPoint], *, tolerance: float = 0.0) -> ThresholdPoint:
    """The most accurate point; among points within ``tolerance`` of it, the one that accepts the most drafts
    (the fastest), then the lower threshold."""
    best = max(p.accuracy for p in points)
    near = [p for p in points if p.accuracy >= best - tolerance - 1e-12]
    return max(near, key=lambda p: (p.accepted, -p.threshold))
