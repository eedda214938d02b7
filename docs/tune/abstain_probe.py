"""How sure is a tuned drafter when it abstains? A one-off probe (2026-12-04), kept so the figures can be rerun.

The tuned drafters answer "The documents say: ..." or abstain with "The documents do not contain the answer.", so
answering or abstaining is the one token after "The documents". For each short-answer example whose question a
training run never saw, this prints P(abstain) = P(" do") / (P(" do") + P(" say")) after that prefix, and how
many answerable and unanswerable subsets a threshold t would make abstain.

    .venv/bin/python docs/tune/abstain_probe.py LORA EXAMPLES.jsonl N OUT.json [RUN_DIR]

LORA is an adapter name or path, EXAMPLES a `specrag tune data` build from the training pool (never the dev set),
RUN_DIR the training run whose loss.jsonl names the questions to leave out (default .specrag/tune/run-v4).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.llm.factory import make_llm
from app.settings import get_settings
from app.tune.check import balanced_sample, trained_questions
from app.tune.data import example_prompt, read_examples


@dataclass(frozen=True)
class Probe:
    """One example's abstention probability."""

    id: str
    expected: str
    p_abstain: float
    mass: float


def main(argv: list[str]) -> None:
    """Run the probe (see the module docstring)."""
    lora, examples, n, out = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    run = Path(argv[4]) if len(argv) > 4 else Path(".specrag/tune/run-v4")
    settings = get_settings()
    trained = trained_questions(run)
    sample = balanced_sample([r for r in read_examples(examples) if r.question_id not in trained], n)
    llm = make_llm(
        settings.drafter.model_copy(update={"lora": lora}), threads=settings.llm_threads, cache_dir=settings.model_cache
    )
    rows: list[Probe] = []
    for ex in sample:
        if ex.choices:
            continue  # multiple choice never abstains
        prompt = example_prompt(ex)
        lp = llm.next_token_logprobs(replace(prompt, prefill=prompt.prefill + " The documents"), [" say", " do"])
        p_do, p_say = math.exp(lp[" do"]), math.exp(lp[" say"])
        rows.append(Probe(id=ex.id, expected=ex.outcome, p_abstain=p_do / (p_do + p_say), mass=p_do + p_say))
    out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n", encoding="utf-8")
    answerable = [r for r in rows if r.expected == "answer"]
    unanswerable = [r for r in rows if r.expected == "abstain"]
    for t in (0.5, 0.7, 0.8, 0.9):
        a = sum(r.p_abstain > t for r in answerable)
        u = sum(r.p_abstain > t for r in unanswerable)
        sys.stdout.write(f"t={t}: abstains on {a}/{len(answerable)} answerable, {u}/{len(unanswerable)} unanswerable\n")
    sys.stdout.write(f"smallest P(' do') + P(' say'): {min(r.mass for r in rows):.3f}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
