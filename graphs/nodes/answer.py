"""answer: the final answer, from the selected draft (speculative) or from one model reading all passages."""

from __future__ import annotations

from typing import Any

from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.drafting import format_passages
from graphs.nodes.condense import reply_turn
from graphs.scoring import rank
from graphs.state import Passage, State


def answer(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Select the highest-total draft over all rounds (argmax of ρ_draft · ρ_sc · ρ_sr); abstentions are never
    selected (when every draft abstained there is no answer).

    Returns:
        ``chosen`` (index into ``drafts``, None when there is no draft), ``answer`` and ``rationale``; in a chat
        run also the assistant turn appended to ``messages``.
    """
    ranking = rank(state.drafts, context.selection)
    if not ranking or state.drafts[ranking[0]].outcome == "abstain":
        rationale = (
            f"All {len(ranking)} drafts abstained: the retrieved documents do not contain the answer."
            if ranking
            else "No relevant passages were found."
        )
        return {"chosen": None, "answer": "", "rationale": rationale, **reply_turn(state, rationale)}
    best = state.drafts[ranking[0]]
    return {
        "chosen": ranking[0],
        "answer": best.answer,
        "rationale": best.rationale,
        **reply_turn(state, best.answer or best.rationale),
    }


def standard_answer(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Standard RAG (the baseline): the verifier-size model reads all retrieved passages and answers.

    Returns:
        ``answer`` (first line of the completion after the 'Answer:' prefill); in a chat run also the assistant
        turn appended to ``messages``.
    """
    text = _read_all(state, state.passages, context, backends)
    return {"answer": text, "rationale": "", **reply_turn(state, text)}


def fallback(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """The fallback of Speculative RAG (reflection's decision 'fallback'): no draft is trusted, so the verifier
    answers from all passages as standard RAG does (:func:`fallback_passages`).

    Returns:
        ``chosen`` None, ``answer`` and an empty ``rationale``; in a chat run also the assistant turn.
    """
    text = _read_all(state, fallback_passages(state, context), context, backends)
    return {"chosen": None, "answer": text, "rationale": "", **reply_turn(state, text)}


def fallback_passages(state: State, context: Context) -> list[Passage]:
    """What a fallback reads: this round's passages, as retrieved (in round 0 exactly standard RAG's; the
    drafts' compressed texts only with ``compress_answer``); after a retry, the new round's passages first (the
    earlier ones lacked the answer), then the earlier rounds' that were not quarantined, ``top_n`` in all."""
    retrieved = {p.id: p for p in state.all_passages}
    current = list(state.passages) if context.compress_answer else [retrieved.get(p.id, p) for p in state.passages]
    if state.round == 0:
        return current
    skip = {q.passage_id for q in state.quarantined} | {p.id for p in current}
    return (current + [p for p in state.all_passages if p.id not in skip])[: context.top_n]


def _read_all(state: State, passages: list[Passage], context: Context, backends: Backends) -> str:
    """The verifier's answer to the question from ``passages`` (first line after the 'Answer:' prefill)."""
    prompt = prompting.load("standard_answer").chat(passages=format_passages(passages), question=state.question)
    gen = backends.verifier.generate([prompt], max_tokens=context.answer_max_tokens, stop=["\n"])[0]
    return gen.text.strip()
