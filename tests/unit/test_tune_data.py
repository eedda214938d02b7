"""The drafter-tuning data builder (app/tune/data.py): subsets formed as partition forms them, abstention targets,
multiple choice never abstains, eval/dev is refused, deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.eval.dataset import EvalPassage, EvalQuestion
from app.llm.protocol import ChatPrompt
from app.tune.data import (
    DataConfig,
    DataError,
    TuneExample,
    build_examples,
    check_input_path,
    found_alias,
    load_pool,
    read_examples,
    write_examples,
)
from graphs import clustering
from graphs.drafting import ABSTAIN_ANSWER, abstention_reply, parse_reply, render_reply
from graphs.question import with_choices
from tests.conftest import REPO, unavailable
from tests.fakes import FakeEmbedder

TOPICS = ["river", "mountain", "painter", "composer", "city", "island", "novel", "bridge", "comet", "valley"]


def _short(i: int) -> EvalQuestion:
    topic = TOPICS[i % len(TOPICS)]
    answer = f"Answerton{i}"
    return EvalQuestion(
        id=f"popqa-{i}",
        question=f"Where is the {topic} number {i} located?",
        answers=[answer, f"alias{i}"],
        task="short_qa",
        passages=[
            EvalPassage(title=f"{topic} {i}", text=f"The {topic} number {i} is located in {answer}. It is old."),
            EvalPassage(title=f"{topic} {i} web", text=f"Pictures of the {topic} number {i} and its surroundings."),
        ],
    )


def _mcq(i: int) -> EvalQuestion:
    topic = TOPICS[i % len(TOPICS)]
    return EvalQuestion(
        id=f"arcc-{i}",
        question=f"Which property of a {topic} explains erosion {i}?",
        answers=["B"],
        task="mcq",
        choices={"A": "its colour", "B": "flowing water", "C": "its name", "D": "the moon"},
        passages=[EvalPassage(title=f"{topic}", text=f"Erosion of a {topic} is caused by flowing water over time.")],
    )


def _pool() -> list[EvalQuestion]:
    return [_short(i) for i in range(30)] + [_mcq(i) for i in range(30)]


def _config(**kw: object) -> DataConfig:
    base: dict[str, object] = {
        "questions_per_source": 12,
        "distractor_reservoir": 15,
        "abstain_cap": 1.0,
        "seed": 3,
    }
    base.update(kw)
    return DataConfig.model_validate(base)


@pytest.fixture(scope="module")
def built() -> tuple[list[TuneExample], object]:
    return build_examples(_pool(), FakeEmbedder(), _config())


def test_subsets_are_formed_as_partition_forms_them(built: tuple[list[TuneExample], object]) -> None:
    examples, _ = built
    pool = {q.id: q for q in _pool()}
    assert examples
    for ex in examples:
        assert len(ex.subset) == min(2, ex.n_candidates)
        assert len(ex.passages) == len(ex.subset)
        assert 4 <= ex.n_candidates <= 6
        assert pool[ex.question_id].id == ex.question_id
    # Re-derive one question's subsets with partition's own functions, from the same vectors and seed.
    config = _config()
    ex = examples[0]
    assert ex.subset in _partition_subsets(ex, config, examples)


def _partition_subsets(ex: TuneExample, config: DataConfig, examples: list[TuneExample]) -> list[list[int]]:
    """Every subset ``sample_subsets`` gives for the example's candidate passages, over the seeds in use."""
    from app.tune import data

    cands = data._candidates(_pool(), config, FakeEmbedder(), lambda _m: None)
    index = next(i for i, c in enumerate(cands) if c.question.id == ex.question_id)
    cand = cands[index]
    assert [cand.passages[i].text for i in ex.subset] == [p.text for p in ex.passages]
    seed = config.seed + index
    labels = clustering.kmeans(cand.vectors, config.per_draft, seed=seed).tolist()
    return clustering.sample_subsets(labels, config.n_drafts, seed=seed)


def test_every_subset_matches_partition(built: tuple[list[TuneExample], object]) -> None:
    examples, _ = built
    config = _config()
    for ex in examples[:10]:
        assert ex.subset in _partition_subsets(ex, config, examples)


def test_abstention_target_exactly_when_no_alias_in_the_subset(built: tuple[list[TuneExample], object]) -> None:
    examples, _ = built
    pool = {q.id: q for q in _pool()}
    short = [ex for ex in examples if ex.task == "short_qa"]
    assert {ex.outcome for ex in short} == {"answer", "abstain"}
    for ex in short:
        held = found_alias(" ".join(p.text for p in ex.passages), pool[ex.question_id].answers)
        if held is None:
            assert ex.outcome == "abstain"
            assert ex.target == abstention_reply()
            assert parse_reply(ex.target).outcome == "abstain"
        else:
            assert ex.outcome == "answer"
            assert ex.answer == held
            assert held.lower() in ex.rationale.lower()
            assert ex.target == render_reply(ex.rationale, ex.answer)
            assert parse_reply(ex.target).answer == held


