"""What the trace page shows, computed from a :class:`RunTrace` (no HTML here: see ``templates/trace.html``).

Everything is derived from the trace's steps, so a run that failed half-way still shows what it did. Rounds and
subsets are shown 1-based (as in ``specrag trace`` and the reflection reasons), draft indices 0-based (as
``chosen``).

Score bars: ρ_draft, ρ_sc and total are natural-log scores, so their bars are scaled relative to the drafts of
the run, linearly from the lowest (a short stub) to the highest (full width). ρ_sr is shown as P(Yes), a
probability: its bar spans 0..1 and marks the run's ``accept_threshold`` (runs before the calibrated
confidence; a reflection now shows the confidence, its inputs and their terms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.trace.model import RunTrace, Step
from app.trace.render import step_summary

# Width (percent) of the lowest relative bar: still visible, clearly shorter than the best.
_MIN_BAR = 6.0


@dataclass(frozen=True)
class Bar:
    """One horizontal score bar on a draft card."""

    metric: str
    """Machine name (``draft``, ``self_consistency``, ``p_yes``, ``total``): the CSS class and ``data-metric``."""
    label: str
    """What the bar shows, e.g. 'ρ_draft'."""
    value: str
    """The number, formatted ('n/a' when not finite)."""
    width: float
    """Bar width in percent of the track (0 when the value is missing)."""
    best: bool = False
    """Whether this draft has the run's highest value of this metric."""
    note: str = ""
    """Extra text after the number (e.g. the log value behind P(Yes))."""


@dataclass(frozen=True)
class PassageRef:
    """A passage as listed in a subset or on a draft card."""

    id: str
    short_id: str
    title: str
    cluster: int | None


@dataclass(frozen=True)
class PassageRow:
    """One retrieved passage of a round."""

    rank: int
    id: str
    short_id: str
    title: str
    doc_id: str
    score: str
    cluster: int | None
    subsets: list[int]
    """1-based subsets that include this passage."""
    text: str
    kept: str = ""
    """With compression: what was kept ("3/5 sentences · 48/120 words · tier 1"), else empty."""
    kept_text: str = ""
    """With compression: the text the models read."""


@dataclass(frozen=True)
class Subset:
    """One passage subset (what one draft saw)."""

    number: int
    """1-based."""
    passages: list[PassageRef]
    draft_index: int | None
    """Index of the draft written from this subset, if any."""


@dataclass(frozen=True)
class DraftCard:
    """One draft with its scores."""

    index: int
    round: int
    subset: int
    """1-based."""
    answer: str
    rationale: str
    tokens: str
    passages: list[PassageRef]
    bars: list[Bar]
    rank: int | None
    winner: bool
    parsed: bool
    outcome: str
    """answer, abstain (not verified, never chosen) or unparsed."""
    finish_reason: str
    sc_tokens: str
    abstain_note: str = ""
    """How answering was weighed against abstaining, when a threshold applied ('' for greedy)."""


@dataclass(frozen=True)
class Reflection:
    """The reflection decision that closed a round."""

    decision: str
    reason: str
    rewritten_query: str
    confidence: float | None = None
    """The calibrated confidence of the best draft the decision used (None: none was computed)."""
    confidence_model: str = ""
    inputs: list[tuple[str, str, str]] = field(default_factory=list)
    """(feature, value, its term in the logit), largest term first."""


@dataclass(frozen=True)
class RoundView:
    """One retrieval round: query, passages, subsets, drafts and reflection."""

    number: int
    """1-based."""
    query: str
    passages: list[PassageRow]
    subsets: list[Subset]
    drafts: list[DraftCard]
    reflection: Reflection | None
    compressed: bool = False
    """Whether the round's passages were compressed (the page shows what was kept)."""
    quarantined: list[str] = field(default_factory=list)
    """Passages set aside as prompt injection: "id title (what gave it away)"."""


@dataclass(frozen=True)
class StepRow:
    """One node execution on the timeline."""

    index: int
    node: str
    round: int
    """1-based."""
    offset: float
    """Seconds after the run started."""
    seconds: float
    left: float
    """Timeline bar start, percent of the run."""
    width: float
    """Timeline bar width, percent of the run."""
    summary: str
    error: str | None


@dataclass(frozen=True)
class TracePage:
    """Everything ``trace.html`` renders."""

    run_id: str
    thread_id: str | None
    graph: str
    question: str
    status: str
    error: str | None
    answer: str | None
    rationale: str | None
    seconds: float
    started_at: datetime
    steps: list[StepRow]
    rounds: list[RoundView]
    chosen: int | None
    n_drafts: int
    accept_threshold: float | None
    context: list[tuple[str, str]] = field(default_factory=list)


