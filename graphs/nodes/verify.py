"""verify: the larger verifier scores every new draft (ρ_sc and ρ_sr in one forward pass per draft)."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.llm.protocol import Message, ScoreRequest
from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.scoring import combine
from graphs.state import State


def verify(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Score the drafts that have no scores yet.

    The verifier sees the question and the draft, never the passages. For each draft one request carries
    the teacher-forced continuation 'Answer: … Rationale: …' (ρ_sc) and the follow-up question whose first
    answer token gives P('Yes') (ρ_sr); requests share the question prefix, which the backend keeps cached.

    Returns:
        ``drafts``: the scored drafts (the reducer replaces them by (round, subset)).
    """
    pending = [d for d in state.drafts if d.scores is None]
    if not pending:
        return {}
    template = prompting.load("verifier")
    prompt = template.chat(question=state.question)
    followup = (Message(role="user", content=template.text("followup")),)
    requests = [
        ScoreRequest(
            prompt=prompt,
            continuation=template.text("continuation", answer=d.answer, rationale=d.rationale),
            followup=followup,
            candidates=("Yes", "No"),
        )
        for d in pending
    ]
    results = backends.verifier.score(requests)
    method = {
        "draft": f"sum of generated-token log-probabilities ({backends.drafter.name})",
        "self_consistency": f"teacher-forced log-probability of answer + rationale ({backends.verifier.name})",
        "self_reflection": f"next-token log-probability of 'Yes', same forward pass ({backends.verifier.name})",
    }
    scored = [
        dataclasses.replace(d, scores=combine(d, r, context, method)) for d, r in zip(pending, results, strict=True)
    ]
    return {"drafts": scored}
