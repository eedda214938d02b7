"""Driving an evaluation run: every requested system on every question, one JSON line per question, resumable.

``--out DIR`` holds ``run.json`` (the settings the run was started with), ``results.jsonl`` (appended and
flushed after each question: an interrupted run loses at most the question in progress, and a re-run skips what
is done), ``traces.sqlite`` (the graphs' traces: ``specrag trace RUN_ID --traces DIR/traces.sqlite``) and the
report files. Running again with more systems computes only the missing ones for each question.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.eval.dataset import EvalQuestion
from app.eval.metrics import score_answer
from app.eval.passages import PassagePool, given_pool, retrieved_pool
from app.eval.systems import (
    GENERATING,
    REVERIFICATIONS,
    SELECTIONS,
    SYSTEMS,
    Models,
    SystemResult,
    pick,
    reverify,
    run_system,
    select,
)
from app.store.protocol import VectorStore
from app.trace.store import TraceStore
from graphs.context import Context

RESULTS = "results.jsonl"
CURVES = ("speculative", "speculative-base", "speculative-verifier-drafts", "random-subsets", "speculative+compress")
"""Drafting systems whose accuracy against the number of drafts is recorded."""
RUN_INFO = "run.json"


class EvalError(ValueError):
    """The run cannot start as asked (the message says why and what to do)."""


class PassageOut(BaseModel):
    """A passage of the pool, as the record keeps it."""

    title: str
    text: str
    score: float | None


class QuestionRecord(BaseModel):
    """Everything one question produced (one line of ``results.jsonl``; later lines may add systems)."""

    id: str
    task: str
    question: str
    gold: list[str]
    choices: dict[str, str] | None = None
    passages: list[PassageOut] = Field(default_factory=list)
    systems: dict[str, SystemResult] = Field(default_factory=dict)
    curves: dict[str, list[bool]] = Field(
        default_factory=dict,
        description="Per drafting system: correct when choosing among the first j drafts, j = 1..m",
    )


DATASET_FIELDS: tuple[str, ...] = ("question", "gold", "choices", "passages")
"""The fields of a :class:`QuestionRecord` that hold the dataset's text (a data-free copy has them empty)."""


KNOB_BEFORE: dict[str, Any] = {"self_consistency_of": "answer_and_rationale"}
"""What a run made before a context knob existed did, where that is not the knob's default now."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What a run evaluates (what must match for a re-run to resume it)."""

    dataset: Path
    context: Context
    seed: int
    store: Path | None
    models: dict[str, str]
    prompts: dict[str, str] = field(default_factory=dict)
    """sha256 of the prompt files the standard systems read (``app.eval.reuse.prompt_hashes``)."""

    def fingerprint(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset.resolve()),
            "context": self.context.model_dump(exclude={"store"}),
            "seed": self.seed,
            "store": str(self.store.resolve()) if self.store else None,
            "models": self.models,
            "prompts": self.prompts,
        }


def ordered_systems(names: Sequence[str]) -> list[str]:
    """The requested systems in report order, with ``speculative`` added when a selection or re-verifying system
    needs it.

    Raises:
        EvalError: An unknown system name.
    """
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise EvalError(f"unknown system(s) {', '.join(unknown)}; valid: {', '.join(SYSTEMS)}")
    derived = set(SELECTIONS) | set(REVERIFICATIONS)
    wanted = set(names) | ({"speculative"} if set(names) & derived else set())
    return [n for n in SYSTEMS if n in wanted]


def open_run(out: Path, spec: RunSpec, *, restart: bool = False) -> dict[str, QuestionRecord]:
    """Prepare ``out`` and return the records already there (merged per question).

    Raises:
        EvalError: ``out`` holds a run made with other settings (and ``restart`` is False), or is not a directory.
    """
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    info, results = out / RUN_INFO, out / RESULTS
    if restart:
        for name in (RUN_INFO, RESULTS, "traces.sqlite", "reused.json"):
            (out / name).unlink(missing_ok=True)
    if info.exists():
        before = json.loads(info.read_text(encoding="utf-8"))
        now = spec.fingerprint()
        # A context knob added since the run started matches when it has its default (the run had no such knob).
        defaults = Context().model_dump(exclude={"store"}) | KNOB_BEFORE
        old_context = before.get("context", {})
        before["context"] = {k: old_context.get(k, defaults[k]) for k in now["context"]}
        before.setdefault("prompts", now["prompts"])  # runs before prompt hashes were recorded
        changed = [k for k in now if before.get(k) != now[k]]
        if changed:
            knobs = [
                f"{k} {before['context'][k]!r} -> {v!r}" for k, v in now["context"].items() if before["context"][k] != v
            ]
            parts = [f"context: {', '.join(knobs)}" if k == "context" else k for k in changed]
            raise EvalError(
                f"{out} holds a run made with other settings (differ: {'; '.join(parts)}); pass the run's values to "
                "resume it, use another --out, or --restart to discard it"
            )
    else:
        info.write_text(json.dumps(spec.fingerprint(), indent=2) + "\n", encoding="utf-8")
    return load_records(results)


