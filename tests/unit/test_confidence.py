"""The confidence of the selected draft: features, the model file, calibration metrics, the fit and the threshold."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.confidence.calibration import Outcome, calibration, choose_threshold, threshold_curve
from app.confidence.features import (
    FEATURES,
    MARGIN_CAP,
    ClosedBook,
    ConfidenceInputs,
    DraftSignal,
    OpenBook,
    QuestionSignal,
    confidence_inputs,
    supported,
    vote_order,
    votes,
)
from app.confidence.fit import FitError, fit_model
from app.confidence.model import (
    BUNDLED,
    BUNDLED_PAPER_SCORING,
    ConfidenceModel,
    ConfidenceModelError,
    load_model,
    read_model,
)
from app.eval.confidence import ConfidenceRow
from graphs.context import ACCEPT_CONFIDENCE, Context


def answer(text: str, total: float, p_yes: float = 0.9, letter: str | None = None) -> DraftSignal:
    return DraftSignal(
        answer=text,
        outcome="answer",
        letter=letter,
        draft=-4.0,
        draft_tokens=8,
        self_consistency=-20.0,
        self_consistency_tokens=10,
        self_reflection=math.log(p_yes),
        total=total,
    )


ABSTAIN = DraftSignal(answer="unknown", outcome="abstain", draft_tokens=11)


def test_features_count_agreement_abstentions_and_the_margin_to_another_answer() -> None:
    drafts = [answer("The Eiffel Tower", -10.0), answer("eiffel tower.", -12.0), answer("Louvre", -15.0), ABSTAIN]
    x = confidence_inputs(drafts, 0, mcq=False)
    assert x.agreement == pytest.approx(2 / 4)  # normalised answers match; the abstention counts in the whole
    assert x.answering == pytest.approx(3 / 4)
    assert x.margin == pytest.approx(5.0)  # to the best draft with another answer, not to the runner-up
    assert x.p_yes == pytest.approx(0.9)
    assert x.sc_per_token == pytest.approx(-2.0) and x.draft_per_token == pytest.approx(-0.5)
    assert x.mcq == 0.0
    assert votes(drafts, 0) == 2


def test_a_lone_answer_has_the_capped_margin_and_letters_decide_agreement() -> None:
    drafts = [answer("B", -3.0, letter="B"), answer("(B) ice", -4.0, letter="B"), ABSTAIN]
    x = confidence_inputs(drafts, 0, mcq=True)
    assert x.margin == MARGIN_CAP and x.agreement == pytest.approx(2 / 3) and x.mcq == 1.0


def test_closed_book_inputs_go_to_the_task_s_own_feature() -> None:
    letters = [answer("B", -3.0, letter="B"), answer("C", -4.0, letter="C")]
    x = confidence_inputs(letters, 0, mcq=True, closed_book=ClosedBook(logprob=-0.4, top=True))
    assert (x.closed_book_mcq, x.closed_book_top, x.closed_book_span) == (-0.4, 1.0, 0.0)
    spans = [answer("Paris", -3.0)]
    y = confidence_inputs(spans, 0, mcq=False, closed_book=ClosedBook(logprob=-math.inf, top=False))
    assert (y.closed_book_mcq, y.closed_book_top, y.closed_book_span) == (0.0, 0.0, -10.0)  # cut at -10
    assert confidence_inputs(spans, 0, mcq=False).closed_book_span == 0.0  # not computed: a model reading it
    z = confidence_inputs(letters, 0, mcq=True, open_book=OpenBook(logprob=-0.2, top=False))  # the same, open-book
    assert (z.open_book_mcq, z.open_book_top, z.open_book_span, z.closed_book_mcq) == (-0.2, 0.0, 0.0, 0.0)
    w = confidence_inputs(spans, 0, mcq=False, open_book=OpenBook(logprob=-1.5, top=False))
    assert (w.open_book_span, w.open_book_mcq, w.closed_book_span) == (-1.5, 0.0, 0.0)
    # would be wrong to use, so the graph computes it whenever the model reads it
    reading = ConfidenceModel(
        name="m",
        features=["p_yes", "closed_book_mcq"],
        mean=[0, 0],
        scale=[1, 1],
        coef=[1, 1],
        intercept=0,
        accept_confidence=0.5,
    )
    assert reading.reads_closed_book and not reading.reads_open_book
    assert read_model(BUNDLED).reads_closed_book and read_model(BUNDLED).reads_open_book  # v5 reads both
    assert not read_model(BUNDLED_PAPER_SCORING).reads_closed_book


def test_evidence_features_read_the_question_and_the_passages_the_selected_draft_read() -> None:
    drafts = [answer("The Eiffel Tower", -10.0), answer("Louvre", -15.0)]
    q = QuestionSignal(
        question="Which landmark was built for the 1889 World's Fair?",
        passages=[("", "Eiffel Tower: built for the Exposition Universelle of 1889."), ("", "Paris has many towers.")],
    )
    x = confidence_inputs(drafts, 0, mcq=False, question=q)
    assert x.supported == 1.0  # 'eiffel tower' (articles and case normalised) occurs in a passage it read
    assert x.question_words == pytest.approx(math.log1p(9)) and x.answer_words == pytest.approx(math.log1p(2))
    assert confidence_inputs(drafts, 1, mcq=False, question=q).supported == 0.0
    # Whole words only: 'tower' is not supported by 'towers', nor 'art' by 'party'.
    assert not supported("tower", ["Paris has many towers."]) and not supported("art", ["a party"])
    assert not supported("", ["anything"])
    # Without the question, the evidence features are 0 (as a model fitted without them expects).
    plain = confidence_inputs(drafts, 0, mcq=False)
    assert (plain.supported, plain.question_words, plain.answer_words) == (0.0, 0.0, 0.0)


def test_a_choice_letter_is_supported_by_its_choice_text() -> None:
    drafts = [answer("B", -3.0, letter="B"), answer("A", -4.0, letter="A")]
    q = QuestionSignal(
        question="What melts? A) rock B) ice",
        choices={"A": "rock", "B": "Ice cubes"},
        passages=[("", "Ice cubes melt in the sun.")],
    )
    x = confidence_inputs(drafts, 0, mcq=True, question=q)
    assert x.supported == 1.0 and x.answer_words == pytest.approx(math.log1p(2))
    assert confidence_inputs(drafts, 1, mcq=True, question=q).supported == 0.0


def test_an_abstention_has_no_features() -> None:
    with pytest.raises(ValueError, match="verified answer"):
        confidence_inputs([ABSTAIN], 0, mcq=False)


def model(coef: list[float], intercept: float = 0.0, accept: float = 0.5) -> ConfidenceModel:
    return ConfidenceModel(
        name="test-v0",
        features=list(FEATURES),
        mean=[0.0] * len(FEATURES),
        scale=[1.0] * len(FEATURES),
        coef=coef,
        intercept=intercept,
        accept_confidence=accept,
    )


def inputs(**kw: float) -> ConfidenceInputs:
    base = dict.fromkeys(FEATURES, 0.0)
    return ConfidenceInputs(**{**base, **kw})


def test_the_model_is_a_logistic_function_of_the_standardised_features() -> None:
    coef = [0.0] * len(FEATURES)
    coef[FEATURES.index("agreement")] = 2.0
    m = model(coef, intercept=-1.0)
    assert m.predict(inputs(agreement=0.5)) == pytest.approx(0.5)
    assert m.predict(inputs(agreement=1.0)) == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert m.contributions(inputs(agreement=1.0))["agreement"] == pytest.approx(2.0)


def test_model_files_are_checked(tmp_path: Path) -> None:
    good = model([0.1] * len(FEATURES))
    path = tmp_path / "m.json"
    path.write_text(good.model_dump_json())
    assert read_model(path) == good
    with pytest.raises(ConfidenceModelError, match="not found"):
        read_model(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ConfidenceModelError, match="not readable"):
        read_model(path)
    path.write_text(json.dumps({**good.model_dump(), "features": ["agreement", "retrieval_magic"]}))
    with pytest.raises(ConfidenceModelError, match="refit"):
        read_model(path)
    path.write_text(json.dumps({**good.model_dump(), "features": ["agreement"]}))  # a subset, but 1 ≠ all coefs
    with pytest.raises(ConfidenceModelError, match="one mean, scale and coefficient"):
        read_model(path)
    path.write_text(json.dumps({**good.model_dump(), "format": 99}))
    with pytest.raises(ConfidenceModelError, match="format 99"):
        read_model(path)


def test_a_model_may_read_a_subset_of_the_features_by_name() -> None:
    m = ConfidenceModel(
        name="subset",
        features=["p_yes", "agreement"],
        mean=[0.5, 0.0],
        scale=[1.0, 1.0],
        coef=[0.0, 2.0],
        intercept=-1.0,
        accept_confidence=0.5,
    )
    assert m.predict(inputs(agreement=0.5, p_yes=0.99)) == pytest.approx(0.5)
    assert set(m.contributions(inputs(agreement=1.0))) == {"p_yes", "agreement"}


def test_the_bundled_model_loads_and_its_threshold_is_the_context_default() -> None:
    m = load_model(BUNDLED)
    assert BUNDLED.is_file() and set(m.features) <= set(FEATURES)
    assert m.accept_confidence == pytest.approx(ACCEPT_CONFIDENCE) == Context().accept_confidence
    assert m.fit["questions"] >= 60 and "cross_validated" in m.fit  # fitted on a calibration run, not by hand


def test_calibration_error_and_auroc_on_known_values() -> None:
    # Two bins: 0.2 (1 of 5 right: calibrated) and 0.8 (2 of 5 right: 0.4 off) -> ECE = 0.5 * 0.4.
    conf = [0.2] * 5 + [0.8] * 5
    right = [True, False, False, False, False, True, True, False, False, False]
    c = calibration(conf, right)
    assert c.ece == pytest.approx(0.2)
    assert c.bins[2].count == 5 and c.bins[8].accuracy == pytest.approx(0.4)
    assert calibration([0.1, 0.2, 0.8, 0.9], [False, False, True, True]).auroc == 1.0
    assert calibration([0.9, 0.8, 0.2, 0.1], [False, False, True, True]).auroc == 0.0
    assert calibration([0.5, 0.6], [True, True]).auroc is None


def test_the_threshold_curve_trades_accuracy_for_latency() -> None:
    outs = [
        Outcome(confidence=0.9, draft_correct=True, fallback_correct=False, draft_seconds=10, fallback_seconds=8),
        Outcome(confidence=0.3, draft_correct=False, fallback_correct=True, draft_seconds=10, fallback_seconds=8),
    ]
    low, mid, always = threshold_curve(outs, [0.0, 0.5, 1.01])
    assert (low.accuracy, low.accepted, low.mean_seconds) == (0.5, 1.0, 10.0)
    assert (mid.accuracy, mid.accepted, mid.mean_seconds) == (1.0, 0.5, 14.0)
    assert (always.accuracy, always.accepted, always.mean_seconds) == (0.5, 0.0, 18.0)
    assert choose_threshold([low, mid, always]).threshold == 0.5
    # Within the tolerance of the best, the point that accepts the most drafts wins.
    assert choose_threshold([low, mid, always], tolerance=0.5).threshold == 0.0


def rows(n: int, seed: int = 0) -> list[ConfidenceRow]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        agreement = float(rng.integers(1, 6)) / 5
        right = bool(rng.random() < agreement**2)  # agreement predicts correctness
        x = inputs(agreement=agreement, answering=1.0, p_yes=0.9, sc_per_token=-2.0, margin=float(rng.random()))
        out.append(
            ConfidenceRow(
                id=f"q{i}",
                task="short_qa",
                inputs=x,
                draft_correct=right,
                fallback_correct=bool(rng.random() < 0.5),
                draft_seconds=10.0,
                fallback_seconds=8.0,
                standard_seconds=9.0,
            )
        )
    return out


def test_the_fit_learns_the_signal_and_reports_cross_validated_figures() -> None:
    m = fit_model(rows(300), name="fit-test")
    assert m.coef[FEATURES.index("agreement")] > 0.5
    assert m.predict(inputs(agreement=1.0, answering=1.0, p_yes=0.9, sc_per_token=-2.0)) > m.predict(
        inputs(agreement=0.2, answering=1.0, p_yes=0.9, sc_per_token=-2.0)
    )
    cv = m.fit["cross_validated"]
    assert cv["auroc"] > 0.7 and cv["ece"] < 0.15 and m.fit["questions"] == 300
    assert 0.0 <= m.accept_confidence <= 1.01


def test_the_fit_refuses_too_little_or_one_sided_data() -> None:
    with pytest.raises(FitError, match="at least 20"):
        fit_model(rows(10), name="x")
    same = [r.model_copy(update={"draft_correct": True}) for r in rows(40)]
    with pytest.raises(FitError, match="all right"):
        fit_model(same, name="x")
    with pytest.raises(FitError, match="unknown features"):
        fit_model(rows(40), name="x", features=["agreement", "luck"])


def test_the_fit_reads_only_the_features_it_is_given() -> None:
    m = fit_model(rows(200), name="subset", features=["agreement", "margin"])
    assert m.features == ["agreement", "margin"] and len(m.coef) == len(m.mean) == 2
    assert m.coef[0] > 0.5


def test_the_vote_weighs_each_answer_by_its_drafts_scores() -> None:
    # Paris: one draft at the best total; Lyon: two drafts 0.5 and 0.6 below it (exp(-0.5) + exp(-0.6) > 1).
    assert vote_order(["paris", "lyon", "lyon"], [-1.0, -1.5, -1.6]) == [1, 2, 0]
    # a clear best total outweighs two weak agreeing drafts
    assert vote_order(["paris", "lyon", "lyon"], [-1.0, -4.0, -4.0]) == [0, 1, 2]
    # drafts without a finite total weigh nothing while others have one
    assert vote_order(["paris", "lyon", "lyon"], [-1.0, -math.inf, -math.inf])[0] == 0


def test_the_calibration_set_holds_out_the_drafters_training_questions_and_the_dev_set() -> None:
    from app.confidence.pool import PoolSetConfig, build_pool_set, held_out
    from app.eval.dataset import load_questions
    from app.settings import get_settings
    from app.tune.data import DataConfig, load_pool, select_questions
    from tests.conftest import REPO, unavailable

    shared = get_settings().shared_dir
    root = shared if shared.is_absolute() else REPO / shared
    pool_path, dev_path = root / "train" / "pool.jsonl", root / "eval" / "dev" / "questions.jsonl"
    if not pool_path.is_file() or not dev_path.is_file():
        unavailable(f"shared pool or dev set not found under {root} (set SPECRAG_SHARED_DIR)")
    config = PoolSetConfig(per_source=5, passages=8)
    pool = load_pool(pool_path)
    trained = select_questions(pool, DataConfig(seed=0, questions_per_source=300, distractor_reservoir=400))
    used = {pool[i].id for chosen, reservoir in trained.values() for i in [*chosen, *reservoir]}
    held = {pool[i].id for ids in held_out(pool, config).values() for i in ids}
    assert held and not held & used and len(held) + len(used) == len(pool)
    questions = build_pool_set(pool_path, config)
    assert len(questions) == 15 and {q.id for q in questions} <= held
    dev = {" ".join(q.question.lower().split()) for q in load_questions(dev_path)}
    assert not {" ".join(q.question.lower().split()) for q in questions} & dev
    for q in questions:
        assert len(q.passages) == 8 and sum(p.origin == "own" for p in q.passages) == len(
            next(x for x in pool if x.id == q.id).passages
        )


def test_confidence_show_prints_a_model_and_refuses_a_bad_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    path = tmp_path / "m.json"
    coef = [0.0] * len(FEATURES)
    coef[0] = 1.25
    path.write_text(model(coef, accept=0.35).model_dump_json())
    done = CliRunner().invoke(app, ["confidence", "show", str(path)])
    assert done.exit_code == 0, done.output
    assert "test-v0" in done.stdout and "accept_confidence = 0.35" in done.stdout and "+1.250" in done.stdout
    bad = CliRunner().invoke(app, ["confidence", "show", str(tmp_path / "nope.json")])
    assert bad.exit_code == 1 and "confidence model not found" in bad.output and "Traceback" not in bad.output


def test_a_model_is_refused_under_another_self_consistency_scoring() -> None:
    """sc_per_token and the margin mean something else when ρ_sc is the answer's probability after the rationale:
    a model fitted on one scoring must not read drafts scored the other way."""
    v1 = load_model(BUNDLED_PAPER_SCORING)
    assert v1.self_consistency_of == "answer_and_rationale"  # files before the field: the paper's scoring
    v1.require_scoring("answer_and_rationale")
    assert v1.accept_confidence == pytest.approx(0.6)
    with pytest.raises(ConfidenceModelError, match="self_consistency_of='answer_and_rationale'"):
        v1.require_scoring("answer_given_rationale")
    bundled = load_model()
    assert bundled.self_consistency_of == Context().self_consistency_of == "answer_given_rationale"
    bundled.require_scoring("answer_given_rationale")
    fitted = fit_model(rows(60), name="given", self_consistency_of="answer_given_rationale")
    fitted.require_scoring("answer_given_rationale")
    with pytest.raises(ConfidenceModelError, match="fitted that way") as refused:
        fitted.require_scoring("answer_and_rationale")
    assert f"confidence_model={BUNDLED_PAPER_SCORING}, its threshold accept_confidence=0.6)" in str(refused.value)


def test_fit_from_a_run_refuses_what_is_not_a_calibration_set(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    run = tmp_path / "run"
    run.mkdir()
    none = CliRunner().invoke(app, ["confidence", "fit", "--from-run", str(run)])
    assert none.exit_code == 1 and "no run.json" in none.output and "Traceback" not in none.output
    data = tmp_path / "questions.jsonl"
    (run / "run.json").write_text(json.dumps({"dataset": str(data), "context": {}}))
    plain = CliRunner().invoke(app, ["confidence", "fit", "--from-run", str(run)])
    assert plain.exit_code == 1 and "not a calibration set" in plain.output
    dev = tmp_path / "eval" / "dev" / "questions.jsonl"
    (run / "run.json").write_text(json.dumps({"dataset": str(dev), "context": {}}))
    refused = CliRunner().invoke(app, ["confidence", "fit", "--from-run", str(run)])
    assert refused.exit_code == 1 and "eval/dev" in refused.output
    bad = CliRunner().invoke(app, ["confidence", "fit", "--from-run", str(run), "--system", "vote"])
    assert bad.exit_code == 1 and "unknown --system" in bad.output


def test_fit_from_an_exported_run_restores_the_question_and_passages_it_reads(tmp_path: Path) -> None:
    from app.cli_errors import CLIError
    from app.confidence.cli import _with_dataset_text
    from app.eval.export import without_data
    from app.eval.runner import RESULTS, QuestionRecord

    dataset = tmp_path / "pool.jsonl"
    item = {
        "id": "nq-1",
        "question": "Where is the Eiffel Tower?",
        "answers": ["Paris"],
        "task": "short_qa",
        "passages": [{"title": "Eiffel Tower", "text": "The Eiffel Tower is in Paris."}],
    }
    dataset.write_text(json.dumps(item) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    full = QuestionRecord(id="nq-1", task="short_qa", question=item["question"], gold=["Paris"])
    (run / RESULTS).write_text(without_data(full).model_dump_json() + "\n", encoding="utf-8")
    (restored,) = _with_dataset_text(run, {"dataset": str(dataset)})
    assert restored.question == item["question"] and restored.gold == ["Paris"]
    assert [p.text for p in restored.passages] == ["The Eiffel Tower is in Paris."]
    with pytest.raises(CLIError, match="without the dataset's text"):
        _with_dataset_text(run, {"dataset": str(tmp_path / "gone.jsonl")})


def test_the_terms_a_task_fixes_are_folded_into_one() -> None:
    from app.confidence.features import task_terms

    terms = {"p_yes": 1.5, "mcq": -0.42, "open_book_mcq": 0.6, "closed_book_top": 0.3, "open_book_span": -0.9}
    short = task_terms(terms, mcq=False)  # the multiple-choice-only inputs are 0 on every short question
    assert short == {"p_yes": 1.5, "open_book_span": -0.9, "task": pytest.approx(0.48)}
    choice = task_terms(terms, mcq=True)  # and the span-only ones on every multiple-choice question
    assert choice == {"p_yes": 1.5, "open_book_mcq": 0.6, "closed_book_top": 0.3, "task": pytest.approx(-1.32)}
    assert task_terms({"p_yes": 1.0}, mcq=False) == {"p_yes": 1.0}  # a model that reads none of them
