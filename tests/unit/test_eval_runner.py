"""The evaluation harness with scripted fakes: every system on the same passages, selection ablations re-rank the
same drafts, usage is counted per system, resuming skips finished work, and the report files are written."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from app.eval import export
from app.eval.runner import DATASET_FIELDS, RESULTS, EvalError, load_records
from app.eval.session import EvalOptions, evaluate
from app.eval.systems import SYSTEMS, Models, pick
from app.llm.metered import MeteredModel
from app.llm.protocol import ChatPrompt
from graphs.context import Context
from tests.fakes import FakeEmbedder, FakeLLM, p_yes_confidence

PASSAGES = [
    ("Paris", "Paris is the capital of France.", 1.9),
    ("Lyon", "Lyon is a city in France known for food.", 1.7),
    ("Berlin", "Berlin is the capital of Germany.", 1.5),
    ("Rome", "Rome is the capital of Italy.", 1.4),
    ("Seine", "The Seine flows through Paris, the capital.", 1.3),
    ("Alps", "The Alps span France and Italy.", 1.2),
]


def _question(i: int, task: str) -> dict[str, object]:
    row: dict[str, object] = {
        "id": f"{task}-{i}",
        "question": "What is the capital of France?",
        "answers": ["Paris"],
        "task": task,
        "passages": [{"title": t, "text": x, "score": s} for t, x, s in PASSAGES],
    }
    if task == "mcq":
        row.update(answers=["B"], choices={"A": "Lyon", "B": "Paris", "C": "Rome"})
    return row


def drafter_reply(prompt: ChatPrompt) -> str:
    """Answers with the title of the first document shown."""
    first = re.search(r'title="([^"]+)"', prompt.messages[-1].content)
    return f"The documents mention it.\nAnswer: {first.group(1) if first else 'nothing'}"


def judge(continuation: str) -> tuple[float, float]:
    """The verifier prefers drafts (and REPLUG candidates) that say Paris (choice B of the multiple-choice one)."""
    liked = "Paris" in continuation or re.search(r"Answer: B(\n|$)", continuation) is not None
    return (-1.0, 0.95) if liked else (-6.0, 0.6)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    rows = [_question(i, "short_qa") for i in range(2)] + [_question(0, "mcq")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _models() -> Models:
    return Models(
        drafter=MeteredModel(FakeLLM(reply=drafter_reply, name="fake-drafter")),
        verifier=MeteredModel(FakeLLM(reply=lambda p: "Paris", judge=judge, name="fake-verifier")),
        embedder=FakeEmbedder(),
    )


def _options(dataset: Path, out: Path, systems: list[str], **kw: object) -> EvalOptions:
    context = Context(top_n=4, n_drafts=3, per_draft=2, max_rounds=1)
    return EvalOptions(dataset=dataset, systems=systems, out=out, context=context, progress=False, **kw)  # type: ignore[arg-type]


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]


def test_all_systems_on_the_same_questions(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = evaluate(_options(dataset, out, list(SYSTEMS)), Console(file=None, quiet=True), _models())
    assert summary is not None and summary.questions == 3
    assert [s.system for s in summary.systems] == list(SYSTEMS)
    records = load_records(out / RESULTS)
    context = Context(top_n=4, n_drafts=3, per_draft=2, max_rounds=1)
    for record in records.values():
        assert len(record.passages) == 4  # top_n of the given passages, in order
        spec = record.systems["speculative"]
        assert len(spec.drafts) == 3 and spec.usage["drafter"].calls == 3 and spec.usage["verifier"].calls == 3
        assert spec.chosen == pick(spec.drafts, context)
        # the verifier's preference decides; a multiple-choice draft answers with the letter its text names
        assert spec.answer == ("B" if record.choices else "Paris")
        if record.choices:
            assert all((d.answer in record.choices) == (d.outcome == "answer") for d in spec.drafts)
        std = record.systems["standard"]
        assert set(std.usage) == {"verifier"} and std.usage["verifier"].calls == 1
        # REPLUG: one answer per passage, then every candidate scored under every passage.
        rep = record.systems["replug"]
        assert rep.usage["verifier"].calls == 4 + 4 * len(rep.candidates)
        assert rep.candidates[0].answer == "Paris" == rep.answer
        # Selection systems re-rank the same drafts and spend no model calls of their own.
        only = record.systems["drafter-only"]
        assert only.derived_from == "speculative" and "verifier" not in only.usage
        assert only.seconds == pytest.approx(spec.seconds - spec.timings["verify"], abs=1e-3)
        assert only.chosen == max(range(3), key=lambda i: (spec.drafts[i].draft or 0, -i))
        assert record.systems["no-self-reflection"].seconds == spec.seconds
        # Re-verifying systems score speculative's drafts again (one request per answering draft), then pick; then
        # the verifier's closed-book belief in the pick (one request per letter, or one for a short answer), and its
        # open-book belief after the pick's own passages (as many requests again).
        joint = record.systems["joint-scores"]  # the run's own setting: the same scores, the same choice
        answering = sum(d.outcome != "abstain" for d in spec.drafts)
        believed = (len(record.choices) if record.choices else 1) if joint.chosen is not None else 0
        assert (joint.closed_book is not None) == (joint.chosen is not None) == (joint.open_book is not None)
        assert joint.usage["verifier"].calls == answering + 2 * believed
        assert joint.usage["drafter"] == spec.usage["drafter"]
        assert [d.total for d in joint.drafts] == [d.total for d in spec.drafts] and joint.chosen == spec.chosen
        assert joint.seconds == pytest.approx(spec.seconds - spec.timings["verify"] + joint.timings["verify"])
        conditioned = record.systems["rationale-conditioned"]  # scored: the answer after its rationale
        for d, base in zip(conditioned.drafts, spec.drafts, strict=True):
            assert (d.answer, d.rationale, d.draft) == (base.answer, base.rationale, base.draft)
            if d.outcome != "abstain":
                scored = f"Rationale: {d.rationale}\nAnswer: {d.answer}"
                assert d.self_consistency == judge(scored)[0] and d.self_consistency_tokens == len(d.answer.split())
        assert len(record.curves["speculative"]) == 3 and record.curves["speculative"][-1] == spec.correct
        assert record.systems["random-subsets"].drafts  # its own drafts
        # the default graph: accepts its best draft, or falls back to the verifier reading all passages
        reflect = record.systems["speculative+reflect"]
        assert reflect.decision in ("accept", "fallback") and reflect.confidence is not None
        assert spec.decision == "accept"  # speculative never falls back
        same = spec if reflect.decision == "accept" else std
        assert reflect.answer == same.answer and reflect.correct == same.correct
    mcq = records["mcq-0"]
    assert mcq.systems["standard"].choice == "B" and mcq.systems["standard"].correct
    files = ["report.md", "summary.json", "accuracy_vs_latency.png", "accuracy_vs_drafts.png", "traces.sqlite"]
    for name in [*files, "reliability.png", "fallback_curve.png"]:
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| speculative |" in report and "Accuracy against the number of drafts" in report
    assert summary.calibration is not None and summary.calibration.overall.n == 3
    assert "## Calibration of the confidence" in report and "always fall back" in report
    assert sum(summary.calibration.decisions.values()) == 3 and summary.calibration.reflect_agrees == 1.0


def test_beliefs_are_recorded_so_the_replay_sees_what_the_graph_saw(dataset: Path, tmp_path: Path) -> None:
    from app.confidence.model import load_model
    from app.eval.confidence import inputs_of

    model = p_yes_confidence(tmp_path, closed_book=True, open_book=True)
    opts = _options(dataset, tmp_path / "run", ["standard", "speculative", "speculative+reflect"])
    opts = dataclasses.replace(opts, context=opts.context.model_copy(update={"confidence_model": model}))
    evaluate(opts, Console(file=None, quiet=True), _models())
    for record in load_records(tmp_path / "run" / RESULTS).values():
        graph = record.systems["speculative+reflect"]  # the default graph computes its confidence and beliefs
        assert graph.closed_book is not None and graph.open_book is not None and graph.confidence is not None
        x = inputs_of(graph, record)
        assert x is not None
        assert (x.closed_book_mcq if record.choices else x.closed_book_span) == graph.closed_book.logprob
        assert (x.open_book_mcq if record.choices else x.open_book_span) == graph.open_book.logprob
        assert load_model(model).predict(x) == pytest.approx(graph.confidence, abs=1e-3)
        # The paper's graph computes no confidence and no belief (its time has none of their requests); the eval
        # records the beliefs afterwards, untimed, for the calibration section: the same as the graph's.
        paper = record.systems["speculative"]
        assert paper.confidence is None and paper.decision == "accept" and paper.chosen == graph.chosen
        beliefs = 2 * (len(record.choices) if record.choices else 1)  # closed and open book: each letter, or the span
        assert paper.usage["verifier"].calls == graph.usage["verifier"].calls - beliefs
        for mine, its in ((paper.closed_book, graph.closed_book), (paper.open_book, graph.open_book)):
            assert mine is not None and mine.top == its.top
            assert mine.logprob == pytest.approx(its.logprob, abs=1e-3)  # the graph's inputs keep 4 decimals


def test_resume_skips_done_questions_and_adds_only_missing_systems(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    models = _models()
    evaluate(_options(dataset, out, ["standard"], limit=2), Console(quiet=True), models)
    assert len(_lines(out)) == 2 and models.drafter.inner.calls == []  # type: ignore[attr-defined]
    # The same command again does nothing.
    evaluate(_options(dataset, out, ["standard"], limit=2), Console(quiet=True), models)
    assert len(_lines(out)) == 2
    # A torn last line (a killed write) is cut off, and that question is redone.
    with (out / RESULTS).open("a") as f:
        f.write('{"id": "mcq-0", "task": "mc')
    evaluate(_options(dataset, out, ["standard"]), Console(quiet=True), models)
    assert [r["id"] for r in _lines(out)] == ["short_qa-0", "mcq-0", "short_qa-1"]
    # More systems: only those run, for every question; standard is not recomputed.
    summary = evaluate(_options(dataset, out, ["standard", "no-verifier"]), Console(quiet=True), models)
    assert summary is not None and [s.system for s in summary.systems] == ["standard", "speculative", "no-verifier"]
    added = _lines(out)[3:]
    assert len(added) == 3
    assert all(set(r["systems"]) == {"speculative", "no-verifier"} for r in added)


def test_other_settings_in_the_same_out_dir_are_refused(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    evaluate(_options(dataset, out, ["standard"], limit=1), Console(quiet=True), _models())
    other = EvalOptions(
        dataset=dataset, systems=["standard"], out=out, context=Context(top_n=3), progress=False, limit=1
    )
    with pytest.raises(EvalError, match=r"\(differ: context: top_n 4 -> 3, max_rounds 1 -> 2\)"):
        evaluate(other, Console(quiet=True), _models())
    restarted = evaluate(dataclasses.replace(other, restart=True), Console(quiet=True), _models())
    assert restarted is not None and restarted.questions == 1


def test_unknown_system_is_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"unknown system.*valid: standard"):
        evaluate(_options(dataset, tmp_path / "run", ["standard", "oracle"]), Console(quiet=True), _models())


def test_export_drops_dataset_text_and_a_run_resumes_from_it(dataset: Path, tmp_path: Path) -> None:
    out, copy = tmp_path / "run", tmp_path / "copy"
    models = _models()
    verifier_calls: list[str] = models.verifier.inner.calls  # type: ignore[attr-defined]
    systems = ["standard", "speculative"]
    evaluate(_options(dataset, out, systems, limit=1), Console(quiet=True), models)
    one_question = list(verifier_calls)  # what short_qa-0 cost the verifier
    evaluate(_options(dataset, out, systems, limit=2), Console(quiet=True), models)
    assert export.main([str(out), str(copy)]) == 0
    text = (copy / RESULTS).read_text()
    assert "capital of France" not in text and "Lyon is a city" not in text  # question and passages dropped
    records = load_records(copy / RESULTS)
    assert set(records) == {"short_qa-0", "mcq-0"}
    kept = load_records(out / RESULTS)
    for record in records.values():
        assert record.question == "" and record.gold == [] and record.passages == [] and record.choices is None
        assert record.systems == kept[record.id].systems and record.curves == kept[record.id].curves
    # Resuming from the copy redoes nothing it holds: only the third question (shaped like the first) runs.
    before = len(verifier_calls)
    again = evaluate(_options(dataset, copy, systems), Console(quiet=True), models)
    assert again is not None and again.questions == 3
    assert [r["id"] for r in _lines(copy)[2:]] == ["short_qa-1"]
    assert verifier_calls[before:] == one_question


def test_a_copied_record_gets_the_datasets_text_back_as_the_run_chunked_it(dataset: Path, tmp_path: Path) -> None:
    from app.eval.dataset import load_questions

    out = tmp_path / "run"
    long_text = " ".join(f"word{i}" for i in range(400))  # over 250 words: the run split it into windows
    rows = [json.loads(x) for x in dataset.read_text().splitlines()]
    rows[0]["passages"].insert(1, {"title": "Long", "text": long_text, "score": 1.8})
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    evaluate(_options(dataset, out, ["speculative"], limit=1), Console(quiet=True), _models())
    kept = load_records(out / RESULTS)["short_qa-0"]
    assert kept.passages[1].text != long_text and kept.passages[1].title == "Long"  # the run chunked it
    question = load_questions(dataset)[0]
    emptied = export.without_data(kept)
    assert all(not getattr(emptied, name) for name in DATASET_FIELDS)  # the fields load_records merges are empty
    assert emptied.model_copy(update={name: getattr(kept, name) for name in DATASET_FIELDS}) == kept  # only those
    restored = export.with_data(emptied, question)
    # Every chunk comes back; the run kept the first top_n x max_rounds, which the drafts' indices point into.
    assert restored.passages[: len(kept.passages)] == kept.passages and len(restored.passages) > len(kept.passages)
    assert restored.model_copy(update={"passages": kept.passages}) == kept
    assert export.with_data(kept, question) is kept  # a record with its text is left alone
    started = kept.model_copy(update={"passages": []})  # as --reuse-from starts one: the question, no passages
    assert export.with_data(started, question).passages == restored.passages
    other = load_questions(dataset)[1]
    assert export.with_data(export.without_data(kept), other).question == ""  # another question's text: no


def test_export_of_a_directory_without_a_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main([str(tmp_path), str(tmp_path / "copy")]) == 1
    assert "not a specrag eval --out directory" in capsys.readouterr().err


def test_reuse_copies_the_standard_results_of_an_earlier_run_with_another_drafter(
    dataset: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    evaluate(_options(dataset, first, ["standard", "speculative"]), Console(file=None, quiet=True), _models())
    models = _models()
    models.drafter = MeteredModel(FakeLLM(reply=drafter_reply, name="another-drafter"))
    fake_verifier = FakeLLM(reply=lambda p: "Paris", judge=judge, name="fake-verifier")
    models.verifier = MeteredModel(fake_verifier)
    summary = evaluate(
        _options(dataset, second, ["standard", "speculative"], reuse_from=first),
        Console(file=None, quiet=True),
        models,
    )
    assert summary is not None and summary.questions == 3
    old, new = load_records(first / RESULTS), load_records(second / RESULTS)
    for qid, record in new.items():
        std = record.systems["standard"]
        assert std.reused_from == str(first)
        assert std.answer == old[qid].systems["standard"].answer and std.seconds == old[qid].systems["standard"].seconds
        assert record.systems["speculative"].reused_from is None  # the drafter changed: measured again
        # the reused line holds no passages; the run's own line does, and the merged record keeps them (the
        # confidence's evidence features read them when the report replays the drafts)
        assert record.passages and record.passages == old[qid].passages
    reused = json.loads((second / "reused.json").read_text())
    assert reused["systems"] == {"standard": 3} and reused["unchecked"] == []
    assert "reused" in summary.settings
    # the verifier only warmed up and scored drafts: standard never ran
    assert [c for c in fake_verifier.calls if c.startswith("generate")] == ["generate x1"]
    assert sum(c.startswith("score") for c in fake_verifier.calls) == 3


def test_reuse_refuses_a_run_with_another_verifier(dataset: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    evaluate(_options(dataset, first, ["standard"]), Console(file=None, quiet=True), _models())
    models = _models()
    models.verifier = MeteredModel(FakeLLM(reply=lambda p: "Paris", judge=judge, name="another-verifier"))
    with pytest.raises(EvalError, match=r"models\.verifier"):
        evaluate(_options(dataset, second, ["standard"], reuse_from=first), Console(file=None, quiet=True), models)


def test_no_calibration_section_from_records_that_lack_a_belief_the_model_reads(tmp_path: Path) -> None:
    from app.confidence.features import Belief
    from app.confidence.model import load_model
    from app.eval.runner import QuestionRecord
    from app.eval.session import _confidence_model
    from app.eval.systems import DraftRecord, SystemResult

    def record(qid: str, *, open_book: Belief | None, outcome: str = "answer") -> QuestionRecord:
        draft = DraftRecord(
            round=0, answer="Paris", rationale="r", passages=[0], parsed=True, outcome=outcome, draft=-1.0,
            draft_tokens=1, self_consistency=-1.0, self_consistency_tokens=1, self_reflection=-0.1, total=-2.1,
            prompt_tokens=5,
        )  # fmt: skip
        result = SystemResult(
            answer="Paris", chosen=0, drafts=[draft], closed_book=Belief(logprob=-1.0, top=False), open_book=open_book
        )
        return QuestionRecord(id=qid, task="short_qa", question="q", gold=["Paris"], systems={"speculative": result})

    path = p_yes_confidence(tmp_path, closed_book=True, open_book=True)
    context = Context.model_validate({"confidence_model": path})
    out = Console(file=None, quiet=True)
    believed = record("a", open_book=Belief(logprob=-0.5, top=False))
    assert _confidence_model(context, ["speculative"], out, [believed]) == (load_model(path), "speculative")
    older = record("b", open_book=None)  # made before the open-book belief was recorded: its input would read 0
    assert _confidence_model(context, ["speculative"], out, [believed, older])[0] is None
    abstained = record("c", open_book=None, outcome="abstain")  # no selected answer, nothing to believe in
    assert _confidence_model(context, ["speculative"], out, [believed, abstained])[0] is not None
    reads_less = Context.model_validate({"confidence_model": p_yes_confidence(tmp_path, closed_book=True)})
    assert _confidence_model(reads_less, ["speculative"], out, [believed, older])[0] is not None


def test_no_calibration_section_from_unverified_drafts_but_from_their_re_verification(tmp_path: Path) -> None:
    from app.confidence.features import Belief
    from app.confidence.model import load_model
    from app.eval.runner import QuestionRecord
    from app.eval.session import _confidence_model
    from app.eval.systems import DraftRecord, SystemResult

    def result(total: float | None) -> SystemResult:
        scored = total is not None
        draft = DraftRecord(
            round=0, answer="Paris", rationale="r", passages=[0], parsed=True, outcome="answer", draft=-1.0,
            draft_tokens=1, self_consistency=-1.0 if scored else None, self_consistency_tokens=1 if scored else 0,
            self_reflection=-0.1 if scored else None, total=total, prompt_tokens=5,
        )  # fmt: skip
        belief = Belief(logprob=-1.0, top=False)
        return SystemResult(answer="Paris", chosen=0, drafts=[draft], closed_book=belief, open_book=belief)

    path = p_yes_confidence(tmp_path, closed_book=True, open_book=True)
    context = Context.model_validate({"confidence_model": path})
    out = Console(file=None, quiet=True)
    unverified = QuestionRecord(
        id="a", task="short_qa", question="q", gold=["Paris"], systems={"speculative": result(None)}
    )
    assert _confidence_model(context, ["speculative"], out, [unverified])[0] is None
    both = QuestionRecord(
        id="a",
        task="short_qa",
        question="q",
        gold=["Paris"],
        systems={"speculative": result(None), "rationale-conditioned": result(-2.1)},
    )
    systems = ["speculative", "rationale-conditioned"]
    assert _confidence_model(context, systems, out, [both]) == (load_model(path), "rationale-conditioned")