def fmt(x: Any, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, or 'n/a' when it is not a number (missing or non-finite)."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return f"{x:.{digits}f}".replace("-", "−")
    return "n/a"


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def relative_widths(values: Sequence[float | None]) -> list[float]:
    """Bar widths (percent) for values compared with each other: lowest -> a short stub, highest -> 100.

    Missing values get 0; when all present values are equal, each gets 100.
    """
    present = [v for v in values if v is not None]
    if not present:
        return [0.0 for _ in values]
    lo, hi = min(present), max(present)
    out = []
    for v in values:
        if v is None:
            out.append(0.0)
        elif hi == lo:
            out.append(100.0)
        else:
            out.append(round(_MIN_BAR + (100.0 - _MIN_BAR) * (v - lo) / (hi - lo), 1))
    return out


def _ranking(trace: RunTrace, drafts: Sequence[dict[str, Any]]) -> list[int]:
    reflects = [s for s in trace.steps if s.node == "reflect" and s.writes.get("ranking") is not None]
    if reflects:
        return list(reflects[-1].writes["ranking"])
    totals = [_num(d.get("scores", {}).get("total")) for d in drafts]
    scored = [i for i, t in enumerate(totals) if t is not None]
    return sorted(scored, key=lambda i: -(totals[i] or 0.0))


def _chosen(trace: RunTrace) -> int | None:
    if trace.result is not None:
        return trace.result.chosen
    for s in trace.steps:
        if s.node == "answer" and isinstance(s.writes.get("chosen"), int):
            return int(s.writes["chosen"])
    return None


def _bars(drafts: Sequence[dict[str, Any]]) -> list[list[Bar]]:
    """Per draft: ρ_draft, ρ_sc, P(Yes) (with ρ_sr) and total bars."""
    scores = [d.get("scores", {}) for d in drafts]
    columns: dict[str, list[float | None]] = {
        key: [_num(s.get(key)) for s in scores] for key in ("draft", "self_consistency", "p_yes", "total")
    }
    widths = {key: relative_widths(columns[key]) for key in ("draft", "self_consistency", "total")}
    widths["p_yes"] = [0.0 if p is None else round(100.0 * max(0.0, min(1.0, p)), 1) for p in columns["p_yes"]]
    best = {key: max((v for v in vals if v is not None), default=None) for key, vals in columns.items()}
    labels = {"draft": ("ρ_draft", 2), "self_consistency": ("ρ_sc", 2), "p_yes": ("P(Yes)", 3), "total": ("total", 2)}
    out: list[list[Bar]] = []
    for i, s in enumerate(scores):
        bars = []
        for key, (label, digits) in labels.items():
            value = columns[key][i]
            note = f"ρ_sr {fmt(_num(s.get('self_reflection')), 3)}" if key == "p_yes" else ""
            bars.append(
                Bar(
                    metric=key,
                    label=label,
                    value=fmt(value, digits),
                    width=widths[key][i],
                    best=value is not None and value == best[key] and len(drafts) > 1,
                    note=note,
                )
            )
        out.append(bars)
    return out


def _round_steps(trace: RunTrace, number: int) -> list[Step]:
    return [s for s in trace.steps if s.round == number]


def _short(pid: str) -> str:
    return pid[:8]


def build_page(trace: RunTrace) -> TracePage:
    """The trace page's content for ``trace``."""
    total = max(trace.seconds, 1e-9)
    steps = []
    for s in trace.steps:
        offset = max(0.0, (s.started_at - trace.started_at).total_seconds())
        steps.append(
            StepRow(
                index=s.index,
                node=s.node,
                round=s.round + 1,
                offset=offset,
                seconds=s.seconds,
                left=round(min(100.0, 100.0 * offset / total), 2),
                width=round(max(0.4, min(100.0, 100.0 * s.seconds / total)), 2),
                summary=step_summary(s),
                error=s.error,
            )
        )

    drafts = trace.drafts()
    ranking = _ranking(trace, drafts)
    chosen = _chosen(trace)
    bars = _bars(drafts)
    passage_meta: dict[str, tuple[str, int | None]] = {}
    rounds: list[RoundView] = []
    for r in sorted({s.round for s in trace.steps}):
        rsteps = _round_steps(trace, r)
        retrieved = [p for s in rsteps if s.node == "retrieve" for p in s.writes.get("passages", [])]
        clusters: dict[str, int] = {}
        subsets_ids: list[list[str]] = []
        for s in rsteps:
            if s.node == "partition":
                clusters.update(s.writes.get("clusters", {}))
                subsets_ids = [list(x) for x in s.writes.get("subsets", [])]
        for p in retrieved:
            passage_meta[p["id"]] = (str(p.get("title", "")), clusters.get(p["id"]))
        kept = {c["passage_id"]: c for s in rsteps if s.node == "compress" for c in s.writes.get("compression", [])}
        kept_text = {
            p["id"]: str(p.get("text", ""))
            for s in rsteps
            if s.node == "compress"
            for p in s.writes.get("passages", [])
        }

        def ref(pid: str, clusters: dict[str, int] = clusters) -> PassageRef:
            title, cluster = passage_meta.get(pid, ("", None))
            return PassageRef(id=pid, short_id=_short(pid), title=title, cluster=clusters.get(pid, cluster))

        in_subsets: dict[str, list[int]] = {}
        for n, ids in enumerate(subsets_ids, 1):
            for pid in ids:
                in_subsets.setdefault(pid, []).append(n)
        draft_of = {d["subset"]: i for i, d in enumerate(drafts) if d["round"] == r}
        cards = [
            DraftCard(
                index=i,
                round=r + 1,
                subset=int(d["subset"]) + 1,
                answer=str(d.get("answer", "")),
                rationale=str(d.get("rationale", "")),
                tokens=str(d.get("tokens", "n/a")),
                passages=[ref(pid) for pid in d.get("passage_ids", [])],
                bars=bars[i],
                rank=ranking.index(i) + 1 if i in ranking else None,
                winner=i == chosen,
                parsed=bool(d.get("parsed", True)),
                outcome=str(d.get("outcome", "answer")),
                finish_reason=str(d.get("finish_reason", "")),
                sc_tokens=str(d.get("scores", {}).get("self_consistency_tokens", "n/a")),
                abstain_note=_abstain_note(d),
            )
            for i, d in enumerate(drafts)
            if d["round"] == r
        ]
        reflection = next(
            (_reflection(s.writes) for s in rsteps if s.node == "reflect" and not s.error),
            None,
        )
        query = next(
            (str(s.writes.get("query") or s.reads.get("query") or "") for s in rsteps if s.node == "retrieve"), ""
        )
        rounds.append(
            RoundView(
                number=r + 1,
                query=query,
                passages=[
                    PassageRow(
                        rank=n,
                        id=p["id"],
                        short_id=_short(p["id"]),
                        title=str(p.get("title", "")),
                        doc_id=str(p.get("doc_id", "")),
                        score=fmt(_num(p.get("score")), 4),
                        cluster=clusters.get(p["id"]),
                        subsets=in_subsets.get(p["id"], []),
                        text=str(p.get("text", "")),
                        kept=_kept(kept.get(p["id"])),
                        kept_text=kept_text.get(p["id"], ""),
                    )
                    for n, p in enumerate(retrieved, 1)
                ],
                compressed=bool(kept),
                quarantined=[
                    f"{_short(q['passage_id'])} {q.get('title', '')} ({'; '.join(q.get('signals', []))})"
                    for s in rsteps
                    if s.node == "retrieve"
                    for q in s.writes.get("quarantined", [])
                ],
                subsets=[
                    Subset(number=n, passages=[ref(pid) for pid in ids], draft_index=draft_of.get(n - 1))
                    for n, ids in enumerate(subsets_ids, 1)
                ],
                drafts=cards,
                reflection=reflection,
            )
        )

    threshold = _num(trace.context.get("accept_threshold"))
    return TracePage(
        run_id=trace.run_id,
        thread_id=trace.thread_id,
        graph=trace.graph,
        question=trace.question,
        status=trace.status,
        error=trace.error,
        answer=trace.result.answer if trace.result is not None else None,
        rationale=trace.result.rationale if trace.result is not None else None,
        seconds=trace.seconds,
        started_at=trace.started_at,
        steps=steps,
        rounds=rounds,
        chosen=chosen,
        n_drafts=len(drafts),
        accept_threshold=threshold,
        context=[(k, str(v)) for k, v in sorted(trace.context.items())],
    )


def _reflection(writes: dict[str, Any]) -> Reflection:
    """A reflect step's decision, reason and the confidence (with its inputs) it rests on."""
    found = writes.get("confidence")
    conf: dict[str, Any] = found if isinstance(found, dict) else {}
    inputs = conf.get("inputs") or {}
    terms = conf.get("contributions") or {}
    ordered = sorted(inputs, key=lambda k: -abs(_num(terms.get(k)) or 0.0))
    return Reflection(
        decision=str(writes.get("decision", "?")),
        reason=str(writes.get("reason", "")),
        rewritten_query=str(writes.get("rewritten_query", "") or ""),
        confidence=_num(conf.get("value")),
        confidence_model=str(conf.get("model", "")),
        inputs=[(k, fmt(_num(inputs[k]), 3), fmt(_num(terms.get(k)), 2)) for k in ordered],
    )


def _kept(c: dict[str, Any] | None) -> str:
    """What compression kept of a passage, in words (empty without compression)."""
    if not c:
        return ""
    words = f"{c['words_after']}/{c['words_before']} words"
    return f"{len(c['kept'])}/{c['sentences']} sentences · {words} · tier {c['tier'] + 1}"


def _abstain_note(d: Mapping[str, Any]) -> str:
    """'threshold 0.8 · P(abstain) 0.62 · made to answer' for a draft under an abstention threshold, else ''."""
    rule = str(d.get("abstain_rule", "greedy"))
    if rule == "greedy":
        return ""
    p = d.get("abstain_prob")
    parts = [rule] + ([f"P(abstain) {float(p):.2f}"] if isinstance(p, int | float) else [])
    if d.get("answer_forced"):
        parts.append("made to answer")
    return " · ".join(parts)
