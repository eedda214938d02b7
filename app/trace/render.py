"""Rendering traces in a terminal (``specrag trace RUN_ID``, ``specrag traces``) with rich tables.

Rounds and subsets are shown 1-based (as in the reflection reasons), draft indices 0-based (as ``chosen``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from app.trace.model import RunTrace, Step, TraceSummary

_OUTCOME = {"answer": "answered", "abstain": "abstained (not verified)", "unparsed": "unparsed"}


def _fmt(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) and not isinstance(x, bool) else "n/a"


def _short(text: str, width: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def step_summary(step: Step) -> str:
    """One line about what a step did."""
    if step.error:
        return f"error: {step.error}"
    r, w = step.reads, step.writes
    if step.node == "condense":
        if not w.get("rewritten"):
            return f'"{_short(w.get("question", ""), 60)}" (no earlier turns to resolve)'
        return f'"{_short(w.get("original_question", ""), 40)}" → "{_short(w.get("question", ""), 60)}"'
    if step.node == "retrieve":
        set_aside = len(w.get("quarantined", []))
        extra = f", {set_aside} set aside as prompt injection" if set_aside else ""
        return f'"{_short(w.get("query", r.get("query", "")), 60)}" → {len(w.get("passages", []))} passages{extra}'
    if step.node == "compress":
        parts = w.get("compression", [])
        before = sum(c["words_before"] for c in parts)
        after = sum(c["words_after"] for c in parts)
        share = f" ({100 * after / before:.0f}%)" if before else ""
        return f"kept {after}/{before} words{share} of {len(parts)} passages"
    if step.node == "partition":
        clusters = w.get("clusters", {})
        return f"{len(set(clusters.values()))} clusters, {len(w.get('subsets', []))} subsets"
    if step.node == "draft":
        d = w.get("draft", {})
        ids = ", ".join(i[:8] for i in r.get("passage_ids", []))
        subset = r.get("subset")
        label = subset + 1 if isinstance(subset, int) else "?"
        outcome = d.get("outcome", "answer")
        said = "abstained" if outcome == "abstain" else f'"{_short(d.get("answer", ""), 40)}"'
        flag = " (unparsed)" if outcome == "unparsed" else ""
        return f"subset {label} [{ids}] → {said}{flag} ({d.get('tokens', 0)} tok)"
    if step.node == "verify":
        scores = w.get("scores", [])
        if not scores:
            return "nothing to score"
        best = max(scores, key=lambda s: s["total"] if s.get("total") is not None else float("-inf"))
        requests = len({s.get("method", {}).get("shared") or s["index"] for s in scores})
        shared = f" in {requests} verifier requests (identical drafts share one)" if requests < len(scores) else ""
        return f"scored {len(scores)} drafts{shared}; best #{best['index']} total {_fmt(best.get('total'), 1)}"
    if step.node == "reflect":
        text = f"{w.get('decision', '?')}: {_short(w.get('reason', ''), 70)}"
        return text + (f' → "{_short(w["rewritten_query"], 40)}"' if w.get("rewritten_query") else "")
    if step.node == "answer":
        chosen = w.get("chosen")
        prefix = f"★ #{chosen} " if chosen is not None else ""
        return f'{prefix}"{_short(w.get("answer", ""), 60)}"'
    return ", ".join(sorted(w)) or "-"


def render_trace(trace: RunTrace, console: Console) -> None:
    """Header, the steps table, then passages, subsets, drafts and reflection decisions per round."""
    console.print(_header(trace), soft_wrap=False)
    console.print(_steps_table(trace))
    rounds = sorted({s.round for s in trace.steps})
    for r in rounds:
        steps = [s for s in trace.steps if s.round == r]
        passages = _passages_table(trace, r, steps)
        if passages is not None:
            console.print(passages)
        for s in steps:
            for q in s.writes.get("quarantined", []) if s.node == "retrieve" else []:
                reasons = "; ".join(q.get("signals", []))
                console.print(
                    Text(f"Set aside as prompt injection: [{q['passage_id'][:8]}] {q.get('title', '')} ({reasons})"),
                    style="yellow",
                )
        for line in _subset_lines(steps):
            console.print(line)
        drafts = _drafts_table(trace, r)
        if drafts is not None:
            console.print(drafts)
        for s in steps:
            if s.node == "reflect" and not s.error:
                console.print(_reflection(s))
    if trace.status == "error":
        console.print(Text(f"Failed: {trace.error}", style="bold red"))


def _header(trace: RunTrace) -> Panel:
    status = Text(trace.status, style="bold green" if trace.status == "ok" else "bold red")
    lines: list[Text] = [
        Text(trace.question, style="bold"),
        Text.assemble(
            "graph ",
            (trace.graph, "cyan"),
            "  status ",
            status,
            f"  total {trace.seconds:.2f}s  started {trace.started_at.astimezone():%Y-%m-%d %H:%M:%S}",
            f"  thread {trace.thread_id}" if trace.thread_id else "",
        ),
    ]
    if trace.result is not None:
        lines.append(Text.assemble("answer: ", (trace.result.answer or "(no answer)", "bold")))
    if trace.error:
        lines.append(Text(f"error: {trace.error}", style="red"))
    return Panel(Group(*lines), title=f"Run {trace.run_id}", title_align="left")


def _steps_table(trace: RunTrace) -> Table:
    table = Table(title="Steps (start: seconds after the run started)", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True, min_width=2)
    table.add_column("node", no_wrap=True, min_width=9)
    table.add_column("round", justify="right", no_wrap=True, min_width=5)
    table.add_column("start", justify="right", no_wrap=True, min_width=7)
    table.add_column("s", justify="right", no_wrap=True, min_width=6)
    table.add_column("summary", ratio=1)
    for s in trace.steps:
        offset = (s.started_at - trace.started_at).total_seconds()
        table.add_row(
            str(s.index),
            s.node,
            str(s.round + 1),
            f"+{offset:.2f}",
            f"{s.seconds:.2f}",
            Text(step_summary(s)),
            style="red" if s.error else None,
        )
    return table


def _passages_table(trace: RunTrace, round_: int, steps: Sequence[Step]) -> Table | None:
    passages = [p for s in steps if s.node == "retrieve" for p in s.writes.get("passages", [])]
    if not passages:
        return None
    clusters: dict[str, int] = {}
    for s in steps:
        if s.node == "partition":
            clusters.update(s.writes.get("clusters", {}))
    kept = {c["passage_id"]: c for s in steps if s.node == "compress" for c in s.writes.get("compression", [])}
    query = next((s.writes.get("query", "") for s in steps if s.node == "retrieve"), "")
    table = Table(
        title=Text(f"Round {round_ + 1}: retrieved for “{_short(query, 100)}”"), title_justify="left", expand=True
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("title", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("cluster", justify="right", no_wrap=True)
    if kept:
        table.add_column("kept (sentences · words · tier)", justify="right", no_wrap=True)
    for i, p in enumerate(passages, 1):
        label = clusters.get(p["id"])
        cells: list[str | Text] = [str(i), Text(p["id"][:8]), Text(p.get("title", "")), _fmt(p.get("score"), 4)]
        cells.append("-" if label is None else str(label))
        if kept:
            c = kept.get(p["id"])
            cells.append(
                f"{len(c['kept'])}/{c['sentences']} · {c['words_after']}/{c['words_before']} · {c['tier'] + 1}"
                if c
                else "-"
            )
        table.add_row(*cells)
    return table


def _subset_lines(steps: Sequence[Step]) -> Iterable[Text]:
    for s in steps:
        if s.node != "partition" or s.error:
            continue
        clusters: dict[str, int] = s.writes.get("clusters", {})
        for i, subset in enumerate(s.writes.get("subsets", [])):
            members = ", ".join(f"{pid[:8]} (cluster {clusters.get(pid, '?')})" for pid in subset)
            yield Text(f"  subset {i + 1}: {members}", style="dim")


def _ranking(trace: RunTrace, drafts: Sequence[dict[str, Any]]) -> list[int]:
    reflects = [s for s in trace.steps if s.node == "reflect" and s.writes.get("ranking") is not None]
    if reflects:
        return list(reflects[-1].writes["ranking"])
    scored = [i for i, d in enumerate(drafts) if d.get("scores", {}).get("total") is not None]
    return sorted(scored, key=lambda i: -drafts[i]["scores"]["total"])


def _drafts_table(trace: RunTrace, round_: int) -> Table | None:
    drafts = trace.drafts()
    columns = [(i, d) for i, d in enumerate(drafts) if d["round"] == round_]
    if not columns:
        return None
    ranking = _ranking(trace, drafts)
    chosen = trace.result.chosen if trace.result is not None else None
    table = Table(
        title=f"Round {round_ + 1}: drafts (natural logs; total = ρ_draft + ρ_sc + ρ_sr; ★ chosen)",
        title_justify="left",
        show_lines=True,
    )
    table.add_column("", style="bold", no_wrap=True)
    for i, d in columns:
        star = "★ " if i == chosen else ""
        table.add_column(f"{star}#{i} (subset {d['subset'] + 1})", style="bold green" if i == chosen else None, ratio=1)
    rows: list[tuple[str, list[str]]] = [
        ("passages", [", ".join(p[:8] for p in d.get("passage_ids", [])) for _, d in columns]),
        ("outcome", [_OUTCOME.get(str(d.get("outcome", "answer")), "?") for _, d in columns]),
        ("answer", [_short(d.get("answer", ""), 80) for _, d in columns]),
        ("rationale", [_short(d.get("rationale", ""), 160) for _, d in columns]),
        ("tokens", [str(d.get("tokens", "n/a")) for _, d in columns]),
    ]
    for label, key, digits in [
        ("ρ_draft", "draft", 2),
        ("ρ_sc", "self_consistency", 2),
        ("ρ_sr", "self_reflection", 3),
        ("P(Yes)", "p_yes", 3),
        ("total", "total", 2),
    ]:
        rows.append((label, [_fmt(d.get("scores", {}).get(key), digits) for _, d in columns]))
    rows.append(("rank", [str(ranking.index(i) + 1) if i in ranking else "-" for i, _ in columns]))
    for label, cells in rows:
        table.add_row(label, *(Text(c) for c in cells))
    return table


def _reflection(step: Step) -> Text:
    w = step.writes
    text = Text.assemble(
        (f"Round {step.round + 1} reflection: ", "bold"),
        (w.get("decision", "?"), "bold green" if w.get("decision") == "accept" else "bold yellow"),
        f". {w.get('reason', '')}",
    )
    if w.get("rewritten_query"):
        text.append(f' Rewritten query: "{w["rewritten_query"]}"')
    conf = w.get("confidence")
    if isinstance(conf, dict) and conf.get("inputs"):
        inputs = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in conf["inputs"].items())
        text.append(f" Confidence {_fmt(conf.get('value'), 3)} ({conf.get('model', '')}) from {inputs}.")
    return text


def render_trace_list(traces: Sequence[TraceSummary], console: Console) -> None:
    """A table of runs, most recent first."""
    if not traces:
        console.print("no traces")
        return
    table = Table(title="Runs (most recent first): specrag trace RUN_ID", title_justify="left", expand=True)
    table.add_column("run id", no_wrap=True, min_width=32)
    table.add_column("started", no_wrap=True, min_width=19)
    table.add_column("graph", no_wrap=True, min_width=15)
    table.add_column("status", no_wrap=True, min_width=6)
    table.add_column("s", justify="right", no_wrap=True, min_width=5)
    table.add_column("thread", max_width=16)
    table.add_column("question → answer", ratio=1)
    for t in traces:
        qa = _short(t.question, 60) + (f" → {_short(t.answer, 40)}" if t.answer else "")
        table.add_row(
            t.run_id,
            f"{t.started_at.astimezone():%Y-%m-%d %H:%M:%S}",
            t.graph,
            Text(t.status, style="green" if t.status == "ok" else "red"),
            f"{t.seconds:.1f}",
            Text(t.thread_id or ""),
            Text(qa),
        )
    console.print(table)
