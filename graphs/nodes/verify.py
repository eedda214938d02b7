"""verify: the larger verifier scores every new draft (ρ_sc and ρ_sr in one forward pass per draft)."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.llm.protocol import LanguageModel, Message, NotSupportedError, ScoreRequest
from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.safety import neutralize
from graphs.scoring import combine
from graphs.state import State


def verify(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Score the drafts that have no scores yet; abstentions are not verified (they rank last).

    The verifier sees the question and the draft, never the passages (a draft that copied control sequences from a
    passage is scored with them made inert, ``graphs.safety``). For each draft one request carries
    the teacher-forced continuation 'Answer: … Rationale: …' (ρ_sc) and the follow-up question whose first
    answer token gives P('Yes') (ρ_sr); requests share the question prefix, which the backend keeps cached.

    Returns:
        ``drafts``: the scored drafts (the reducer replaces them by (round, subset)).
    """
    pending = [d for d in state.drafts if d.scores is None and d.outcome != "abstain"]
    if not pending:
        return {}
    require_scoring(backends.verifier)
    template = prompting.load("verifier")
    prompt = template.chat(question=state.question)
    followup = (Message(role="user", content=template.text("followup")),)
    requests = [
        ScoreRequest(
            prompt=prompt,
            continuation=template.text("continuation", answer=neutralize(d.answer), rationale=neutralize(d.rationale)),
            followup=followup,
            candidates=("Yes", "No"),
        )
        for d in pending
    ]
    results = backends.verifier.score(requests)
    method = {
        "draft": backends.drafter.provenance("generate"),
        "self_consistency": f"log P(answer + rationale | question): {backends.verifier.provenance('score')}",
        "self_reflection": f"log P('Yes' | follow-up): {backends.verifier.provenance('candidates')}",
    }
    scored = [
        dataclasses.replace(d, scores=combine(d, r, context, method)) for d, r in zip(pending, results, strict=True)
    ]
    return {"drafts": scored}


def require_scoring(verifier: LanguageModel) -> None:
    """Refuse a verifier that cannot compute ρ_sc and ρ_sr genuinely (nothing is approximated in its place).

    Raises:
        NotSupportedError: the verifier backend lacks teacher-forced scoring; the message names the setting.
    """
    caps = verifier.capabilities
    if not (caps.score_continuation and caps.next_token_logprobs):
        raise NotSupportedError(
            f"the verifier backend {verifier.name!r} cannot compute teacher-forced log-probabilities (ρ_sc) and the "
            "follow-up P('Yes') (ρ_sr); set SPECRAG_VERIFIER__PROVIDER=llamacpp or openai (a vLLM server)"
        )
