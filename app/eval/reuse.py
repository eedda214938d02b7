"""Reusing the results of systems that a change cannot affect, from an earlier run (``specrag eval --reuse-from``).

A new drafter changes nothing that ``standard``, ``standard+compress`` or ``replug`` compute: they never run the
drafter. Rerunning them on 150 questions costs about an hour on two cores, so a run may copy their results from an
earlier run of the same dataset when everything they read is the same: the dataset (by file name and question id),
the seed, the store, the verifier and the embedder, and every context knob except the ones only drafting reads
(``DRAFTING_KNOBS``). The prompt files those systems read are compared when the earlier run recorded their sha256
(runs from this version on do); a run that predates that is reused with a warning, and ``reused.json`` in ``--out``
records what was copied, from where, and what could not be checked. Copied results keep their latencies (measured
in the earlier run) and are marked ``reused_from``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.eval.dataset import EvalQuestion
from app.eval.metrics import score_answer
from app.eval.runner import RESULTS, RUN_INFO, EvalError, QuestionRecord, append_record, load_records
from graphs import prompting

REUSABLE = ("standard", "standard+compress", "replug")
"""Systems that never run the drafter."""

DRAFTING_KNOBS = frozenset(
    {
        "compress",  # the drafts' passages; standard reads compress_answer
        "n_drafts",
        "per_draft",
        "partition",
        "draft_max_tokens",
        "score_normalization",
        "use_draft_score",
        "use_self_consistency",
        "use_self_reflection",
        "self_consistency_of",
        "rotate_choices",
        "abstain_threshold",
        "accept_threshold",  # earlier runs' knob (P(Yes) threshold), replaced by accept_confidence
        "accept_confidence",
        "fallback",
        "retry_on",
        "confidence_model",
        "selection",
        "rewrite_max_tokens",
        "max_rounds",
    }
)
"""Context knobs that only the drafting graph reads (``max_rounds`` also sizes the pool, of which the standard
systems read only the first ``top_n``)."""

PROMPTS = ("standard_answer", "passage", "mcq_question")
"""The prompt files the reusable systems read."""

REUSED = "reused.json"


class Reuse(BaseModel):
    """What ``--reuse-from`` copied (``reused.json``)."""

    source: str = Field(description="The earlier run's directory")
    systems: dict[str, int] = Field(description="Per system, the questions whose result was copied")
    unchecked: list[str] = Field(default_factory=list, description="What could not be compared, and was assumed")


def prompt_hashes() -> dict[str, str]:
    """sha256 of the prompt files the reusable systems read (recorded in ``run.json`` by every run)."""
    return {name: hashlib.sha256((prompting.PROMPTS_DIR / f"{name}.md").read_bytes()).hexdigest() for name in PROMPTS}


def reuse(
    source: Path,
    out: Path,
    fingerprint: Mapping[str, Any],
    records: dict[str, QuestionRecord],
    systems: Sequence[str],
    questions: Sequence[EvalQuestion],
) -> Reuse:
    """Copy into ``out`` the results of ``source`` for the reusable ``systems`` that ``records`` still lacks.

    Args:
        source: An earlier ``--out`` (or its export without dataset text).
        out: This run's directory (its ``results.jsonl`` gets the copied results, one line per question).
        fingerprint: This run's ``RunSpec.fingerprint()``.
        records: This run's records so far (updated in place).
        systems: The systems this run evaluates.
        questions: The questions this run evaluates (copied results are scored again against them).

    Raises:
        EvalError: ``source`` is not a run, or differs in something the reusable systems read.
    """
    info = source / RUN_INFO
    if not info.is_file():
        raise EvalError(f"--reuse-from {source}: no {RUN_INFO} there (not a specrag eval --out directory)")
    before = json.loads(info.read_text(encoding="utf-8"))
    unchecked = _compare(before, fingerprint)
    wanted = [s for s in REUSABLE if s in systems]
    old = load_records(source / RESULTS)
    copied = dict.fromkeys(wanted, 0)
    for q in questions:
        earlier = old.get(q.id)
        mine = records.setdefault(q.id, _empty(q))
        new = _empty(q)
        for name in wanted:
            if earlier is None or name not in earlier.systems or name in mine.systems:
                continue
            result = earlier.systems[name].model_copy(update={"reused_from": str(source)})
            s = score_answer(result.answer, q.answers, q.choices)
            result.correct, result.f1, result.choice = s.correct, s.f1, s.choice
            new.systems[name] = result
            copied[name] += 1
        if new.systems:
            append_record(out / RESULTS, new)
            mine.systems.update(new.systems)
    done = Reuse(source=str(source), systems=copied, unchecked=unchecked)
    (out / REUSED).write_text(done.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return done


def _empty(q: EvalQuestion) -> QuestionRecord:
    return QuestionRecord(id=q.id, task=q.task, question=q.question, gold=q.answers, choices=q.choices)


def _compare(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs (raises) and what could not be compared (returned)."""
    differ = []
    if Path(str(before.get("dataset", ""))).name != Path(str(now["dataset"])).name:
        differ.append("dataset")
    for key in ("seed", "store"):
        if before.get(key) != now.get(key):
            differ.append(key)
    for role in ("verifier", "embedder"):
        if before.get("models", {}).get(role) != now["models"].get(role):
            differ.append(f"models.{role}")
    old_context, new_context = before.get("context", {}), now["context"]
    differ += [
        f"context.{k}"
        for k, value in new_context.items()
        if k not in DRAFTING_KNOBS and k in old_context and old_context[k] != value
    ]
    unchecked = [f"context.{k} (not recorded)" for k in new_context if k not in DRAFTING_KNOBS and k not in old_context]
    old_prompts = before.get("prompts")
    if old_prompts is None:
        unchecked.append(f"prompt files {', '.join(PROMPTS)} (the earlier run did not record their sha256)")
    else:
        differ += [f"prompts.{k}" for k, h in now.get("prompts", {}).items() if old_prompts.get(k) != h]
    if differ:
        raise EvalError(
            f"--reuse-from: that run differs in what {', '.join(REUSABLE)} read ({', '.join(differ)}); "
            "run them again instead"
        )
    return unchecked
