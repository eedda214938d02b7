"""Score combination, ranking, the selected draft's confidence and the reflection rule: pure functions over
drafts (Sec. 3.3 of the paper; the confidence and the fallback are this project's, ``app.confidence``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from app.confidence.features import (
    ClosedBook,
    DraftSignal,
    OpenBook,
    QuestionSignal,
    answer_key,
    confidence_inputs,
    vote_order,
    votes,
)
from app.confidence.model import ConfidenceModel
from app.llm.protocol import ScoreResult
from graphs.context import Context
from graphs.state import Confidence, Decision, Draft, Passage, Scores


def self_reflection(verified: ScoreResult) -> float:
    """log ρ_sr: log P('Yes') as the follow-up's first token (−inf when the backend returned no such candidate)."""
    return verified.candidate_logprobs.get("Yes", -math.inf)


def combine(draft: Draft, verified: ScoreResult, context: Context, method: dict[str, str]) -> Scores:
    """Build a draft's ``Scores`` from its generation and the verifier's one-pass result (total: :func:`total`)."""
    sr = self_reflection(verified)
    no = verified.candidate_logprobs.get("No", -math.inf)
    return Scores(
        draft=draft.logprob,
        draft_tokens=draft.tokens,
        self_consistency=verified.logprob,
        self_consistency_tokens=verified.n_tokens,
        self_reflection=sr,
        self_reflection_no=no,
        total=total(draft.logprob, draft.tokens, verified.logprob, verified.n_tokens, sr, context),
        normalization=context.score_normalization,
        method=method,
    )


def total(draft: float, draft_tokens: int, sc: float, sc_tokens: int, sr: float, context: Context) -> float:
    """The ranking score ρ = ρ_draft · ρ_sc · ρ_sr in log space: the sum of the terms ``context`` enables.

    With ``score_normalization='mean'`` ρ_draft and ρ_sc are per-token means (ρ_sr is a single token already).
    The evaluation's ablations re-rank the same drafts with other contexts (a term removed, another normalisation).
    """
    if context.score_normalization == "mean":
        draft /= max(draft_tokens, 1)
        sc /= max(sc_tokens, 1)
    return (
        (draft if context.use_draft_score else 0.0)
        + (sc if context.use_self_consistency else 0.0)
        + (sr if context.use_self_reflection else 0.0)
    )


def rank(drafts: Sequence[Draft], selection: Literal["score", "vote"] = "score") -> list[int]:
    """Indices of scored drafts, best first, then the abstentions (never verified) in draft order; ties go to the
    earlier draft (stable). Unscored answers (not verified yet) are left out, unless no answer is scored and they
    all agree (:func:`agreed`, verification skipped): then they come first, by ρ_draft per token.

    ``selection='score'`` orders by total (the paper); ``'vote'`` first by the score-weighted vote of the drafts
    sharing a (normalised) answer, Σ exp(total − best total), then by total within the answer.
    """
    scored = [i for i, d in enumerate(drafts) if d.scores is not None and d.outcome != "abstain"]
    abstained = [i for i, d in enumerate(drafts) if d.outcome == "abstain"]
    if agreed(drafts) is not None:  # no answer is scored, and they all give one answer (verification skipped)
        answering = [i for i, d in enumerate(drafts) if d.outcome != "abstain"]
        return sorted(answering, key=lambda i: -_per_token(drafts[i])) + abstained
    by_total = sorted(scored, key=lambda i: -_total(drafts[i]))
    if selection == "vote" and by_total:
        keys = [answer_key(signal(drafts[i])) for i in by_total]
        by_total = [by_total[j] for j in vote_order(keys, [_total(drafts[i]) for i in by_total])]
    return by_total + abstained


def agreed(drafts: Sequence[Draft]) -> str | None:
    """The answer every draft that answered gives (normalised; its letter for multiple choice) when none of them is
    verified yet and they all agree; None otherwise (no answer, a verified one, or two answers). Such drafts need no
    verifier to choose the answer: its scores could only choose among rationales."""
    answering = [d for d in drafts if d.outcome != "abstain"]
    if not answering or any(d.scores is not None for d in answering):
        return None
    keys = {answer_key(signal(d)) for d in answering}
    return keys.pop() if len(keys) == 1 else None


def _per_token(d: Draft) -> float:
    value = d.logprob / max(d.tokens, 1)
    return value if math.isfinite(value) else -math.inf


def _total(d: Draft) -> float:
    assert d.scores is not None
    return d.scores.total if math.isfinite(d.scores.total) else -math.inf


def signal(d: Draft) -> DraftSignal:
    """What the confidence model reads of a draft."""
    sc = d.scores
    return DraftSignal(
        answer=d.answer,
        outcome=d.outcome,
        letter=d.letter,
        draft=sc.draft if sc else None,
        draft_tokens=sc.draft_tokens if sc else d.tokens,
        self_consistency=sc.self_consistency if sc else None,
        self_consistency_tokens=sc.self_consistency_tokens if sc else 0,
        self_reflection=sc.self_reflection if sc else None,
        total=sc.total if sc else None,
    )