def test_multiple_choice_never_abstains(built: tuple[list[TuneExample], object]) -> None:
    examples, _ = built
    mcq = [ex for ex in examples if ex.task == "mcq"]
    assert mcq
    for ex in mcq:
        assert ex.outcome == "answer"
        assert ex.answer == "B"
        assert ex.choices is not None
        assert ex.question == with_choices(ex.question.split("\n")[0], ex.choices) or "A) its colour" in ex.question
        reply = parse_reply(ex.target, ex.choices)
        assert reply.outcome == "answer" and reply.letter == "B"
        assert ABSTAIN_ANSWER not in ex.target


def test_abstention_cap() -> None:
    examples, card = build_examples(_pool(), FakeEmbedder(), _config(abstain_cap=0.1))
    abstain = sum(ex.outcome == "abstain" for ex in examples)
    assert abstain <= 0.1 * len(examples) + 1
    assert sum(s.dropped_abstain_cap for s in card.per_source.values()) > 0


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, card_a = build_examples(_pool(), FakeEmbedder(), _config())
    b, card_b = build_examples(_pool(), FakeEmbedder(), _config())
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    assert card_a == card_b
    c, _ = build_examples(_pool(), FakeEmbedder(), _config(seed=4))
    assert [x.model_dump() for x in a] != [x.model_dump() for x in c]
    path = write_examples(a, card_a, tmp_path / "data")
    assert read_examples(path) == a
    assert (tmp_path / "data" / "data_card.md").read_text().startswith("# Drafter tuning data card")


@pytest.mark.parametrize("sub", ["eval/dev/questions.jsonl", "shared/eval/dev", "x/EVAL/Dev/q.jsonl"])
def test_refuses_eval_dev_paths(tmp_path: Path, sub: str) -> None:
    path = tmp_path / sub
    with pytest.raises(DataError, match="eval/dev"):
        check_input_path(path)
    with pytest.raises(DataError, match="eval/dev"):
        load_pool(path)
    with pytest.raises(DataError, match="eval/dev"):
        read_examples(path)


def test_an_eval_dev_path_is_refused_even_if_the_file_exists(tmp_path: Path) -> None:
    dev = tmp_path / "eval" / "dev"
    dev.mkdir(parents=True)
    (dev / "questions.jsonl").write_text(_short(1).model_dump_json() + "\n")
    with pytest.raises(DataError, match="never"):
        load_pool(dev / "questions.jsonl")
    other = tmp_path / "train" / "pool.jsonl"
    other.parent.mkdir()
    other.write_text(_short(1).model_dump_json() + "\n")
    assert [q.id for q in load_pool(other)] == ["popqa-1"]


def test_alias_matches_whole_words_only() -> None:
    assert found_alias("It flows through Romania.", ["ro", "Romania"]) == "Romania"
    assert found_alias("A river of rock.", ["ro"]) is None
    assert found_alias("The Beatles' album", ["the beatles"]) == "the beatles"


def test_the_shared_pool_loads_and_builds() -> None:
    from app.settings import get_settings

    shared = get_settings().shared_dir
    pool_path = (shared if shared.is_absolute() else REPO / shared) / "train" / "pool.jsonl"
    if not pool_path.is_file():
        unavailable(f"shared training pool not found at {pool_path} (set SPECRAG_SHARED_DIR)")
    pool = load_pool(pool_path)
    assert {q.id.split("-", 1)[0] for q in pool} >= {"popqa", "nq", "arcc"}
    examples, card = build_examples(
        pool, FakeEmbedder(), DataConfig(questions_per_source=4, distractor_reservoir=10, seed=1)
    )
    assert card.examples == len(examples) > 0
    assert all(ex.outcome == "answer" for ex in examples if ex.task == "mcq")
    assert np.isfinite(card.examples)


def test_teacher_rationales_are_kept_only_when_they_support_the_gold_answer() -> None:
    from app.tune.data import TeacherRationaler
    from tests.fakes import FakeLLM

    def reply(prompt: ChatPrompt) -> str:
        user = prompt.messages[-1].content
        answer = user.split("Correct answer:", 1)[1].split("\n", 1)[0].strip()
        # Supports the answer for even-numbered questions only.
        number = int(user.split("number ", 1)[1].split()[0]) if "number " in user else 0
        return f"The documents say it is {answer}. Second sentence. Third." if number % 2 == 0 else "No idea."

    teacher = TeacherRationaler(FakeLLM(reply=reply, name="fake-teacher"))
    examples, card = build_examples(
        [_short(i) for i in range(12)], FakeEmbedder(), _config(rationale="teacher"), rationaler=teacher
    )
    assert card.teacher == "teacher (fake-teacher)"
    answers = [ex for ex in examples if ex.outcome == "answer"]
    assert answers
    for ex in answers:
        assert int(ex.question_id.split("-")[1]) % 2 == 0
        assert ex.rationale == f"The documents say it is {ex.answer}. Second sentence."  # two sentences at most
    assert sum(s.dropped_unsupported for s in card.per_source.values()) > 0


