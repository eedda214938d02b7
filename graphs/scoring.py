"""Score combination, ranking and the reflection rule: pure functions over drafts (Sec. 3.3 of the paper)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from app.llm.protocol import ScoreResult
from graphs.context import Context
from graphs.state import Draft, Scores


def combine(draft: Draft, verified: ScoreResult, context: Context, method: dict[str, str]) -> Scores:
    """Build a draft's ``Scores`` from its generation and the verifier's one-pass result (total: :func:`total`)."""
    sr = verified.candidate_logprobs.get("Yes", -math.inf)
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


def rank(drafts: Sequence[Draft]) -> list[int]:
    """Indices of scored drafts, best total first, then the abstentions (never verified) in draft order; ties go
    to the earlier draft (stable). Unscored answers (not verified yet) are left out."""
    scored = [i for i, d in enumerate(drafts) if d.scores is not None and d.outcome != "abstain"]
    abstained = [i for i, d in enumerate(drafts) if d.outcome == "abstain"]
    return sorted(scored, key=lambda i: -_total(drafts[i])) + abstained


def _total(d: Draft) -> float:
    assert d.scores is not None
    return d.scores.total if math.isfinite(d.scores.total) else -math.inf


Decision = Literal["accept", "retry", "give_up"]


def decide(
    drafts: Sequence[Draft], ranking: Sequence[int], *, round_index: int, new_passages: int, context: Context
) -> tuple[Decision, str]:
    """Accept the best draft, or retry with a rewritten query while rounds remain.

    Args:
        drafts: All drafts so far.
        ranking: ``rank(drafts)``.
        round_index: The round that just finished (0-based).
        new_passages: Passages this round retrieved.
        context: ``accept_threshold``, ``max_rounds``.

    Returns:
        The decision and a reason that quotes the numbers it used.
    """
    rounds_left = round_index + 1 < context.max_rounds
    if not ranking:
        if rounds_left:
            return (
                "retry",
                f"no drafts in round {round_index + 1} ({new_passages} new passages); rewriting the query",
            )
        return "give_up", f"no drafts after {round_index + 1} round(s): nothing relevant was retrieved"
    best = drafts[ranking[0]]
    if best.outcome == "abstain":
        why = f"all {len(ranking)} drafts abstained (their passages do not hold the answer)"
        if rounds_left:
            return "retry", f"{why}; rewriting the query"
        return "give_up", f"{why} after {round_index + 1} round(s)"
    assert best.scores is not None
    p_yes = math.exp(best.scores.self_reflection)
    summary = (
        f"best draft #{ranking[0]} (round {best.round + 1}, subset {best.subset + 1}) has total "
        f"{best.scores.total:.3f} and P(Yes)={p_yes:.3f}"
    )
    if p_yes >= context.accept_threshold:
        return "accept", f"{summary} >= threshold {context.accept_threshold:.2f}"
    if new_passages == 0 and round_index > 0:
        return (
            "accept",
            f"{summary} < threshold {context.accept_threshold:.2f}, but retrieval found nothing new",
        )
    if rounds_left:
        return "retry", f"{summary} < threshold {context.accept_threshold:.2f}; rewriting the query"
    return "accept", (
        f"{summary} < threshold {context.accept_threshold:.2f}, but the maximum of {context.max_rounds} "
        "round(s) is reached"
    )