def confidence(
    drafts: Sequence[Draft],
    ranking: Sequence[int],
    *,
    mcq: bool,
    model: ConfidenceModel,
    question: str = "",
    choices: Mapping[str, str] | None = None,
    passages: Sequence[Passage] = (),
    closed_book: ClosedBook | None = None,
    open_book: OpenBook | None = None,
) -> Confidence:
    """The calibrated confidence of the best-ranked draft (0 when no draft answered: nothing to be right).

    Args:
        drafts: All drafts so far.
        ranking: ``rank(drafts)``.
        mcq: Whether the question is multiple choice.
        model: The fitted confidence model.
        question: The question as the models read it.
        choices: Multiple choice: letter -> text.
        passages: Every passage retrieved so far (the best draft's are looked up by id).
        closed_book: The verifier's closed-book belief in the best draft's answer, for a model that reads it.
        open_book: The verifier's belief in it after reading the best draft's passages, for a model that reads it.
    """
    if not ranking or drafts[ranking[0]].outcome == "abstain" or drafts[ranking[0]].scores is None:
        return Confidence(value=0.0, draft=None, model=model.name)
    signals = [signal(d) for d in drafts]
    by_id = {p.id: p for p in passages}
    read = [by_id[i] for i in drafts[ranking[0]].passage_ids if i in by_id]
    evidence = QuestionSignal(
        question=question, choices=dict(choices or {}), passages=[(p.title, p.text) for p in read]
    )
    inputs = confidence_inputs(
        signals, ranking[0], mcq=mcq, question=evidence, closed_book=closed_book, open_book=open_book
    )
    return Confidence(
        value=round(model.predict(inputs), 4),
        draft=ranking[0],
        inputs={k: round(v, 4) for k, v in zip(model.features, inputs.vector(model.features), strict=True)},
        contributions=model.contributions(inputs),
        votes=votes(signals, ranking[0]),
        model=model.name,
    )


def decide(
    drafts: Sequence[Draft],
    ranking: Sequence[int],
    conf: Confidence | None,
    *,
    round_index: int,
    new_passages: int,
    total_passages: int,
    context: Context,
) -> tuple[Decision, str]:
    """Accept the best draft, retry with a rewritten query, fall back to the verifier reading all passages, or
    give up.

    Args:
        drafts: All drafts so far.
        ranking: ``rank(drafts)``.
        conf: ``confidence(drafts, ranking, ...)``; None without a confidence model (the best draft is accepted).
        round_index: The round that just finished (0-based).
        new_passages: Passages this round retrieved.
        total_passages: Passages the drafts could read over all rounds (what a fallback reads).
        context: ``accept_confidence``, ``fallback``, ``retry_on``, ``max_rounds``.

    Returns:
        The decision and a reason that quotes the numbers it used.
    """
    can_retry = round_index + 1 < context.max_rounds and not (round_index > 0 and new_passages == 0)
    stop = (
        "retrieval found nothing new"
        if round_index > 0 and new_passages == 0
        else f"the maximum of {context.max_rounds} round(s) is reached"
    )
    if not ranking or drafts[ranking[0]].outcome == "abstain":
        why = (
            f"all {len(ranking)} drafts abstained (their passages do not hold the answer)"
            if ranking
            else f"no drafts in round {round_index + 1} ({new_passages} new passages)"
        )
        if can_retry:
            return "retry", f"{why}; rewriting the query"
        if context.fallback and total_passages > 0:
            return "fallback", f"{why} and {stop}: the verifier answers from all passages"
        return "give_up", f"{why} after {round_index + 1} round(s)"
    best = drafts[ranking[0]]
    if conf is None:
        where = f"round {best.round + 1}, subset {best.subset + 1}"
        if best.scores is None:
            answering = sum(d.outcome != "abstain" for d in drafts)
            who = "one draft answered" if answering == 1 else f"all {answering} drafts that answered agree"
            return "accept", (
                f"best draft #{ranking[0]} ({where}) by ρ_draft per token; not verified: {who} ({best.answer!r}), "
                "so the verifier's scores could not change the answer; no confidence model"
            )
        return "accept", f"best draft #{ranking[0]} ({where}); no confidence model"
    summary = (
        f"best draft #{ranking[0]} (round {best.round + 1}, subset {best.subset + 1}, {conf.votes} of "
        f"{len(drafts)} drafts agree) has confidence {conf.value:.3f}"
    )
    if conf.value >= context.accept_confidence:
        return "accept", f"{summary} >= {context.accept_confidence:.2f}"
    below = f"{summary} < {context.accept_confidence:.2f}"
    if context.retry_on == "low_confidence" and can_retry:
        return "retry", f"{below}; rewriting the query"
    if context.fallback:
        why = f" and {stop}" if context.retry_on == "low_confidence" else ""
        return "fallback", f"{below}{why}: the verifier answers from all passages"
    return "accept", f"{below}, but fallback is off"
