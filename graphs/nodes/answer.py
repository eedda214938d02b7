"""answer: the final answer, from the selected draft (speculative) or from one model reading all passages."""

from __future__ import annotations

from typing import Any

from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.drafting import format_passages
from graphs.nodes.condense import reply_turn
from graphs.scoring import rank
from graphs.state import State


def answer(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Select the highest-total draft over all rounds (argmax of ρ_draft · ρ_sc · ρ_sr); abstentions are never
    selected (when every draft abstained there is no answer).

    Returns:
        ``chosen`` (index into ``drafts``, None when there is no draft), ``answer`` and ``rationale``; in a chat
        run also the assistant turn appended to ``messages``.
    """
    ranking = rank(state.drafts)
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
    prompt = prompting.load("standard_answer").chat(passages=format_passages(state.passages), question=state.question)
    gen = backends.verifier.generate([prompt], max_tokens=context.answer_max_tokens, stop=["\n"])[0]
    text = gen.text.strip()
    return {"answer": text, "rationale": "", **reply_turn(state, text)}
