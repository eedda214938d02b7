import math

import pytest
from pydantic import ValidationError

from app.llm.protocol import ScoreResult
from graphs.context import Context
from graphs.scoring import combine, decide, rank
from graphs.state import Confidence, Draft


def make_draft(subset: int, logprob: float = -4.0, tokens: int = 8, round_: int = 0) -> Draft:
    return Draft(
        round=round_,
        subset=subset,
        passage_ids=["a"],
        rationale="r",
        answer="x",
        text="r Answer: x",
        parsed=True,
        logprob=logprob,
        tokens=tokens,
        prompt_tokens=100,
        finish_reason="stop",
    )


def verified(logprob: float, n: int, p_yes: float) -> ScoreResult:
    return ScoreResult(
        logprob=logprob, n_tokens=n, candidate_logprobs={"Yes": math.log(p_yes), "No": math.log(1 - p_yes)}
    )


def test_total_is_the_log_of_the_product_of_the_three_scores() -> None:
    s = combine(make_draft(0, -4.0), verified(-6.0, 12, 0.5), Context(), {})
    assert s.total == pytest.approx(-4.0 - 6.0 + math.log(0.5))
    assert math.exp(s.total) == pytest.approx(math.exp(-4.0) * math.exp(-6.0) * 0.5)
    assert s.draft == -4.0 and s.self_consistency == -6.0 and s.self_consistency_tokens == 12


def test_mean_normalisation_divides_by_token_counts() -> None:
    s = combine(make_draft(0, -4.0, tokens=8), verified(-6.0, 12, 0.5), Context(score_normalization="mean"), {})
    assert s.total == pytest.approx(-0.5 - 0.5 + math.log(0.5))
    assert s.draft == -4.0  # raw values are kept


def test_disabled_terms_drop_out() -> None:
    ctx = Context(use_draft_score=False, use_self_reflection=False)
    assert combine(make_draft(0, -4.0), verified(-6.0, 12, 0.5), ctx, {}).total == pytest.approx(-6.0)


def test_rank_orders_by_total_and_skips_unscored() -> None:
    drafts = [make_draft(i) for i in range(4)]
    for d, sc in zip(drafts[:3], [-3.0, -1.0, -1.0], strict=True):
        d.scores = combine(d, verified(sc, 5, 0.9), Context(use_draft_score=False, use_self_reflection=False), {})
    assert rank(drafts) == [1, 2, 0]


def scored(p_yes: float) -> list[Draft]:
    d = make_draft(0)
    d.scores = combine(d, verified(-2.0, 5, p_yes), Context(), {})
    return [d]


def conf_of(drafts: list[Draft], value: float) -> Confidence:
    """A scripted confidence for the best draft."""
    ranking = rank(drafts)
    answered = bool(ranking) and drafts[ranking[0]].outcome != "abstain"
    return Confidence(value=value if answered else 0.0, draft=ranking[0] if answered else None, votes=1, model="t")


def decide_with(drafts: list[Draft], value: float, *, round_index: int = 0, **ctx: object) -> tuple[str, str]:
    new, total = int(ctx.pop("new", 10)), int(ctx.pop("total", 10))  # type: ignore[call-overload]
    return decide(
        drafts,
        rank(drafts),
        conf_of(drafts, value),
        round_index=round_index,
        new_passages=new,
        total_passages=total,
        context=Context.model_validate(ctx),
    )


def test_decide_accepts_at_or_above_the_confidence_threshold() -> None:
    decision, reason = decide_with(scored(0.9), 0.8, accept_confidence=0.6)
    assert decision == "accept" and "confidence 0.800 >= 0.60" in reason
    assert decide_with(scored(0.9), 0.6, accept_confidence=0.6)[0] == "accept"


def test_decide_falls_back_below_the_threshold() -> None:
    decision, reason = decide_with(scored(0.9), 0.3, accept_confidence=0.6)
    assert decision == "fallback" and "< 0.60" in reason and "all passages" in reason
    # without the fallback the best draft is accepted (the paper's graph)
    decision, reason = decide_with(scored(0.9), 0.3, accept_confidence=0.6, fallback=False)
    assert decision == "accept" and "fallback is off" in reason


def test_decide_retries_low_confidence_only_when_asked_and_rounds_remain() -> None:
    low = scored(0.9)
    assert decide_with(low, 0.3, accept_confidence=0.6, max_rounds=2)[0] == "fallback"  # retry_on='no_answer'
    assert decide_with(low, 0.3, retry_on="low_confidence", accept_confidence=0.6, max_rounds=2)[0] == "retry"
    # the last round, or a retry that found nothing new: fall back instead
    last = decide_with(low, 0.3, round_index=1, retry_on="low_confidence", accept_confidence=0.6, max_rounds=2)
    assert last[0] == "fallback"
    decision, reason = decide_with(
        scored(0.9), 0.3, round_index=1, new=0, retry_on="low_confidence", accept_confidence=0.6, max_rounds=3
    )
    assert decision == "fallback" and "nothing new" in reason


def test_decide_without_drafts_retries_then_falls_back_or_gives_up() -> None:
    assert decide_with([], 0.0, total=0)[0] == "retry"
    # nothing retrieved in any round: nothing to read, so give up
    assert decide_with([], 0.0, round_index=1, new=0, total=0)[0] == "give_up"
    decision, reason = decide_with([], 0.0, round_index=1, new=0, total=10)
    assert decision == "fallback" and "nothing new" in reason
    assert decide_with([], 0.0, round_index=1, new=0, total=10, fallback=False)[0] == "give_up"


def test_decide_without_a_confidence_model_accepts_the_best_draft() -> None:
    drafts = scored(0.2)
    decision, reason = decide(
        drafts, rank(drafts), None, round_index=0, new_passages=10, total_passages=10, context=Context()
    )
    assert decision == "accept" and "no confidence model" in reason


def test_vote_selection_prefers_the_answer_most_drafts_give() -> None:
    drafts = [make_draft(i) for i in range(3)]
    for d, answer, sc in zip(drafts, ["Paris", "Lyon", "Lyon"], [-1.0, -1.5, -1.6], strict=True):
        d.answer = answer
        d.scores = combine(d, verified(sc, 5, 0.9), Context(), {})
    assert rank(drafts)[0] == 0  # the best total
    assert rank(drafts, "vote")[:2] == [1, 2]  # exp(-0.5) + exp(-0.6) > 1: Lyon's vote wins, its best draft first


def test_context_validates_knobs() -> None:
    with pytest.raises(ValidationError):
        Context(n_drafts=0)
    with pytest.raises(ValidationError):
        Context(bogus=1)  # type: ignore[call-arg]
