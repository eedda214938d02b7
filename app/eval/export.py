"""Copy an evaluation's results without the dataset's text, so a long run can be kept in the repository.

``python -m app.eval.export OUT DEST`` writes ``DEST/run.json`` and ``DEST/results.jsonl``: every record keeps
its id, task, systems (answers, correctness, scores, tokens, timings) and curves, and drops what came from the
dataset (question, gold answers, choices, passages). ``specrag eval`` resumes from such a copy: put it in
``--out`` (``cp -r DEST OUT``) and run the same command; finished questions are not redone and the report is
built from the records with the dataset's text restored (:func:`with_data`: the question, gold answers, choices
and the passages as the run chunked them, which the confidence's evidence features read). Traces
(``traces.sqlite``) are not copied: they hold the passages.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from app.eval.dataset import EvalQuestion
from app.eval.passages import given_chunks
from app.eval.runner import RESULTS, RUN_INFO, PassageOut, QuestionRecord, load_records


def without_data(record: QuestionRecord) -> QuestionRecord:
    """The record with the dataset's text removed (question, gold answers, choices, passages)."""
    return record.model_copy(update={"question": "", "gold": [], "choices": None, "passages": []})


def with_data(record: QuestionRecord, question: EvalQuestion) -> QuestionRecord:
    """A data-free record (:func:`without_data`) with ``question``'s text restored, field by field where missing (a
    record that ``--reuse-from`` started holds the question but no passages); other records unchanged.

    The passages are the dataset's, all of them chunked as the run chunked them (``app.eval.passages.given_chunks``);
    the run kept the first ``top_n x max_rounds``, so the drafts' passage indices point where they pointed in the run
    (only for runs on the dataset's passages, not ``--store``).
    """
    if record.id != question.id or (record.question and record.passages):
        return record
    passages = [PassageOut(title=title, text=text, score=score) for _, title, text, score in given_chunks(question)]
    restored = {
        "question": question.question,
        "gold": question.answers,
        "choices": question.choices,
        "passages": passages,
    }
    return record.model_copy(update={k: v for k, v in restored.items() if not getattr(record, k)})


def with_dataset_text(
    records: Mapping[str, QuestionRecord], questions: Iterable[EvalQuestion]
) -> dict[str, QuestionRecord]:
    """``records`` (by question id) with :func:`with_data` applied to each whose question is among ``questions``."""
    wanted = {q.id: q for q in questions}
    return {qid: with_data(r, wanted[qid]) if qid in wanted else r for qid, r in records.items()}


def export(out: Path, dest: Path) -> int:
    """Write the data-free copy of ``out`` to ``dest``; returns the number of records.

    Raises:
        FileNotFoundError: ``out`` holds no ``run.json``.
    """
    if not (out / RUN_INFO).is_file():
        raise FileNotFoundError(f"{out} holds no {RUN_INFO}: not a specrag eval --out directory")
    records = load_records(out / RESULTS)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / RUN_INFO, dest / RUN_INFO)
    with (dest / RESULTS).open("w", encoding="utf-8") as f:
        for record in records.values():
            f.write(without_data(record).model_dump_json() + "\n")
    return len(records)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m app.eval.export OUT DEST", file=sys.stderr)
        return 2
    try:
        n = export(Path(argv[0]), Path(argv[1]))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} records without dataset text to {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
