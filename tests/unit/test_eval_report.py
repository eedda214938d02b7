"""The report's comparisons, from hand-built records: each compressed system against its uncompressed counterpart
(accuracy change, tokens saved, latency ratio), the ablations against speculative, and the drafts scored against the
dataset (selected vs oracle accuracy)."""

import pytest

from app.eval.dataset import EvalQuestion
from app.eval.report import markdown, summarize
from app.eval.runner import QuestionRecord
from app.eval.systems import DraftRecord, ModelUsage, SystemResult


def _result(*, correct: bool, seconds: float, drafter: int | None, verifier: int) -> SystemResult:
    usage = {"verifier": ModelUsage(calls=1, prompt_tokens=verifier, generated_tokens=1, seconds=seconds)}
    if drafter is not None:
        usage["drafter"] = ModelUsage(calls=5, prompt_tokens=drafter, generated_tokens=100, seconds=seconds)
    return SystemResult(answer="x", correct=correct, seconds=seconds, usage=usage)


def _record(i: int, *, full_correct: bool, small_correct: bool) -> QuestionRecord:
    return QuestionRecord(
        id=f"q{i}",
        task="short_qa",
        question="?",
        gold=["x"],
        systems={
            "standard": _result(correct=True, seconds=10.0, drafter=None, verifier=1000),
            "standard+compress": _result(correct=False, seconds=5.0, drafter=None, verifier=500),
            "speculative": _result(correct=full_correct, seconds=20.0, drafter=2000, verifier=800),
            "speculative+compress": _result(correct=small_correct, seconds=16.0, drafter=1200, verifier=800),
        },
    )


def test_compressed_systems_are_compared_with_their_uncompressed_counterparts() -> None:
    records = [_record(i, full_correct=i < 2, small_correct=i < 3) for i in range(4)]
    summary = summarize(records, ["standard", "speculative", "speculative+compress", "standard+compress"], {})

    by_system = {c.system: c for c in summary.compression}
    assert set(by_system) == {"speculative+compress", "standard+compress"}

    spec = by_system["speculative+compress"]
    assert spec.baseline == "speculative"
    assert spec.questions == 4
    assert spec.accuracy_change.mean == pytest.approx(0.25)  # 3 of 4 against 2 of 4, paired
    assert spec.drafter_prompt_tokens_saved is not None
    assert spec.drafter_prompt_tokens_saved.mean == pytest.approx(0.4)  # 2000 -> 1200 drafter tokens
    assert spec.prompt_tokens_saved.mean == pytest.approx(1 - 2000 / 2800)  # 2800 -> 2000 in all
    assert spec.latency_ratio == pytest.approx(0.8)

    std = by_system["standard+compress"]
    assert std.baseline == "standard"
    assert std.accuracy_change.mean == pytest.approx(-1.0)
    assert std.drafter_prompt_tokens_saved is None  # standard has no drafter
    assert std.prompt_tokens_saved.mean == pytest.approx(0.5)
    assert std.latency_ratio == pytest.approx(0.5)

    report = markdown(summary)
    assert "## Compression" in report
    assert "| speculative+compress | speculative | +25.0 [" in report
    assert "| 40.0 [40.0, 40.0] % |" in report


def test_no_compression_table_without_both_sides() -> None:
    records = [_record(i, full_correct=True, small_correct=True) for i in range(2)]
    summary = summarize(records, ["standard", "speculative+compress"], {})
    assert summary.compression == []
    assert "## Compression" not in markdown(summary)


def _draft(answer: str, *, parsed: bool = True) -> DraftRecord:
    return DraftRecord(
        round=0,
        answer=answer,
        rationale="r",
        passages=[0, 1],
        parsed=parsed,
        draft=-1.0,
        draft_tokens=3,
        self_consistency=-2.0,
        self_consistency_tokens=5,
        self_reflection=-0.1,
        total=-3.1,
        prompt_tokens=100,
    )


