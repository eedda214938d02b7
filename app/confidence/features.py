"""The signals a selected draft's confidence is computed from: pure functions over the round's drafts.

Both the graph (``graphs.nodes.reflect``) and the evaluation (over recorded drafts) describe each draft as a
``DraftSignal`` and call :func:`confidence_inputs`, so the model fitted on evaluation records sees the same numbers
that the graph computes at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from app.eval.metrics import normalize

MARGIN_CAP = 20.0
"""Margins (natural-log units of the total) above this are cut to it (a lone answer has this margin)."""


@dataclass(frozen=True, kw_only=True)
class DraftSignal:
    """What confidence reads of one draft (natural-log scores; None where the draft was not verified)."""

    answer: str
    outcome: Literal["answer", "abstain", "unparsed"]
    letter: str | None = None
    """Multiple choice: the letter the answer names (drafts agree when their letters do)."""
    draft: float | None = None
    draft_tokens: int = 0
    self_consistency: float | None = None
    self_consistency_tokens: int = 0
    self_reflection: float | None = None
    total: float | None = None


@dataclass(frozen=True, kw_only=True)
class Belief:
    """The verifier's own belief in the selected answer, teacher-forced after a prompt without the draft's rationale
    (``graphs.verification``): the question alone (closed book) or the question with the passages the selected
    draft read (open book)."""

    logprob: float
    """Multiple choice: log P(the letter | prompt) normalised over the choice letters; otherwise log P(answer |
    prompt) per answer token."""
    top: bool
    """Multiple choice: the letter is the verifier's most probable one (always False otherwise)."""


ClosedBook = Belief
"""The belief after the question alone (no rationale, no passages)."""

OpenBook = Belief
"""The belief after the passages the selected draft read and the question (no rationale)."""


class ConfidenceInputs(BaseModel):
    """The features of the selected draft (every one is shown in the trace beside the confidence)."""

    agreement: float = Field(description="Share of all drafts whose answer matches the selected one (normalised)")
    answering: float = Field(description="Share of drafts that answered (did not abstain)")
    p_yes: float = Field(description="The verifier's P('Yes') that the selected rationale supports its answer")
    sc_per_token: float = Field(description="log ρ_sc of the selected draft per token (the verifier's fluency)")
    draft_per_token: float = Field(description="log ρ_draft of the selected draft per token")
    margin: float = Field(
        description=f"Total of the selected draft minus the best draft with another answer (cut at {MARGIN_CAP:g})"
    )
    mcq: float = Field(description="1 for a multiple-choice question, else 0")
    question_words: float = Field(
        0.0, description="log(1 + words of the question as the models read it): long questions are compositional"
    )
    supported: float = Field(
        0.0,
        description="1 if the selected answer (for multiple choice: its choice's text) occurs, normalised and as "
        "whole words, in the passages its draft read, else 0",
    )
    answer_words: float = Field(0.0, description="log(1 + words of the normalised answer, or of its choice's text)")
    closed_book_mcq: float = Field(
        0.0,
        description="Multiple choice: the verifier's log P(the selected letter | question alone), normalised over "
        "the letters (cut at -10); 0 otherwise",
    )
    closed_book_span: float = Field(
        0.0,
        description="Short answers: the verifier's log P(the selected answer | question alone) per token (cut at "
        "-10); 0 for multiple choice",
    )
    closed_book_top: float = Field(
        0.0, description="Multiple choice: 1 if the selected letter is the verifier's closed-book choice, else 0"
    )
    open_book_mcq: float = Field(
        0.0,
        description="Multiple choice: the verifier's log P(the selected letter | the selected draft's passages and "
        "the question), normalised over the letters (cut at -10); 0 otherwise",
    )
    open_book_span: float = Field(
        0.0,
        description="Short answers: the verifier's log P(the selected answer | the selected draft's passages and "
        "the question) per token (cut at -10); 0 for multiple choice",
    )
    open_book_top: float = Field(
        0.0,
        description="Multiple choice: 1 if the selected letter is the verifier's choice after reading the selected "
        "draft's passages, else 0",
    )

    def vector(self, names: Sequence[str] = ()) -> list[float]:
        """The features named (default: all of :data:`FEATURES`), in that order."""
        return [float(getattr(self, name)) for name in (names or FEATURES)]


FEATURES: tuple[str, ...] = tuple(ConfidenceInputs.model_fields)
"""Feature names, in the order a fitted model's coefficients follow."""


def unknown_features(names: Sequence[str]) -> list[str]:
    """The names among ``names`` that are not :data:`FEATURES` (what a model may read)."""
    return [n for n in names if n not in FEATURES]


@dataclass(frozen=True, kw_only=True)
class QuestionSignal:
    """What confidence reads of the question and of the evidence the selected draft saw."""

    question: str
    """The question as the models read it (with its choices for multiple choice)."""
    choices: Mapping[str, str] = field(default_factory=dict)
    """Multiple choice: letter -> choice text."""
    passages: Sequence[tuple[str, str]] = ()
    """The passages the selected draft read, as (title, text)."""


def supported(answer: str, passages: Sequence[str]) -> bool:
    """Whether the normalised ``answer`` occurs as whole words in the normalised ``passages``."""
    key = normalize(answer)
    if not key:
        return False
    return any(f" {key} " in f" {normalize(p)} " for p in passages)


def answer_key(d: DraftSignal) -> str:
    """What two drafts must share to agree: the choice letter, else the normalised answer."""
    return d.letter.upper() if d.letter else normalize(d.answer)


def votes(drafts: Sequence[DraftSignal], chosen: int) -> int:
    """Drafts (the chosen one included) that answered with the chosen draft's answer."""
    key = answer_key(drafts[chosen])
    return sum(1 for d in drafts if d.outcome != "abstain" and answer_key(d) == key)