def test_answer_rationales_open_with_the_lead_so_that_abstaining_is_one_token(
    built: tuple[list[TuneExample], object],
) -> None:
    examples, _ = built
    lead = _config().answer_lead
    answers = [ex for ex in examples if ex.outcome == "answer" and not ex.fallback]
    assert answers
    assert all(ex.rationale.startswith(lead + " ") for ex in answers)
    abstentions = [ex for ex in examples if ex.outcome == "abstain"]
    assert abstentions and all(ex.rationale.startswith("The documents do not") for ex in abstentions)
    plain, _ = build_examples(_pool(), FakeEmbedder(), _config(answer_lead=""))
    assert not any(ex.rationale.startswith(lead) for ex in plain if ex.outcome == "answer")


def test_mcq_fallback_rationales_are_capped() -> None:
    pool = [_short(i) for i in range(30)] + [_mcq(i) for i in range(30)]
    # Half the MCQ questions have a gold choice that no passage (own or distractor) mentions: the rationale falls
    # back to naming the choice.
    for q in pool[30:45]:
        q.choices = {"A": "its colour", "B": "magnetic pull", "C": "its name", "D": "the moon"}
        q.passages[0].text = "A passage about something else entirely."
    free, _ = build_examples(pool, FakeEmbedder(), _config(mcq_fallback_cap=1.0))
    capped, card = build_examples(pool, FakeEmbedder(), _config(mcq_fallback_cap=0.2))
    assert sum(ex.fallback for ex in free) > 0
    mcq = [ex for ex in capped if ex.task == "mcq"]
    assert sum(ex.fallback for ex in mcq) <= 0.2 * len(mcq) + 1
    assert sum(s.dropped_fallback_cap for s in card.per_source.values()) > 0
    assert card.per_source["arcc"].rationale_fallback == sum(ex.fallback for ex in mcq)
    assert all(ex.rationale.startswith("The correct choice is") for ex in capped if ex.fallback)


def test_mixed_rationales_ask_the_teacher_only_for_unsupported_multiple_choice() -> None:
    from app.tune.data import ExtractRationaler, MixedRationaler, TeacherRationaler
    from tests.fakes import FakeLLM

    asked: list[str] = []

    def reply(prompt: ChatPrompt) -> str:
        user = prompt.messages[-1].content
        asked.append(user)
        answer = user.split("Correct choice:", 1)[1].split("\n", 1)[0].strip()  # the multiple-choice teacher
        # Names the gold choice's text only for even-numbered questions.
        number = int(user.split("erosion ", 1)[1].split("?")[0])
        return f"Magnetic pull explains it: {answer}." if number % 2 == 0 else "It is about erosion."

    pool = [_short(i) for i in range(30)] + [_mcq(i) for i in range(30)]
    for q in pool[30:45]:  # no passage supports these questions' gold choice
        q.choices = {"A": "its colour", "B": "magnetic pull", "C": "its name", "D": "the moon"}
        q.passages[0].text = "A passage about something else entirely."
    extract = ExtractRationaler()
    writer = MixedRationaler(extract, TeacherRationaler(FakeLLM(reply=reply, name="fake-teacher")))
    examples, card = build_examples(
        pool, FakeEmbedder(), _config(rationale="mixed", mcq_fallback_cap=1.0), rationaler=writer
    )
    plain, _ = build_examples(pool, FakeEmbedder(), _config(mcq_fallback_cap=1.0))
    assert card.teacher is not None and "fake-teacher" in card.teacher
    assert asked and all("Correct choice: B) magnetic pull" in a for a in asked)  # only the unsupported ones
    unsupported = {q.id for q in pool[30:45]}
    by_id = {ex.id: ex for ex in plain}
    taught = [ex for ex in examples if ex.question_id in unsupported and not ex.fallback]
    assert taught and all(ex.rationale.endswith("Magnetic pull explains it: B) magnetic pull.") for ex in taught)
    assert all(int(ex.question_id.split("-")[1]) % 2 == 0 for ex in taught)
    # the odd ones keep the fallback; everything extraction supports is exactly as without the teacher
    assert any(ex.fallback for ex in examples if ex.question_id in unsupported)
    for ex in examples:
        if ex.question_id not in unsupported:
            assert ex.rationale == by_id[ex.id].rationale


