"""reflect: accept the best draft, or rewrite the query and retrieve again (bounded by ``max_rounds``)."""

from __future__ import annotations

from typing import Any, Literal

from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.scoring import decide, rank
from graphs.state import Round, State


def reflect(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Decide on this round and record the decision, its reason and any rewritten query as a ``Round``.

    Returns:
        ``rounds`` (one new record); on retry also the next ``round`` number and ``query``.
    """
    ranking = rank(state.drafts)
    decision, reason = decide(
        state.drafts, ranking, round_index=state.round, new_passages=len(state.passages), context=context
    )
    rewritten = rewrite_query(state, ranking, context, backends) if decision == "retry" else ""
    if decision == "retry" and _same(rewritten, state.query or state.question):
        # Another round with the same search would retrieve nothing the drafts have not seen in spirit.
        decision = "accept" if _answered(state, ranking) else "give_up"
        reason += f"; but the rewritten query repeats the previous one ({rewritten!r}), so no new round"
    record = Round(
        index=state.round,
        query=state.query,
        passage_ids=[p.id for p in state.passages],
        clusters=list(state.clusters),
        subsets=[list(s) for s in state.subsets],
        ranking=ranking,
        decision=decision,
        reason=reason,
        rewritten_query=rewritten,
    )
    if decision == "retry":
        return {"rounds": [record], "round": state.round + 1, "query": rewritten}
    return {"rounds": [record]}


def rewrite_query(state: State, ranking: list[int], context: Context, backends: Backends) -> str:
    """A new retrieval query from the verifier, given the question and the best (unsupported) draft."""
    best = state.drafts[ranking[0]] if _answered(state, ranking) else None
    prompt = prompting.load("rewrite_query").chat(
        question=state.question,
        query=state.query,
        answer=best.answer if best else "(none)",
    )
    gen = backends.verifier.generate([prompt], max_tokens=context.rewrite_max_tokens, stop=["\n"])[0]
    query = gen.text.strip().strip('"').strip()
    return query or state.question


def _answered(state: State, ranking: list[int]) -> bool:
    """Whether the best-ranked draft is an answer (abstentions rank last, so otherwise every draft abstained)."""
    return bool(ranking) and state.drafts[ranking[0]].outcome != "abstain"


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).strip(" ?.") == " ".join(b.lower().split()).strip(" ?.")


def after_reflect(state: State) -> Literal["retrieve", "answer"]:
    """Route: back to ``retrieve`` when the last round's decision was 'retry', else to ``answer``."""
    return "retrieve" if state.rounds and state.rounds[-1].decision == "retry" else "answer"
