"""Where a drafting system loses accuracy: the ablations paired against ``speculative``, and the drafts themselves
(how often any draft was right, which bounds what selection can reach, and how often drafts kept the reply format).

Kept apart from :mod:`app.eval.report`, which formats them; both read the same per-question records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from app.eval.dataset import EvalQuestion
from app.eval.metrics import score_answer
from app.eval.runner import QuestionRecord
from app.eval.stats import IntervalOut, bootstrap_mean, paired_difference
from app.eval.systems import REVERIFICATIONS, SELECTIONS
from graphs.drafting import choice_letter

FULL = "speculative"
"""The system the ablations are measured against."""

ABLATIONS = ("random-subsets", *REVERIFICATIONS, *SELECTIONS)
"""Systems that change one thing about ``speculative`` (subsets, how drafts are scored, or which is selected)."""

DRAFTING = ("speculative", "speculative-base", "speculative-verifier-drafts", "random-subsets", "speculative+compress")
"""Systems that write drafts (the selection systems reuse speculative's)."""


class Ablation(BaseModel):
    """One ablation against the full system, paired over the same questions."""

    system: str
    questions: int
    accuracy: float
    change: IntervalOut = Field(description="Paired accuracy change, this system minus speculative")


class DraftStats(BaseModel):
    """The drafts one drafting system wrote over the evaluated questions."""

    system: str
    questions: int
    drafts: float = Field(description="Mean drafts per question (all rounds)")
    selected: IntervalOut = Field(description="Accuracy of the answer the system selected")
    oracle: IntervalOut = Field(
        description="Share of questions where at least one draft is correct (the ceiling of any selection)"
    )
    draft_accuracy: float = Field(description="Share of all drafts that are correct")
    parsed: float = Field(description="Share of drafts that kept the reply format (an 'Answer:' line)")
    abstained: float = Field(0.0, description="Share of drafts that abstained (never verified nor selected)")
    answer_accuracy: float = Field(0.0, description="Share of the drafts that did not abstain that are correct")
    mcq_letter: float | None = Field(
        None, description="Multiple choice: share of the drafts that did not abstain whose answer is a choice letter"
    )
    coverage: float = Field(0.0, description="Mean distinct passages the first round's drafts read, per question")
    mcq_letters: dict[str, float] = Field(
        default_factory=dict,
        description="Multiple choice: share of the lettered drafts per letter (a drafter that reads the choices "
        "spreads like the gold letters; one that always names the same position does not)",
    )
    mcq_gold: dict[str, float] = Field(
        default_factory=dict, description="Multiple choice: share of the questions per gold letter"
    )


def ablations(rows: Sequence[QuestionRecord], systems: Sequence[str]) -> list[Ablation]:
    """Each ablation in ``systems`` against ``speculative`` (empty when speculative was not run)."""
    if FULL not in systems:
        return []
    full = [float(r.systems[FULL].correct) for r in rows]
    out = []
    for name in (s for s in ABLATIONS if s in systems):
        mine = [float(r.systems[name].correct) for r in rows]
        out.append(
            Ablation(
                system=name,
                questions=len(rows),
                accuracy=sum(mine) / len(mine),
                change=IntervalOut.of(paired_difference(mine, full)),
            )
        )
    return out


def draft_stats(
    rows: Sequence[QuestionRecord], systems: Sequence[str], questions: Mapping[str, EvalQuestion]
) -> list[DraftStats]:
    """Per drafting system: selected accuracy against the oracle over its drafts, draft accuracy, format kept.

    Drafts are scored against ``questions`` (the dataset), not the records, which an export strips of gold answers.
    Rows whose question is not in ``questions`` are left out.
    """
    rows = [r for r in rows if r.id in questions]
    out = []
    for name in (s for s in DRAFTING if s in systems):
        with_drafts = [r for r in rows if r.systems[name].drafts]
        if not with_drafts:
            continue
        any_right, selected, right, parsed, total = [], [], 0, 0, 0
        abstained, mcq_answers, mcq_letters, covered = 0, 0, 0, 0
        by_letter: Counter[str] = Counter()
        gold: Counter[str] = Counter()
        for r in with_drafts:
            q = questions[r.id]
            drafts = r.systems[name].drafts
            hits = [d.outcome != "abstain" and score_answer(d.answer, q.answers, q.choices).correct for d in drafts]
            any_right.append(float(any(hits)))
            selected.append(float(r.systems[name].correct))
            right += sum(hits)
            parsed += sum(d.parsed for d in drafts)
            total += len(drafts)
            answering = [d for d in drafts if d.outcome != "abstain"]
            abstained += len(drafts) - len(answering)
            if q.choices:
                mcq_answers += len(answering)
                letters = [choice_letter(d.answer, q.choices) for d in answering]
                mcq_letters += sum(x is not None for x in letters)
                by_letter.update(x for x in letters if x is not None)
                gold.update(a.upper() for a in q.answers[:1])
            covered += len({p for d in drafts if d.round == 0 for p in d.passages})
        out.append(
            DraftStats(
                system=name,
                questions=len(with_drafts),
                drafts=total / len(with_drafts),
                selected=IntervalOut.of(bootstrap_mean(selected)),
                oracle=IntervalOut.of(bootstrap_mean(any_right)),
                draft_accuracy=right / total,
                parsed=parsed / total,
                abstained=abstained / total,
                answer_accuracy=right / max(total - abstained, 1),  # an abstention is never right
                mcq_letter=mcq_letters / mcq_answers if mcq_answers else None,
                coverage=covered / len(with_drafts),
                mcq_letters=_shares(by_letter),
                mcq_gold=_shares(gold),
            )
        )
    return out


def _shares(counts: Counter[str]) -> dict[str, float]:
    """Each key's share of the total, keys in order (empty for no counts)."""
    n = sum(counts.values())
    return {k: round(v / n, 4) for k, v in sorted(counts.items())} if n else {}
