"""From per-question records to ``summary.json`` and ``report.md``: accuracy with 95% bootstrap intervals, the
paired difference to ``standard``, F1, latency percentiles, tokens and model calls, per system and per task."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from app.confidence.model import ConfidenceModel
from app.eval.confidence import CalibrationSummary, calibration_summary
from app.eval.dataset import EvalQuestion
from app.eval.diagnostics import Ablation, DraftStats, ablations, draft_stats
from app.eval.runner import CURVES, QuestionRecord
from app.eval.stats import IntervalOut, bootstrap_mean, paired_difference, percentile
from app.eval.systems import SYSTEMS, SystemResult

BASELINE = "standard"


class SystemSummary(BaseModel):
    """One system over the evaluated questions."""

    system: str
    description: str
    questions: int
    accuracy: IntervalOut
    vs_standard: IntervalOut | None = Field(None, description="Paired accuracy difference to standard")
    f1: float
    latency_p50: float
    latency_p95: float
    latency_vs_standard: float | None = Field(None, description="Median of per-question latency ratios")
    prompt_tokens: float = Field(description="Mean per question, all models")
    generated_tokens: float
    drafter_prompt_tokens: float = Field(description="Mean per question, drafter only")
    model_calls: float
    errors: int
    by_task: dict[str, IntervalOut]


class CompressionSummary(BaseModel):
    """A compressed system against the same system on the full passages, paired over the same questions."""

    system: str = Field(description="The compressed system, e.g. speculative+compress")
    baseline: str = Field(description="The same system without compression")
    questions: int
    accuracy_change: IntervalOut = Field(description="Paired accuracy difference, compressed minus full")
    prompt_tokens_saved: IntervalOut = Field(description="Fraction of prompt tokens (all models) saved, per question")
    drafter_prompt_tokens_saved: IntervalOut | None = Field(
        None, description="Fraction of drafter prompt tokens saved, per question (drafting systems only)"
    )
    latency_ratio: float = Field(description="Median of per-question latency ratios, compressed / full")


COMPRESSED = {"speculative+compress": "speculative", "standard+compress": "standard"}
"""Each compressed system and its uncompressed counterpart."""


class Summary(BaseModel):
    """What ``summary.json`` holds."""

    questions: int
    tasks: dict[str, int]
    systems: list[SystemSummary]
    compression: list[CompressionSummary] = Field(
        default_factory=list, description="Compressed systems against their uncompressed counterparts"
    )
    curves: dict[str, list[float]] = Field(description="Accuracy choosing among the first j drafts, j = 1..m")
    ablations: list[Ablation] = Field(default_factory=list, description="Each ablation paired against speculative")
    drafts: list[DraftStats] = Field(
        default_factory=list, description="Per drafting system: selected vs oracle accuracy, drafts in format"
    )
    calibration: CalibrationSummary | None = Field(
        None, description="The confidence of speculative's selected drafts, and the fallback threshold's curve"
    )
    settings: dict[str, object]


def complete(records: Sequence[QuestionRecord], systems: Sequence[str]) -> list[QuestionRecord]:
    """Records that have every system (comparisons are paired over the same questions)."""
    return [r for r in records if all(s in r.systems for s in systems)]


def summarize(
    records: Sequence[QuestionRecord],
    systems: Sequence[str],
    settings: dict[str, object],
    questions: Mapping[str, EvalQuestion] | None = None,
    confidence: ConfidenceModel | None = None,
    calibrated: str = "speculative",
) -> Summary:
    """Summary over the records that have all ``systems``.

    ``questions`` (the dataset by id) lets the report score every draft, not only the selected answers; without
    it the drafts table is left out. ``confidence`` adds the calibration section over ``calibrated``'s selected
    drafts (``speculative``, or the re-verifying system scored as the model was fitted; with ``standard`` among
    the systems).

    Raises:
        ValueError: No record has every system yet.
    """
    rows = complete(records, systems)
    if not rows:
        raise ValueError("no question has results for every system yet")
    tasks = sorted({r.task for r in rows})
    out = []
    for name in systems:
        results = [r.systems[name] for r in rows]
        correct = [float(x.correct) for x in results]
        vs = None
        ratio = None
        if BASELINE in systems and name != BASELINE:
            vs = IntervalOut.of(paired_difference(correct, [float(r.systems[BASELINE].correct) for r in rows]))
            base = [r.systems[BASELINE].seconds for r in rows]
            ratios = [x.seconds / b for x, b in zip(results, base, strict=True) if b > 0]
            ratio = percentile(ratios, 50) if ratios else None
        latencies = [x.seconds for x in results]
        out.append(
            SystemSummary(
                system=name,
                description=SYSTEMS.get(name, ""),
                questions=len(rows),
                accuracy=IntervalOut.of(bootstrap_mean(correct)),
                vs_standard=vs,
                f1=sum(x.f1 for x in results) / len(results),
                latency_p50=percentile(latencies, 50),
                latency_p95=percentile(latencies, 95),
                latency_vs_standard=ratio,
                prompt_tokens=sum(x.prompt_tokens for x in results) / len(results),
                generated_tokens=sum(x.generated_tokens for x in results) / len(results),
                drafter_prompt_tokens=sum(x.usage["drafter"].prompt_tokens for x in results if "drafter" in x.usage)
                / len(results),
                model_calls=sum(x.calls for x in results) / len(results),
                errors=sum(1 for x in results if x.error),
                by_task={
                    t: IntervalOut.of(bootstrap_mean([float(r.systems[name].correct) for r in rows if r.task == t]))
                    for t in tasks
                },
            )
        )
    curves = {}
    for name in CURVES:
        lists = [r.curves[name] for r in rows if name in r.curves and name in systems]
        if lists:
            depth = min(len(c) for c in lists)
            curves[name] = [sum(c[j] for c in lists) / len(lists) for j in range(depth)]
    return Summary(
        questions=len(rows),
        tasks={t: sum(1 for r in rows if r.task == t) for t in tasks},
        systems=out,
        compression=[compression(rows, c, b) for c, b in COMPRESSED.items() if c in systems and b in systems],
        curves=curves,
        ablations=ablations(rows, systems),
        drafts=draft_stats(rows, systems, questions) if questions else [],
        calibration=calibration_summary(rows, confidence, calibrated) if confidence is not None else None,
        settings=settings,
    )


def _saved(before: Sequence[float], after: Sequence[float]) -> IntervalOut | None:
    """Per-question fraction saved (1 - after/before) with its bootstrap interval, over questions with tokens."""
    fractions = [1.0 - a / b for b, a in zip(before, after, strict=True) if b > 0]
    return IntervalOut.of(bootstrap_mean(fractions)) if fractions else None


def compression(rows: Sequence[QuestionRecord], system: str, baseline: str) -> CompressionSummary:
    """``system`` (compressed) against ``baseline`` (full passages) over ``rows``, which hold both."""
    full = [r.systems[baseline] for r in rows]
    small = [r.systems[system] for r in rows]

    def drafter(results: Sequence[SystemResult]) -> list[float]:
        return [float(x.usage["drafter"].prompt_tokens) if "drafter" in x.usage else 0.0 for x in results]

    prompt = _saved([float(x.prompt_tokens) for x in full], [float(x.prompt_tokens) for x in small])
    ratios = [s.seconds / f.seconds for s, f in zip(small, full, strict=True) if f.seconds > 0]
    return CompressionSummary(
        system=system,
        baseline=baseline,
        questions=len(rows),
        accuracy_change=IntervalOut.of(
            paired_difference([float(x.correct) for x in small], [float(x.correct) for x in full])
        ),
        prompt_tokens_saved=prompt or IntervalOut(mean=0.0, low=0.0, high=0.0),
        drafter_prompt_tokens_saved=_saved(drafter(full), drafter(small)),
        latency_ratio=percentile(ratios, 50) if ratios else float("nan"),
    )


def write_summary(summary: Summary, out: Path) -> None:
    """``summary.json`` and ``report.md`` in ``out``."""
    (out / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(summary), encoding="utf-8")


def markdown(s: Summary) -> str:
    """The report: settings, the main table, accuracy per task, accuracy against the number of drafts."""
    tasks = ", ".join(f"{n} {t}" for t, n in s.tasks.items())
    lines = [
        "# specrag evaluation",
        "",
        f"{s.questions} questions ({tasks}), every system on the same questions, passages and models. "
        "Accuracy in % with 95% bootstrap intervals; Δ is the paired difference to `standard`. Latency is wall "
        "seconds per question; tokens and calls are means per question.",
        "",
        "Settings: " + ", ".join(f"{k} = `{json.dumps(v)}`" for k, v in s.settings.items()),
        "",
        "| system | accuracy | Δ vs standard | F1 | latency p50 / p95 (s) | × standard | prompt tok "
        "| drafter prompt tok | generated tok | calls | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in s.systems:
        lines.append(
            f"| {x.system} | {x.accuracy.pct()} | {x.vs_standard.signed_pct() if x.vs_standard else '—'} "
            f"| {100 * x.f1:.1f} | {x.latency_p50:.1f} / {x.latency_p95:.1f} "
            f"| {f'{x.latency_vs_standard:.2f}' if x.latency_vs_standard is not None else '—'} "
            f"| {x.prompt_tokens:,.0f} | {x.drafter_prompt_tokens:,.0f} | {x.generated_tokens:,.0f} "
            f"| {x.model_calls:.1f} | {x.errors} |"
        )
    lines += ["", "## Accuracy per task", "", "| system | " + " | ".join(s.tasks) + " |"]
    lines.append("|---|" + "---|" * len(s.tasks))
    for x in s.systems:
        lines.append(f"| {x.system} | " + " | ".join(x.by_task[t].pct() for t in s.tasks) + " |")
    if s.compression:
        lines += _section(
            "Compression",
            "Each compressed system against the same system on the full passages, paired over the same questions. "
            "Saved: mean per-question fraction of prompt tokens not sent, with its 95% bootstrap interval; latency: "
            "median of per-question ratios (compressed / full).",
            ["system", "vs", "accuracy change", "drafter prompt tokens saved", "all prompt tokens saved", "latency ×"],
        )
        for c in s.compression:
            drafter = c.drafter_prompt_tokens_saved.pct() + " %" if c.drafter_prompt_tokens_saved else "—"
            lines.append(
                f"| {c.system} | {c.baseline} | {c.accuracy_change.signed_pct()} | {drafter} "
                f"| {c.prompt_tokens_saved.pct()} % | {c.latency_ratio:.2f} |"
            )
    lines += _ablations(s) + _drafts(s) + _calibration(s)
    if s.curves:
        names = list(s.curves)
        lines += _section(
            "Accuracy against the number of drafts",
            "The same scored drafts, choosing among the first j (the subsets are sampled independently, so the first "
            "j are a run with m = j).",
            ["drafts", *names],
        )
        for j in range(max(len(c) for c in s.curves.values())):
            cells = [f"{100 * s.curves[n][j]:.1f}" if j < len(s.curves[n]) else "—" for n in names]
            lines.append(f"| {j + 1} | " + " | ".join(cells) + " |")
    lines += ["", "Descriptions:", ""] + [f"- `{x.system}`: {x.description}" for x in s.systems]
    return "\n".join(lines) + "\n"


def _section(title: str, intro: str, columns: Sequence[str]) -> list[str]:
    """A report section's heading, its explanation and its table header."""
    return ["", f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _ablations(s: Summary) -> list[str]:
    if not s.ablations:
        return []
    lines = _section(
        "Ablations against speculative",
        "Each ablation minus `speculative`, paired over the same questions (percentage points, 95% bootstrap "
        "interval). The paper's yardsticks: no verifier about -5.5, random subsets about -1.2.",
        ["system", "accuracy", "Δ vs speculative"],
    )
    return lines + [f"| {a.system} | {100 * a.accuracy:.1f} | {a.change.signed_pct()} |" for a in s.ablations]


def _calibration(s: Summary) -> list[str]:
    c = s.calibration
    if c is None:
        return []
    o = c.overall
    auroc = f"{o.auroc:.3f}" if o.auroc is not None else "n/a"
    lines = [
        "",
        "## Calibration of the confidence, and the fallback threshold",
        "",
        f"`{c.model}` (fitted on held-out training-pool questions, never on this set) gives each question's "
        f"selected `{c.system}` draft a confidence, P(correct); 0 when every draft abstained. Over all "
        f"{o.n} questions: **ECE {o.ece:.3f}**, **AUROC {auroc}**, Brier {o.brier:.3f}; mean confidence "
        f"{100 * o.mean_confidence:.1f} % against accuracy {100 * o.accuracy:.1f} % "
        "(reliability diagram: `reliability.png`).",
        "",
        "| task | questions | ECE | AUROC | mean confidence | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for t, x in c.by_task.items():
        lines.append(
            f"| {t} | {x.n} | {x.ece:.3f} | {'n/a' if x.auroc is None else f'{x.auroc:.3f}'} "
            f"| {100 * x.mean_confidence:.1f} | {100 * x.accuracy:.1f} |"
        )
    lines += [
        "",
        "Accept the draft when confidence ≥ t, else fall back to the verifier reading all passages; computed from "
        f"the `{c.system}` and `standard` records of these questions (the fallback's answer is standard's, and "
        "its time standard's answer step added to the draft's). `speculative+reflect`, when in the table above, "
        f"is the graph itself at t = {c.accept_confidence:.2f}. Curve: `fallback_curve.png`.",
        "",
        "| t | accuracy | drafts accepted | mean s | median s |",
        "|---|---|---|---|---|",
    ]
    for p in c.curve:
        mark = " ← default" if abs(p.threshold - c.accept_confidence) < 1e-9 else ""
        t = "always fall back" if p.threshold > 1 else f"{p.threshold:.2f}"
        lines.append(
            f"| {t}{mark} | {100 * p.accuracy:.1f} | {100 * p.accepted:.0f} % | {p.mean_seconds:.1f} "
            f"| {p.median_seconds:.1f} |"
        )
    lines += [
        "",
        f"For comparison: `{c.system}` {100 * c.speculative_accuracy:.1f} % at {c.speculative_mean_seconds:.1f} s "
        f"mean, `standard` {100 * c.standard_accuracy:.1f} % at {c.standard_mean_seconds:.1f} s mean.",
    ]
    if c.decisions:
        fired = ", ".join(f"{k} {v}" for k, v in c.decisions.items())
        agrees = f"{100 * c.reflect_agrees:.0f} %" if c.reflect_agrees is not None else "n/a"
        lines += [
            "",
            f"`speculative+reflect` (the graph itself): decisions {fired}; its answer is the one the curve assumes "
            f"at t = {c.accept_confidence:.2f} for {agrees} of its questions.",
        ]
    return lines


def _drafts(s: Summary) -> list[str]:
    if not s.drafts:
        return []
    lines = _section(
        "Drafts",
        "Oracle: questions where at least one draft is correct, the ceiling of any selection among them. Correct "
        "drafts: share of all drafts (an abstention is never correct). In format: drafts with an `Answer:` line "
        "(otherwise the draft's whole text is its answer). Abstained: drafts that said their passages do not hold "
        "the answer. Correct answers: share of the drafts that did not abstain. MCQ letter: multiple-choice drafts "
        "that did not abstain whose answer is a choice letter. Passages read: distinct passages the first round's "
        "drafts saw, per question.",
        [
            "system",
            "selected",
            "oracle",
            "drafts per question",
            "correct drafts",
            "in format",
            "abstained",
            "correct answers",
            "MCQ letter",
            "passages read",
        ],
    )
    return (
        lines
        + [
            f"| {d.system} | {d.selected.pct()} | {d.oracle.pct()} | {d.drafts:.1f} | {100 * d.draft_accuracy:.1f} % "
            f"| {100 * d.parsed:.1f} % | {100 * d.abstained:.1f} % | {100 * d.answer_accuracy:.1f} % | "
            f"{'—' if d.mcq_letter is None else f'{100 * d.mcq_letter:.1f} %'} | {d.coverage:.1f} |"
            for d in s.drafts
        ]
        + [
            f"\nMultiple-choice drafts by letter ({d.system}): {_letters(d.mcq_letters)}; gold letters: "
            f"{_letters(d.mcq_gold)}."
            for d in s.drafts
            if d.mcq_letters
        ]
    )


def _letters(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items())
