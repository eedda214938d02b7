"""The outcome of a run, shaped for callers (``specrag ask --json``, the chat endpoint): a typed summary of the
final state with every score, choice and retry, and wall time per node."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, Field

from graphs.state import Confidence, Draft, NodeTiming, Round, State


class Source(BaseModel):
    """A passage the answer rests on."""

    id: str
    doc_id: str
    title: str


class DraftScores(BaseModel):
    """Natural-log scores of a draft; ``None`` where a score is not finite."""

    draft: float | None = Field(description="log ρ_draft (drafter's log-probability of rationale + answer)")
    self_consistency: float | None = Field(description="log ρ_sc (verifier, teacher-forced answer + rationale)")
    self_reflection: float | None = Field(description="log ρ_sr = log P('Yes') from the verifier")
    total: float | None = Field(description="The ranking score (sum of enabled terms, per normalisation)")
    p_yes: float | None = Field(description="exp(self_reflection)")
    normalization: str
    method: dict[str, str]


class DraftTokens(BaseModel):
    """Token counts behind a draft's scores."""

    draft: int = Field(description="Tokens the drafter generated")
    self_consistency: int = Field(description="Tokens of answer + rationale as scored by the verifier")
    prompt: int = Field(description="Tokens of the drafter's prompt")


class DraftOut(BaseModel):
    """One draft."""

    round: int
    subset: int
    answer: str
    rationale: str
    passage_ids: list[str]
    parsed: bool
    outcome: str = Field(description="answer, abstain (not verified, ranked last) or unparsed")
    letter: str | None = Field(None, description="Multiple choice: the choice letter the answer names")
    choice_shift: int = Field(0, description="Multiple choice: places the drafter saw the choices rotated (0: none)")
    abstain_rule: str = Field("greedy", description="How answering was weighed against abstaining")
    abstain_prob: float | None = Field(
        None, description="Under a threshold: the drafter's P(abstention word) when it chose to abstain"
    )
    answer_forced: bool = Field(False, description="Chose to abstain below the threshold and was made to answer")
    finish_reason: str
    draft_logprob: float | None = Field(
        None, description="log ρ_draft: the drafter's log-probability of its draft (verified or not)"
    )
    scores: DraftScores | None = Field(
        description="The verifier's scores; None for an abstention, or when the round went unverified because "
        "every draft that answered gave the same answer (the decision's reason says so)"
    )
    tokens: DraftTokens


class ConfidenceOut(BaseModel):
    """The calibrated confidence of a run's best draft, and what it was computed from."""

    value: float = Field(description="P(the best draft's answer is correct), 0-1 (0: no draft answered)")
    draft: int | None = Field(description="Index into drafts of the draft it is about")
    inputs: dict[str, float] = Field(description="Its features (agreement, p_yes, margin, ...)")
    contributions: dict[str, float] = Field(description="Each feature's term in the logit")
    votes: int = Field(description="Drafts with the same normalised answer as the best one (itself included)")
    model: str = Field(description="The confidence model (name and version)")


class RoundOut(BaseModel):
    """One retrieval round and its reflection decision."""

    index: int
    query: str
    decision: str = Field(description="accept, retry, fallback or give_up")
    reason: str
    confidence: ConfidenceOut | None = Field(None, description="The confidence the decision used")
    rewritten_query: str
    passage_ids: list[str]
    clusters: list[int]
    subsets: list[list[str]]
    ranking: list[int]


class RunResult(BaseModel):
    """What ``specrag ask --json`` prints."""

    run_id: str | None = Field(None, description="The run's trace id (`specrag trace RUN_ID`); None if not saved")
    graph: str
    question: str
    choices: dict[str, str] = Field(default_factory=dict, description="Multiple choice: letter -> choice text")
    answer: str
    rationale: str
    sources: list[Source]
    drafts: list[DraftOut]
    chosen: int | None = Field(description="Index into drafts of the selected draft")
    rounds: list[RoundOut]
    confidence: ConfidenceOut | None = Field(
        None, description="The last reflection's confidence in the best draft (speculative graph only)"
    )
    decision: str | None = Field(
        None,
        description="The last reflection's decision: accept (the best draft answers), fallback (the verifier "
        "answered from all passages), give_up (nothing to answer from); None for standard RAG",
    )
    timings: dict[str, float] = Field(description="Wall seconds per node (parallel branches overlap)")
    seconds: float = Field(description="Wall seconds of the whole run")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _draft_out(d: Draft) -> DraftOut:
    s = d.scores
    scores = (
        DraftScores(
            draft=_finite(s.draft),
            self_consistency=_finite(s.self_consistency),
            self_reflection=_finite(s.self_reflection),
            total=_finite(s.total),
            p_yes=_finite(math.exp(s.self_reflection)),
            normalization=s.normalization,
            method=s.method,
        )
        if s
        else None
    )
    return DraftOut(
        round=d.round,
        subset=d.subset,
        answer=d.answer,
        rationale=d.rationale,
        passage_ids=d.passage_ids,
        parsed=d.parsed,
        outcome=d.outcome,
        letter=d.letter,
        choice_shift=d.choice_shift,
        abstain_rule=d.abstain_rule,
        abstain_prob=d.abstain_prob,
        answer_forced=d.answer_forced,
        finish_reason=d.finish_reason,
        draft_logprob=_finite(d.logprob),
        scores=scores,
        tokens=DraftTokens(
            draft=d.tokens, self_consistency=s.self_consistency_tokens if s else 0, prompt=d.prompt_tokens
        ),
    )


def _confidence_out(c: Confidence | None) -> ConfidenceOut | None:
    return ConfidenceOut(**c.__dict__) if c is not None else None


def _round_out(r: Round) -> RoundOut:
    return RoundOut(**{**r.__dict__, "confidence": _confidence_out(r.confidence)})


def node_walls(timings: Sequence[NodeTiming]) -> dict[str, float]:
    """Wall seconds per node: per round, from the first start to the last end (parallel branches overlap)."""
    spans: dict[tuple[str, int], list[float]] = defaultdict(lambda: [math.inf, -math.inf])
    for t in timings:
        span = spans[(t.node, t.round)]
        span[0], span[1] = min(span[0], t.start), max(span[1], t.start + t.seconds)
    walls: dict[str, float] = defaultdict(float)
    for (node, _), (start, end) in spans.items():
        walls[node] += end - start
    return {k: round(v, 4) for k, v in walls.items()}


def to_result(state: State, *, graph: str, seconds: float) -> RunResult:
    """Summarise a final state."""
    by_id = {p.id: p for p in state.all_passages}
    if state.chosen is not None:
        source_ids = state.drafts[state.chosen].passage_ids
    else:  # a fallback read this round's passages; without drafts, the answer (if any) rests on them too
        source_ids = [p.id for p in state.passages] if not state.drafts or state.decision == "fallback" else []
    return RunResult(
        graph=graph,
        question=state.question,
        choices=dict(state.choices),
        answer=state.answer,
        rationale=state.rationale,
        sources=[Source(id=i, doc_id=by_id[i].doc_id, title=by_id[i].title) for i in source_ids if i in by_id],
        drafts=[_draft_out(d) for d in state.drafts],
        chosen=state.chosen,
        rounds=[_round_out(r) for r in state.rounds],
        confidence=_confidence_out(state.confidence),
        decision=state.decision,
        timings=node_walls(state.timings),
        seconds=round(seconds, 4),
    )
