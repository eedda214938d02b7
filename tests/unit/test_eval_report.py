"""The report's compression comparison: each compressed system against its uncompressed counterpart, paired over
the same questions (accuracy change, tokens saved, latency ratio), from hand-built records."""

import pytest

from app.eval.report import markdown, summarize
from app.eval.runner import QuestionRecord
from app.eval.systems import ModelUsage, SystemResult


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
