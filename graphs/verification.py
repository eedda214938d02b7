"""The verifier's scoring requests for drafts (Sec. 3.3 of the paper), shared by the ``verify`` node and the
evaluation's re-verifying systems, so that both ask the verifier exactly the same thing."""

from __future__ import annotations

from collections.abc import Sequence

from app.confidence.model import SelfConsistencyOf
from app.llm.protocol import ChatPrompt, Message, ScoreRequest
from graphs import prompting
from graphs.safety import neutralize


def score_requests(
    question: str, drafts: Sequence[tuple[str, str]], of: SelfConsistencyOf = "answer_and_rationale"
) -> list[ScoreRequest]:
    """One request per (answer, rationale): ρ_sc teacher-forced and the follow-up whose first token gives ρ_sr.

    The verifier sees the question and the draft, never the passages; text a draft copied from a passage is made
    inert (``graphs.safety``). Every request starts with the same question prefix, which a backend with a prefix
    cache computes once.

    Args:
        question: The question as the models read it (with its choices for multiple choice).
        drafts: (answer, rationale) per draft.
        of: ``answer_and_rationale``: the continuation is 'Answer: … Rationale: …' (the paper's
            P(answer, rationale | question)); ``answer_given_rationale``: the assistant turn starts with the
            rationale and only the answer is scored, P(answer | question, rationale).
    """
    template = prompting.load("verifier")
    prompt = template.chat(question=question)
    followup = (Message(role="user", content=template.text("followup")),)
    requests = []
    for answer, rationale in drafts:
        answer, rationale = neutralize(answer), neutralize(rationale)
        if of == "answer_given_rationale":
            # the rationale opens the assistant turn; the answer follows 'Answer:' after one space, as drafted
            scored = ChatPrompt(messages=prompt.messages, prefill=template.text("given_rationale", rationale=rationale))
            continuation = f" {answer}"
        else:
            scored, continuation = prompt, template.text("continuation", answer=answer, rationale=rationale)
        requests.append(
            ScoreRequest(prompt=scored, continuation=continuation, followup=followup, candidates=("Yes", "No"))
        )
    return requests


def self_consistency_method(of: SelfConsistencyOf, provenance: str) -> str:
    """How ρ_sc was computed, for the trace (``Scores.method``)."""
    measured = (
        "log P(answer | question, rationale)"
        if of == "answer_given_rationale"
        else "log P(answer + rationale | question)"
    )
    return f"{measured}: {provenance}"