def test_teacher_cache_resumes_and_survives_a_torn_line(tmp_path: Path) -> None:
    from app.tune.data import TeacherRationaler
    from tests.fakes import FakeLLM

    calls: list[str] = []

    def reply(prompt: ChatPrompt) -> str:
        calls.append(prompt.messages[-1].content)
        answer = prompt.messages[-1].content.split("Correct answer:", 1)[1].split("\n", 1)[0].strip()
        return f"The documents say it is {answer}."

    cache = tmp_path / "teacher_cache.jsonl"
    pool = [_short(i) for i in range(12)]
    first = TeacherRationaler(FakeLLM(reply=reply, name="t"), cache=cache)
    built_first, _ = build_examples(pool, FakeEmbedder(), _config(rationale="teacher"), rationaler=first)
    assert first.asked == len(calls) > 0
    assert len(cache.read_text().splitlines()) == first.asked
    # An interrupted build: the last reply torn mid-line. The rebuild reuses every whole line and asks for the rest.
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    calls.clear()
    again = TeacherRationaler(FakeLLM(reply=reply, name="t"), cache=cache)
    assert len(again.replies) == len(lines) - 1
    built_again, _ = build_examples(pool, FakeEmbedder(), _config(rationale="teacher"), rationaler=again)
    assert again.asked == len(calls) == 1
    assert [ex.rationale for ex in built_again] == [ex.rationale for ex in built_first]
    # the cache is whole again: a third build asks nothing
    third = TeacherRationaler(FakeLLM(reply=reply, name="t"), cache=cache)
    build_examples(pool, FakeEmbedder(), _config(rationale="teacher"), rationaler=third)
    assert third.asked == 0
    # another teacher does not read this one's replies
    other = TeacherRationaler(FakeLLM(reply=reply, name="other"), cache=cache)
    build_examples(pool, FakeEmbedder(), _config(rationale="teacher"), rationaler=other)
    assert other.asked == first.asked


def test_teacher_mcq_rationale_loses_a_letter_opening_and_must_name_the_choice() -> None:
    from app.tune.data import ExamplePassage, TeacherRationaler
    from tests.fakes import FakeLLM

    def reply(prompt: ChatPrompt) -> str:
        if "erosion" in prompt.messages[-1].content:
            return "The correct choice is B) flowing water. It wears rock away over time."
        return "It is about weather."  # names no choice

    teacher = TeacherRationaler(FakeLLM(reply=reply, name="t"))
    passages = [ExamplePassage(text="Rivers carve valleys.", from_question="arcc-1")]
    choices = {"A": "its colour", "B": "flowing water"}
    assert teacher.mcq("Which explains erosion?", passages, "B", "flowing water", choices) == (
        "Flowing water. It wears rock away over time.",
        False,
    )
    assert teacher.mcq("Which explains rain?", passages, "B", "flowing water", choices) is None


@pytest.mark.parametrize(
    ("reply", "kept"),
    [
        ("The correct choice D) flowing water is right.", "Flowing water is right."),  # no 'is'
        ("The correct choice is: (D) flowing water.", "Flowing water."),
        ("The answer is D. Flowing water wears rock.", "Flowing water wears rock."),
        ("The answer is a flowing water.", "The answer is a flowing water."),  # 'a' is a word, not a letter
    ],
)
def test_teacher_mcq_letter_openings(reply: str, kept: str) -> None:
    from app.tune.data import ExamplePassage, TeacherRationaler
    from tests.fakes import FakeLLM

    teacher = TeacherRationaler(FakeLLM(reply=lambda _p: reply, name="t"))
    passages = [ExamplePassage(text="Rivers carve valleys.", from_question="arcc-1")]
    assert teacher.mcq("Which explains erosion?", passages, "D", "flowing water", {"D": "flowing water"}) == (
        kept,
        False,
    )


def test_abstention_cap_of_short_answers_ignores_multiple_choice() -> None:
    """Multiple choice never abstains, so counting it in the cap's base lets short answers abstain more."""
    shares = {}
    for of in ("all", "short_answers"):
        examples, card = build_examples(_pool(), FakeEmbedder(), _config(abstain_cap=0.2, abstain_cap_of=of))
        short = [ex for ex in examples if ex.task != "mcq"]
        assert any(ex.task == "mcq" for ex in examples)
        shares[of] = sum(ex.outcome == "abstain" for ex in short) / len(short)
        assert (of == "all") == ("of the examples" in " ".join(card.filters))
    assert shares["short_answers"] <= 0.2 + 1 / len(short)
    assert shares["all"] > shares["short_answers"]
