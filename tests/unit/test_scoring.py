import math

import pytest
from pydantic import ValidationError

from app.llm.protocol import ScoreResult
from graphs.context import Context
from graphs.scoring import combine, decide, rank
from graphs.state import Draft


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


def test_decide_accepts_above_threshold() -> None:
    decision, reason = decide(scored(0.9), [0], round_index=0, new_passages=10, context=Context())
    assert decision == "accept" and "0.900" in reason


def test_decide_retries_below_threshold_while_rounds_remain() -> None:
    assert decide(scored(0.7), [0], round_index=0, new_passages=10, context=Context())[0] == "retry"
    decision, reason = decide(scored(0.7), [0], round_index=1, new_passages=10, context=Context())
    assert decision == "accept" and "maximum" in reason
    assert decide(scored(0.7), [0], round_index=0, new_passages=10, context=Context(max_rounds=1))[0] == "accept"


def test_decide_without_drafts() -> None:
    assert decide([], [], round_index=0, new_passages=0, context=Context())[0] == "retry"
    assert decide([], [], round_index=1, new_passages=0, context=Context())[0] == "give_up"


def test_decide_accepts_when_a_retry_found_nothing_new() -> None:
    decision, reason = decide(scored(0.5), [0], round_index=1, new_passages=0, context=Context(max_rounds=3))
    assert decision == "accept" and "nothing new" in reason


def test_context_validates_knobs() -> None:
    with pytest.raises(ValidationError):
        Context(n_drafts=0)
    with pytest.raises(ValidationError):
        Context(bogus=1)  # type: ignore[call-arg]
