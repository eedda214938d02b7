"""Compact, JSON-ready summaries of what a node read (its input) and wrote (its state update).

Nothing here holds an embedding; non-finite floats become ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from graphs.state import Confidence, Draft, DraftTask, Passage, Round, Scores, State, as_turn, merge_drafts


def finite(x: float) -> float | None:
    """``x`` if it is finite, else ``None`` (JSON has no infinities)."""
    return x if math.isfinite(x) else None


def passage_json(p: Passage) -> dict[str, Any]:
    """A retrieved passage without its vector."""
    return {
        "id": p.id,
        "doc_id": p.doc_id,
        "title": p.title,
        "score": finite(p.score),
        "round": p.round,
        "text": p.text,
    }


def scores_json(s: Scores) -> dict[str, Any]:
    """The verifier's evidence for one draft, with P('Yes') spelled out."""
    return {
        "draft": finite(s.draft),
        "self_consistency": finite(s.self_consistency),
        "self_reflection": finite(s.self_reflection),
        "self_reflection_no": finite(s.self_reflection_no),
        "p_yes": finite(math.exp(s.self_reflection)),
        "total": finite(s.total),
        "draft_tokens": s.draft_tokens,
        "self_consistency_tokens": s.self_consistency_tokens,
        "normalization": s.normalization,
        "method": dict(s.method),
    }


def draft_json(d: Draft) -> dict[str, Any]:
    """A draft as the drafter produced it (scores are reported by the ``verify`` step)."""
    return {
        "round": d.round,
        "subset": d.subset,
        "passage_ids": list(d.passage_ids),
        "rationale": d.rationale,
        "answer": d.answer,
        "text": d.text,
        "parsed": d.parsed,
        "outcome": d.outcome,
        "letter": d.letter,
        "logprob": finite(d.logprob),
        "tokens": d.tokens,
        "prompt_tokens": d.prompt_tokens,
        "finish_reason": d.finish_reason,
        "model": d.model,
        "abstain_rule": d.abstain_rule,
        "abstain_prob": finite(d.abstain_prob) if d.abstain_prob is not None else None,
        "answer_forced": d.answer_forced,
    }


def _ranking_input(drafts: Sequence[Draft]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "round": d.round,
            "subset": d.subset,
            "total": finite(d.scores.total),
            "p_yes": finite(math.exp(d.scores.self_reflection)),
        }
        for i, d in enumerate(drafts)
        if d.scores is not None
    ]


def summarize_reads(node: str, task_input: Any) -> dict[str, Any]:
    """What a node read, in a few fields (node-specific; ``{}`` for an unknown input).

    Args:
        node: Node name.
        task_input: The task's input: the ``State`` (as a dataclass or a dict) or a ``DraftTask``.
    """
    if isinstance(task_input, DraftTask):
        return {"subset": task_input.subset, "passage_ids": [p.id for p in task_input.passages]}
    state = _as_state(task_input)
    if state is None:
        return {}
    if node == "condense":
        return {
            "message": as_turn(state.messages[-1]).content if state.messages else state.question,
            "history_turns": max(0, len(state.messages) - 1),
        }
    if node == "retrieve":
        return {"query": state.query or state.question, "excluded_ids": [p.id for p in state.all_passages]}
    if node in ("partition", "compress"):
        return {"passage_ids": [p.id for p in state.passages]}
    if node == "verify":
        return {"draft_indices": [i for i, d in enumerate(state.drafts) if d.scores is None]}
    if node == "reflect":
        return {
            "query": state.query,
            "new_passages": len(state.passages),
            "ranking_input": _ranking_input(state.drafts),
        }
    if node == "answer":
        if state.drafts:
            return {"ranking_input": _ranking_input(state.drafts)}
        return {"passage_ids": [p.id for p in state.passages]}
    return {}


def summarize_writes(node: str, task_input: Any, update: Mapping[str, Any]) -> dict[str, Any]:
    """What a node produced: its state update, with passages, drafts, scores and rounds made readable.

    Args:
        node: Node name.
        task_input: The task's input (to align cluster labels with passage ids and to index scored drafts).
        update: The node's writes, channel -> value (``timings`` and ``all_passages`` are left out).
    """
    state = _as_state(task_input)
    out: dict[str, Any] = {}
    if node == "condense":  # the rest of its update resets the per-run channels of a thread's earlier run
        question, original = update.get("question", ""), update.get("original_question", "")
        return {"original_question": original, "question": question, "rewritten": question != original}
    for channel, value in update.items():
        if channel in ("timings", "all_passages"):
            continue
        if channel == "messages":
            out["messages"] = [{"role": t.role, "content": t.content} for t in map(as_turn, value)]
            continue
        if channel == "passages":
            out["passages"] = [passage_json(p) for p in value]
        elif channel in ("compression", "quarantined"):
            out[channel] = [dataclasses.asdict(c) for c in value]
        elif channel == "clusters" and state is not None and len(state.passages) == len(value):
            out["clusters"] = {p.id: int(label) for p, label in zip(state.passages, value, strict=True)}
        elif channel == "drafts":
            out.update(_drafts_writes(node, state, value))
        elif channel == "rounds":
            out.update(_round_json(value[-1]) if value else {})
        elif channel == "confidence":
            out["confidence"] = _plain(dataclasses.asdict(value)) if isinstance(value, Confidence) else None
        else:
            out[channel] = _plain(value)
    return out


def _drafts_writes(node: str, state: State | None, drafts: Sequence[Draft]) -> dict[str, Any]:
    if node == "draft" and len(drafts) == 1:
        return {"draft": draft_json(drafts[0])}
    merged = merge_drafts(list(state.drafts) if state else [], list(drafts))
    position = {(d.round, d.subset): i for i, d in enumerate(merged)}
    scored = [
        {"index": position[(d.round, d.subset)], "round": d.round, "subset": d.subset, **scores_json(d.scores)}
        for d in drafts
        if d.scores is not None
    ]
    unscored = [draft_json(d) for d in drafts if d.scores is None]
    return {"scores": scored} | ({"drafts": unscored} if unscored else {})


def _round_json(r: Round) -> dict[str, Any]:
    return {
        "decision": r.decision,
        "reason": r.reason,
        "rewritten_query": r.rewritten_query,
        "ranking": list(r.ranking),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def _as_state(task_input: Any) -> State | None:
    if isinstance(task_input, State):
        return task_input
    if isinstance(task_input, Mapping) and ("question" in task_input or "messages" in task_input):
        try:
            return State(**task_input)
        except TypeError:
            return None
    return None
