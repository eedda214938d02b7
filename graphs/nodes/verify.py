"""verify: the larger verifier scores every new draft (ρ_sc and ρ_sr in one forward pass per draft)."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.llm.protocol import LanguageModel, NotSupportedError
from graphs.backends import Backends
from graphs.context import Context
from graphs.scoring import agreed, combine
from graphs.state import Draft, State
from graphs.verification import score_requests, self_consistency_method


def verify(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Score the drafts that have no scores yet; abstentions are not verified (they rank last).

    The verifier sees the question and the draft, never the passages (``graphs.verification``). For each draft one
    request carries the teacher-forced ρ_sc (answer and rationale, or with ``self_consistency_of`` the answer
    after the rationale) and the follow-up question whose first answer token gives P('Yes') (ρ_sr); requests
    share the question prefix, which the backend keeps cached.

    Drafts with the same answer and rationale (different subsets often yield the same draft) are scored once:
    the verifier never sees the passages, so their requests are identical; ``method['shared']`` names the subsets
    that share the result. ρ_draft stays each draft's own.

    Without a confidence model, a round whose answering drafts all give the same answer is not verified
    (:func:`skips`): the scores could only choose among rationales. ``reflect`` says so in its reason.

    Returns:
        ``drafts``: the scored drafts (the reducer replaces them by (round, subset)).
    """
    pending = [d for d in state.drafts if d.scores is None and d.outcome != "abstain"]
    if not pending or skips(state, context):
        return {}
    require_scoring(backends.verifier)
    of = context.self_consistency_of
    groups: dict[tuple[str, str], list[Draft]] = {}
    for d in pending:
        groups.setdefault((d.answer, d.rationale), []).append(d)
    results = backends.verifier.score(score_requests(state.question, list(groups), of))
    method = {
        "draft": backends.drafter.provenance("generate"),
        "self_consistency": self_consistency_method(of, backends.verifier.provenance("score")),
        "self_reflection": f"log P('Yes' | follow-up): {backends.verifier.provenance('candidates')}",
    }
    scored: list[Draft] = []
    for same, result in zip(groups.values(), results, strict=True):
        shared = {"shared": _shared_note(same)} if len(same) > 1 else {}
        scored.extend(dataclasses.replace(d, scores=combine(d, result, context, method | shared)) for d in same)
    return {"drafts": scored}


def skips(state: State, context: Context) -> bool:
    """Whether this round goes unverified: no confidence model reads the scores (``confidence_model`` 'none'),
    ``verify_agreed`` is off, and every draft that answered gives the same answer (``graphs.scoring.agreed``)."""
    return context.confidence_model == "none" and not context.verify_agreed and agreed(state.drafts) is not None


def _shared_note(same: list[Draft]) -> str:
    """The trace's note for identical drafts scored by one verifier request."""
    names = ", ".join(f"round {d.round} subset {d.subset}" for d in same)
    return f"ρ_sc and ρ_sr scored once for {len(same)} identical drafts ({names})"


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