def vote_order(keys: Sequence[str], totals: Sequence[float]) -> list[int]:
    """Positions of answering drafts ordered by the score-weighted vote of their answer, Σ exp(total − best total)
    over the drafts that share its key, then by their own total (ties: the earlier draft). Non-finite totals weigh
    nothing (all of them non-finite: every draft weighs 1)."""
    finite = [t for t in totals if math.isfinite(t)]
    top = max(finite) if finite else 0.0
    weight: dict[str, float] = {}
    for key, t in zip(keys, totals, strict=True):
        w = math.exp(t - top) if finite and math.isfinite(t) else (0.0 if finite else 1.0)
        weight[key] = weight.get(key, 0.0) + w
    own = [t if math.isfinite(t) else -math.inf for t in totals]
    return sorted(range(len(keys)), key=lambda i: (-weight[keys[i]], -own[i], i))


CLOSED_BOOK_FEATURES = ("closed_book_mcq", "closed_book_span", "closed_book_top")
"""The inputs that need the verifier's closed-book scoring (one more request, computed only for a model that reads
them)."""

OPEN_BOOK_FEATURES = ("open_book_mcq", "open_book_span", "open_book_top")
"""The inputs that need the verifier to read the selected draft's passages (one more request over them, computed
only for a model that reads them)."""

MCQ_ONLY = ("closed_book_mcq", "closed_book_top", "open_book_mcq", "open_book_top")
"""Inputs that are 0 for every short-answer question."""

SPAN_ONLY = ("closed_book_span", "open_book_span")
"""Inputs that are 0 for every multiple-choice question."""


def task_terms(contributions: Mapping[str, float], *, mcq: bool) -> dict[str, float]:
    """The logit terms with the part the task alone fixes folded into one term, ``task``: the inputs that do not
    apply to the question's task are 0 for every such question, so their terms (far from 0 after standardisation)
    and the ``mcq`` input's are a constant of the task, not something this draft did."""
    fixed = {*(SPAN_ONLY if mcq else MCQ_ONLY), "mcq"}
    out = {k: v for k, v in contributions.items() if k not in fixed}
    if fixed & set(contributions):
        out["task"] = round(sum(v for k, v in contributions.items() if k in fixed), 4)
    return out


def confidence_inputs(
    drafts: Sequence[DraftSignal],
    chosen: int,
    *,
    mcq: bool,
    question: QuestionSignal | None = None,
    closed_book: Belief | None = None,
    open_book: Belief | None = None,
) -> ConfidenceInputs:
    """The features of ``drafts[chosen]`` among ``drafts`` (all drafts of the run, abstentions included).

    ``question`` gives the question's and the evidence's features (``question_words``, ``supported``,
    ``answer_words``), ``closed_book`` and ``open_book`` the verifier's beliefs (:data:`CLOSED_BOOK_FEATURES`,
    :data:`OPEN_BOOK_FEATURES`); without them they are 0 (a model fitted on them should not be used then).

    Raises:
        ValueError: ``chosen`` is an abstention or was not verified (it has no scores).
    """
    best = drafts[chosen]
    if best.outcome == "abstain" or best.total is None or best.self_reflection is None:
        raise ValueError("the selected draft must be a verified answer")
    n = len(drafts)
    key = answer_key(best)
    others = [d.total for d in drafts if d.total is not None and d.outcome != "abstain" and answer_key(d) != key]
    finite = [t for t in others if math.isfinite(t)]
    margin = MARGIN_CAP if not finite else min(MARGIN_CAP, max(0.0, best.total - max(finite)))
    return ConfidenceInputs(
        agreement=votes(drafts, chosen) / n,
        answering=sum(1 for d in drafts if d.outcome != "abstain") / n,
        p_yes=math.exp(best.self_reflection),
        sc_per_token=_per_token(best.self_consistency, best.self_consistency_tokens),
        draft_per_token=_per_token(best.draft, best.draft_tokens),
        margin=margin if math.isfinite(margin) else 0.0,
        mcq=1.0 if mcq else 0.0,
        **(_evidence(best, question) if question is not None else {}),
        **(_belief("closed_book", closed_book, mcq=mcq) if closed_book is not None else {}),
        **(_belief("open_book", open_book, mcq=mcq) if open_book is not None else {}),
    )


def _belief(prefix: str, belief: Belief, *, mcq: bool) -> dict[str, float]:
    """A belief's inputs (``<prefix>_mcq``, ``_top``, ``_span``), by task: a letter's normalised log-probability and
    a span's per-token one differ in scale and in what they say, so each has its own coefficient."""
    value = max(-10.0, belief.logprob) if math.isfinite(belief.logprob) else -10.0
    if mcq:
        return {f"{prefix}_mcq": value, f"{prefix}_top": 1.0 if belief.top else 0.0}
    return {f"{prefix}_span": value}


def _evidence(best: DraftSignal, question: QuestionSignal) -> dict[str, float]:
    """The question's length, and whether the evidence the draft read states its answer."""
    text = question.choices.get(best.letter.upper(), best.answer) if best.letter else best.answer
    return {
        "question_words": math.log1p(len(question.question.split())),
        "supported": 1.0 if supported(text, [f"{title} {body}" for title, body in question.passages]) else 0.0,
        "answer_words": math.log1p(len(normalize(text).split())),
    }


def _per_token(logprob: float | None, tokens: int) -> float:
    """Mean log-probability per token, cut at -10 (a missing or infinite score counts as -10)."""
    if logprob is None or not math.isfinite(logprob):
        return -10.0
    return max(-10.0, logprob / max(tokens, 1))
