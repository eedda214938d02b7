"""The confidence of recorded speculative runs: the features and P(correct) of each question's selected draft,
from ``results.jsonl`` records (the same functions the graph's ``reflect`` calls), and the calibration section of
the report (``Summary.calibration``): ECE, AUROC, reliability bins and the accuracy/latency curve of the fallback
threshold against ``standard``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from app.confidence.calibration import (
    THRESHOLDS,
    Calibration,
    Outcome,
    ThresholdPoint,
    calibration,
    threshold_curve,
)
from app.confidence.features import ConfidenceInputs, QuestionSignal, confidence_inputs
from app.confidence.model import ConfidenceModel
from app.eval.runner import QuestionRecord
from app.eval.systems import SystemResult, draft_signal
from graphs.question import with_choices

SPECULATIVE = "speculative"
"""The system whose drafts the confidence is about (the paper's graph: fallback off)."""
FALLBACK = "standard"
"""The system whose answer a fallback gives (the verifier reading all passages)."""
REFLECT = "speculative+reflect"
"""The default graph (confidence and fallback), when the run has it."""


def inputs_of(result: SystemResult, record: QuestionRecord) -> ConfidenceInputs | None:
    """The selected draft's features; None when no draft was selected (every draft abstained)."""
    if result.chosen is None:
        return None
    d = result.drafts[result.chosen]
    if d.outcome == "abstain" or d.total is None or d.self_reflection is None:
        return None
    mcq = record.task == "mcq" or bool(record.choices)
    signals = [draft_signal(x, record.choices, mcq=mcq) for x in result.drafts]
    return confidence_inputs(
        signals,
        result.chosen,
        mcq=mcq,
        question=question_signal(record, d.passages),
        closed_book=result.closed_book,
        open_book=result.open_book,
    )


def question_signal(record: QuestionRecord, passages: Sequence[int]) -> QuestionSignal:
    """The question as the graph read it and the texts of the pool passages at ``passages`` (a draft's)."""
    pool = record.passages
    return QuestionSignal(
        question=with_choices(record.question, record.choices),
        choices=dict(record.choices or {}),
        passages=[(pool[i].title, pool[i].text) for i in passages if 0 <= i < len(pool)],
    )


class ConfidenceRow(BaseModel):
    """One question's selected draft: its features (None: nothing selected), and both systems' outcomes."""

    id: str
    task: str
    inputs: ConfidenceInputs | None
    draft_correct: bool
    fallback_correct: bool
    draft_seconds: float
    fallback_seconds: float = Field(description="standard's answer step: what a fallback adds to the draft's time")
    standard_seconds: float = Field(description="standard's whole run")


def rows(records: Sequence[QuestionRecord], system: str = SPECULATIVE) -> list[ConfidenceRow]:
    """Rows of the records that have both ``system`` (whose selected draft is judged) and ``standard`` without an
    error."""
    out: list[ConfidenceRow] = []
    for r in records:
        spec, std = r.systems.get(system), r.systems.get(FALLBACK)
        if spec is None or std is None or spec.error or std.error:
            continue
        out.append(
            ConfidenceRow(
                id=r.id,
                task=r.task,
                inputs=inputs_of(spec, r),
                draft_correct=spec.correct,
                fallback_correct=std.correct,
                draft_seconds=spec.seconds,
                fallback_seconds=std.timings.get("answer", std.seconds),
                standard_seconds=std.seconds,
            )
        )
    return out


def outcomes(data: Sequence[ConfidenceRow], model: ConfidenceModel) -> list[Outcome]:
    """Each row under ``model`` (confidence 0 when nothing was selected)."""
    return [
        Outcome(
            confidence=model.predict(r.inputs) if r.inputs is not None else 0.0,
            draft_correct=r.draft_correct,
            fallback_correct=r.fallback_correct,
            draft_seconds=r.draft_seconds,
            fallback_seconds=r.fallback_seconds,
        )
        for r in data
    ]


class CalibrationSummary(BaseModel):
    """The report's calibration section."""

    model: str = Field(description="The confidence model evaluated")
    system: str = Field(
        SPECULATIVE,
        description="The system whose selected drafts it judged: speculative, or the re-verifying system scored as "
        "the model was fitted (the same drafts)",
    )
    accept_confidence: float = Field(description="The threshold of the default graph (the model's chosen point)")
    overall: Calibration = Field(description="Over every question (confidence 0 where nothing was selected)")
    by_task: dict[str, Calibration]
    curve: list[ThresholdPoint] = Field(description="Accept-or-fall-back over thresholds (1.01: always fall back)")
    at_default: ThresholdPoint = Field(description="The curve at accept_confidence")
    standard_accuracy: float
    standard_mean_seconds: float
    speculative_accuracy: float
    speculative_mean_seconds: float
    decisions: dict[str, int] = Field(
        default_factory=dict, description="How often each decision fired in the graph's own runs (speculative+reflect)"
    )
    reflect_agrees: float | None = Field(
        None,
        description="Share of speculative+reflect runs whose answer is the one this curve assumes at the default "
        "threshold (the draft's when accepted, standard's when it fell back)",
    )


def calibration_summary(
    records: Sequence[QuestionRecord], model: ConfidenceModel, system: str = SPECULATIVE
) -> CalibrationSummary | None:
    """The section for ``system``'s selected drafts, or None when no record has both it and ``standard``."""
    data = rows(records, system)
    if not data:
        return None
    outs = outcomes(data, model)
    probs = [o.confidence for o in outs]
    right = [o.draft_correct for o in outs]
    tasks = sorted({r.task for r in data})
    by_task = {}
    for t in tasks:
        sel = [i for i, r in enumerate(data) if r.task == t]
        by_task[t] = calibration([probs[i] for i in sel], [right[i] for i in sel])
    n = len(data)
    return CalibrationSummary(
        model=model.name,
        system=system,
        accept_confidence=model.accept_confidence,
        overall=calibration(probs, right),
        by_task=by_task,
        curve=threshold_curve(outs, THRESHOLDS),
        at_default=threshold_curve(outs, [model.accept_confidence])[0],
        standard_accuracy=round(sum(r.fallback_correct for r in data) / n, 4),
        standard_mean_seconds=round(sum(r.standard_seconds for r in data) / n, 3),
        speculative_accuracy=round(sum(r.draft_correct for r in data) / n, 4),
        speculative_mean_seconds=round(sum(r.draft_seconds for r in data) / n, 3),
        **_live(records, {r.id: o for r, o in zip(data, outs, strict=True)}, model.accept_confidence, system),
    )


def _live(
    records: Sequence[QuestionRecord], outs: dict[str, Outcome], threshold: float, system: str = SPECULATIVE
) -> dict[str, Any]:
    """The decisions of the graph's own runs, and how often its answer is the one the replayed curve assumes."""
    live = [(r, r.systems[REFLECT]) for r in records if REFLECT in r.systems and r.id in outs]
    live = [(r, x) for r, x in live if not x.error and x.decision]
    if not live:
        return {}
    decisions = Counter(x.decision for _, x in live if x.decision)
    agree = 0
    for r, x in live:
        expected = r.systems[system] if outs[r.id].confidence >= threshold else r.systems[FALLBACK]
        agree += " ".join(x.answer.split()) == " ".join(expected.answer.split())
    return {"decisions": dict(sorted(decisions.items())), "reflect_agrees": round(agree / len(live), 4)}
