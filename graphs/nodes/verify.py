"""verify: the larger verifier scores every new draft (ρ_sc and ρ_sr in one forward pass per draft)."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.llm.protocol import LanguageModel, NotSupportedError
from graphs.backends import Backends
from graphs.context import Context
from graphs.scoring import combine
from graphs.state import State
from graphs.verification import score_requests, self_consistency_method


def verify(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Score the drafts that have no scores yet; abstentions are not verified (they rank last).

    The verifier sees the question and the draft, never the passages (``graphs.verification``). For each draft one
    request carries the teacher-forced ρ_sc (answer and rationale, or with ``self_consistency_of`` the answer
    after the rationale) and the follow-up question whose first answer token gives P('Yes') (ρ_sr); requests
    share the question prefix, which the backend keeps cached.

    Returns:
        ``drafts``: the scored drafts (the reducer replaces them by (round, subset)).
    """
    pending = [d for d in state.drafts if d.scores is None and d.outcome != "abstain"]
    if not pending:
        return {}
    require_scoring(backends.verifier)
    of = context.self_consistency_of
    requests = score_requests(state.question, [(d.answer, d.rationale) for d in pending], of)
    results = backends.verifier.score(requests)
    method = {
        "draft": backends.drafter.provenance("generate"),
        "self_consistency": self_consistency_method(of, backends.verifier.provenance("score")),
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