def _question(i: int) -> EvalQuestion:
    return EvalQuestion(id=f"q{i}", question="Who?", answers=["Paris"], task="short_qa")


def _drafted(i: int, answers: list[str], *, selected: str, no_verifier: bool) -> QuestionRecord:
    """A record as an export leaves it: no question text and no gold answers."""
    spec = SystemResult(answer=selected, correct=selected == "Paris", drafts=[_draft(a) for a in answers])
    return QuestionRecord(
        id=f"q{i}",
        task="short_qa",
        question="",
        gold=[],
        systems={
            "standard": SystemResult(answer="Paris", correct=True),
            "speculative": spec,
            "no-verifier": SystemResult(answer="x", correct=no_verifier, derived_from="speculative"),
        },
    )


def test_ablations_are_paired_against_speculative() -> None:
    records = [
        _drafted(0, ["Paris", "Rome"], selected="Paris", no_verifier=False),
        _drafted(1, ["Paris", "Rome"], selected="Paris", no_verifier=True),
        _drafted(2, ["Rome", "Rome"], selected="Rome", no_verifier=False),
        _drafted(3, ["Rome", "Rome"], selected="Rome", no_verifier=True),
    ]
    summary = summarize(records, ["standard", "speculative", "no-verifier"], {})
    (ablation,) = summary.ablations
    assert ablation.system == "no-verifier"
    assert ablation.accuracy == pytest.approx(0.5)
    assert ablation.change.mean == pytest.approx(0.0)  # +1 on q3, -1 on q0
    assert ablation.change.low < 0 < ablation.change.high
    assert summary.drafts == []  # no dataset given: the drafts cannot be scored
    report = markdown(summary)
    assert "| no-verifier | 50.0 | +0.0 [" in report
    assert "## Drafts" not in report


def test_drafts_are_scored_against_the_dataset_not_the_stripped_records() -> None:
    records = [
        _drafted(0, ["Paris", "Rome", "Lyon"], selected="Rome", no_verifier=False),
        _drafted(1, ["Rome", "Rome", "Rome"], selected="Rome", no_verifier=False),
    ]
    records[1].systems["speculative"].drafts[0] = _draft("The documents say nothing", parsed=False)
    questions = {q.id: q for q in (_question(0), _question(1))}
    summary = summarize(records, ["standard", "speculative", "no-verifier"], {}, questions)
    (stats,) = summary.drafts
    assert stats.system == "speculative"
    assert stats.questions == 2
    assert stats.selected.mean == pytest.approx(0.0)
    assert stats.oracle.mean == pytest.approx(0.5)  # q0 had a right draft that was not selected
    assert stats.draft_accuracy == pytest.approx(1 / 6)
    assert stats.parsed == pytest.approx(5 / 6)
    assert "| speculative | 0.0 [0.0, 0.0] | 50.0 [" in markdown(summary)


def test_multiple_choice_drafts_are_counted_per_letter_beside_the_gold_letters() -> None:
    """A drafter that names one position whatever the question shows up against the gold letters."""
    choices = {"A": "Lyon", "B": "Paris", "C": "Rome"}
    questions = {
        f"q{i}": EvalQuestion(id=f"q{i}", question="Which?", answers=[gold], task="mcq", choices=choices)
        for i, gold in enumerate(["B", "A"])
    }
    records = [
        _drafted(i, ["C", "C", "(C) Rome"], selected="C", no_verifier=False).model_copy(update={"task": "mcq"})
        for i in range(2)
    ]
    records[1].systems["speculative"].drafts[0] = _draft("A")
    summary = summarize(records, ["standard", "speculative"], {}, questions)
    (stats,) = summary.drafts
    assert stats.mcq_letters == pytest.approx({"A": 1 / 6, "C": 5 / 6}, abs=1e-4)
    assert stats.mcq_gold == {"A": 0.5, "B": 0.5}
    assert "Multiple-choice drafts by letter (speculative): A 17 %, C 83 %; gold letters: A 50 %, B 50 %." in markdown(
        summary
    )