def load_records(path: Path) -> dict[str, QuestionRecord]:
    """Records of ``results.jsonl`` merged per question id; a torn last line (a killed run) is cut off."""
    records: dict[str, QuestionRecord] = {}
    if not path.exists():
        return records
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good = len(raw)
    if lines and lines[-1].strip():  # no final newline: the last write did not finish
        good = len(raw) - len(lines[-1])
        lines = lines[:-1]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = QuestionRecord.model_validate_json(line)
        except ValueError as exc:
            raise EvalError(f"{path}:{number} is not a result record ({type(exc).__name__}); move it away") from None
        if record.id in records:
            merged = records[record.id]
            merged.systems.update(record.systems)
            merged.curves.update(record.curves)
            # a record made without the dataset's text (reused or exported) takes it from a later line that has it
            for name in DATASET_FIELDS:
                if not getattr(merged, name) and getattr(record, name):
                    setattr(merged, name, getattr(record, name))
        else:
            records[record.id] = record
    if good < len(raw):
        with path.open("r+b") as f:
            f.truncate(good)
    return records


def append_record(path: Path, record: QuestionRecord) -> None:
    """Append one line and make it durable before the question counts as done."""
    with path.open("a", encoding="utf-8") as f:
        f.write(record.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def missing(record: QuestionRecord | None, systems: Sequence[str]) -> list[str]:
    """The systems a question still needs."""
    done = record.systems if record else {}
    return [s for s in systems if s not in done]


def pool_for(q: EvalQuestion, models: Models, context: Context, store: VectorStore | None) -> PassagePool:
    """The question's passages: the dataset's, or retrieved once from ``store`` (enough for every round)."""
    limit = context.top_n * context.max_rounds
    if store is None:
        return given_pool(q, models.embedder, limit=limit)
    query = q.question if not q.choices else f"{q.question} {' '.join(q.choices.values())}"
    return retrieved_pool(query, store, models.embedder, limit=limit, mode=context.search_mode)


def evaluate_question(
    q: EvalQuestion,
    systems: Sequence[str],
    *,
    context: Context,
    seed: int,
    models: Models,
    store: VectorStore | None,
    traces: TraceStore | None,
    earlier: QuestionRecord | None = None,
) -> QuestionRecord:
    """Run the systems ``q`` still needs; return a record of just those (to append)."""
    todo = missing(earlier, systems)
    pool = pool_for(q, models, context, store)
    record = QuestionRecord(
        id=q.id,
        task=q.task,
        question=q.question,
        gold=q.answers,
        choices=q.choices,
        passages=[
            PassageOut(title=c.title, text=c.text, score=s) for c, s in zip(pool.chunks, pool.scores, strict=True)
        ],
    )
    asked = q.prompt_question()
    for name in todo:
        if name in GENERATING:
            record.systems[name] = run_system(name, asked, context, models, pool, traces, choices=q.choices)
    base = record.systems.get("speculative") or (earlier.systems.get("speculative") if earlier else None)
    for name in todo:
        if name in REVERIFICATIONS and base is not None:
            record.systems[name] = reverify(base, name, asked, context, models, choices=q.choices, passages=pool.chunks)
    for name in todo:
        if name in SELECTIONS and base is not None:
            rng = random.Random(f"{seed}:{q.id}:{name}")
            record.systems[name] = select(base, name, context, rng)
    for result in record.systems.values():
        s = score_answer(result.answer, q.answers, q.choices)
        result.correct, result.f1, result.choice = s.correct, s.f1, s.choice
    for name in CURVES:
        if name in record.systems and name in todo:
            record.curves[name] = drafts_curve(record.systems[name], q, context)
    return record


def drafts_curve(result: SystemResult, q: EvalQuestion, context: Context) -> list[bool]:
    """Whether the answer would be correct with only the first j drafts of the first round (j = 1..m): subsets are
    taken in turn, least-used passages first, so the first j are those of a run with m = j (same scores), except
    where covering every passage replaced a repeated passage in an earlier subset."""
    first = [d for d in result.drafts if d.round == 0][: context.n_drafts]
    curve = []
    for j in range(1, len(first) + 1):
        chosen = pick(first[:j], context)
        answer = first[chosen].answer if chosen is not None else ""
        curve.append(score_answer(answer, q.answers, q.choices).correct)
    return curve


def run_questions(
    questions: Sequence[EvalQuestion],
    systems: Sequence[str],
    *,
    out: Path,
    context: Context,
    seed: int,
    models: Models,
    store: VectorStore | None,
    traces: TraceStore | None,
    records: dict[str, QuestionRecord],
    on_done: Callable[[QuestionRecord], None] = lambda r: None,
) -> Iterator[QuestionRecord]:
    """Evaluate the questions that still need systems, appending each record as soon as it is complete.

    Yields:
        Each newly appended record (merged with what was already there).
    """
    for q in questions:
        earlier = records.get(q.id)
        if not missing(earlier, systems):
            continue
        new = evaluate_question(
            q, systems, context=context, seed=seed, models=models, store=store, traces=traces, earlier=earlier
        )
        append_record(out / RESULTS, new)
        if earlier is not None:
            earlier.systems.update(new.systems)
            earlier.curves.update(new.curves)
            new = earlier
        records[q.id] = new
        on_done(new)
        yield new
