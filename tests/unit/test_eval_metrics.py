"""Scoring rules of the evaluation (the shared README's), bootstrap intervals, and the dataset reader."""

import json
from pathlib import Path

import pytest

from app.eval.dataset import DatasetError, load_questions
from app.eval.metrics import contains_alias, normalize, parse_choice, score_answer, token_f1
from app.eval.stats import bootstrap_mean, paired_difference, percentile

CHOICES = {
    "A": "Planetary density will decrease.",
    "B": "Planetary years will become longer.",
    "C": "Planetary days will become shorter.",
    "D": "Planetary gravity will become stronger.",
}


def test_normalize_lowercases_and_drops_punctuation_and_articles() -> None:
    assert normalize("The  Conservative-Party, a politician!") == "conservative party politician"


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("He was a Conservative politician.", ["politician"], True),
        ("Politician", ["political leader", "politician"], True),
        ("architect", ["politician", "pol"], False),
        ("the Gesellschaft mit beschränkter Haftung", ["Gesellschaft mit beschränkter Haftung"], True),
        ("Jonny Craig", ['Jonny" Craig'], True),
        ("", ["politician"], False),
        ("anything", [""], False),
    ],
)
def test_alias_containment(prediction: str, golds: list[str], expected: bool) -> None:
    assert contains_alias(prediction, golds) is expected


def test_token_f1_takes_the_best_alias() -> None:
    assert token_f1("Conservative politician", ["politician", "political figure"]) == pytest.approx(2 / 3)
    assert token_f1("architect", ["politician"]) == 0.0
    assert token_f1("politician", ["politician"]) == 1.0


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("C", "C"),
        ("(C)", "C"),
        ("c", "C"),
        ("C) Planetary days will become shorter.", "C"),
        ("B. Planetary years", "B"),
        ("D: gravity", "D"),
        ("The answer is C.", "C"),
        ("Answer: c", "C"),
        ("The correct choice is (B)", "B"),
        ("I think B", "B"),
        ("Planetary days will become shorter.", "C"),
        ("days will become shorter", "C"),
        ("planet density will decrease.", "A"),
        ("A planet spins faster", None),
        ("nothing relevant", None),
    ],
)
def test_parse_choice_maps_free_text_to_a_letter(text: str, letter: str | None) -> None:
    assert parse_choice(text, CHOICES) == letter


def test_parse_choice_with_numeric_keys() -> None:
    assert parse_choice("2", {"1": "red", "2": "blue"}) == "2"
    assert parse_choice("It is blue.", {"1": "red", "2": "blue"}) == "2"


def test_score_answer_multiple_choice_and_free_text() -> None:
    assert score_answer("C) days shorter", ["C"], CHOICES).correct
    wrong = score_answer("B", ["C"], CHOICES)
    assert not wrong.correct and wrong.choice == "B" and wrong.f1 == 0.0
    free = score_answer("a politician", ["politician"])
    assert free.correct and free.f1 == 1.0 and free.choice is None


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_data() -> None:
    small = bootstrap_mean([1.0, 0.0] * 10)
    large = bootstrap_mean([1.0, 0.0] * 500)
    assert small.low < 0.5 < small.high and large.low < 0.5 < large.high
    assert (large.high - large.low) < (small.high - small.low)
    assert bootstrap_mean([1.0] * 5).low == 1.0  # no variance, no width


def test_paired_difference_is_paired() -> None:
    a = [1.0, 0.0] * 30
    swapped = [0.0, 1.0] * 30  # the same mean, but never right on the same question
    assert paired_difference(a, a).mean == 0.0 and paired_difference(a, a).high == 0.0
    assert paired_difference(a, swapped).mean == 0.0 and paired_difference(a, swapped).high > 0.15
    better = [1.0] * 60
    d = paired_difference(better, a)
    assert d.mean == pytest.approx(0.5) and d.low > 0
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 0.0])


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([], 50) != percentile([], 50)  # NaN


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _q(i: int, task: str) -> dict[str, object]:
    return {"id": f"{task}-{i}", "question": f"q{i}?", "answers": ["x"], "task": task, "passages": []}


def test_load_questions_round_robin_limit_and_tasks(tmp_path: Path) -> None:
    rows = [_q(i, "short_qa") for i in range(4)] + [_q(i, "mcq") for i in range(4)]
    path = _write(tmp_path / "q.jsonl", rows)
    assert [q.id for q in load_questions(path, limit=4)] == ["short_qa-0", "mcq-0", "short_qa-1", "mcq-1"]
    assert [q.id for q in load_questions(path, per_task=1)] == ["short_qa-0", "mcq-0"]
    assert {q.task for q in load_questions(path, tasks=["mcq"])} == {"mcq"}


def test_mcq_question_carries_choices_and_the_letter_instruction(tmp_path: Path) -> None:
    row = {**_q(0, "mcq"), "answers": ["C"], "choices": CHOICES}
    (q,) = load_questions(_write(tmp_path / "q.jsonl", [row]))
    text = q.prompt_question()
    assert text.startswith("q0?") and "C) Planetary days will become shorter." in text
    assert "(A, B, C or D)" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "q.jsonl:1: not JSON"),
        ('{"id": "a", "question": "q"}\n', "q.jsonl:1: answers"),
        ('{"id":"a","question":"q","answers":["x"],"task":"t"}\n' * 2, "q.jsonl:2: duplicate question id"),
    ],
)
def test_bad_dataset_lines_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_questions(path)


def test_missing_dataset_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_questions(tmp_path / "nope.jsonl")
    path = _write(tmp_path / "q.jsonl", [_q(0, "mcq")])
    with pytest.raises(DatasetError, match="no questions of task"):
        load_questions(path, tasks=["short_qa"])
