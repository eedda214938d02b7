"""reflect: accept the best draft, rewrite the query and retrieve again (bounded by ``max_rounds``), or fall back to
the verifier answering from all passages, on the best draft's calibrated confidence."""

from __future__ import annotations

from typing import Any, Literal

from app.confidence.features import ClosedBook, OpenBook
from app.confidence.model import ConfidenceModel, load_model
from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.nodes.answer import fallback_passages
from graphs.scoring import confidence, decide, rank
from graphs.state import Round, State
from graphs.verification import closed_book, open_book


def reflect(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Decide on this round and record the decision, the confidence and reason it rests on, and any rewritten
    query as a ``Round``.

    Returns:
        ``rounds`` (one new record), ``confidence`` and ``decision``; on retry also the next ``round`` number and
        ``query``.
    """
    ranking = rank(state.drafts, context.selection)
    model = None if context.confidence_model == "none" else load_model(context.confidence_model)
    if model is not None:
        model.require_scoring(context.self_consistency_of)
    conf = None
    if model is not None:
        believed, read = _beliefs(state, ranking, backends, model)
        conf = confidence(
            state.drafts,
            ranking,
            mcq=bool(state.choices),
            model=model,
            question=state.question,
            choices=state.choices,
            passages=state.all_passages,
            closed_book=believed,
            open_book=read,
        )
    readable = fallback_passages(state, context)
    decision, reason = decide(
        state.drafts,
        ranking,
        conf,
        round_index=state.round,
        new_passages=len(state.passages),
        total_passages=len(readable),
        context=context,
    )
    rewritten = rewrite_query(state, ranking, context, backends) if decision == "retry" else ""
    if decision == "retry" and _same(rewritten, state.query or state.question):
        # Another round with the same search would retrieve nothing the drafts have not seen in spirit.
        answered = _answered(state, ranking)
        decision = "fallback" if context.fallback and readable else "accept" if answered else "give_up"
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
        confidence=conf,
    )
    update: dict[str, Any] = {"rounds": [record], "confidence": conf, "decision": decision}
    if decision == "retry":
        update |= {"round": state.round + 1, "query": rewritten}
    return update


def _beliefs(
    state: State, ranking: list[int], backends: Backends, model: ConfidenceModel
) -> tuple[ClosedBook | None, OpenBook | None]:
    """The verifier's beliefs in the best draft's answer (its letter for multiple choice) that ``model`` reads:
    closed book, and open book after that draft's passages (as retrieved); None for what it does not read, and
    when no draft answered."""
    if not _answered(state, ranking):
        return None, None
    best = state.drafts[ranking[0]]
    answer = best.letter or best.answer
    believed = (
        closed_book(backends.verifier, state.question, answer, state.choices) if model.reads_closed_book else None
    )
    if not model.reads_open_book:
        return believed, None
    by_id = {p.id: p for p in state.all_passages}
    read = [by_id[i] for i in best.passage_ids if i in by_id]
    return believed, open_book(backends.verifier, state.question, read, answer, state.choices)


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


def after_reflect(state: State) -> Literal["retrieve", "fallback", "answer"]:
    """Route on the last round's decision: 'retry' back to ``retrieve``, 'fallback' to ``fallback``, else
    ``answer``."""
    decision = state.rounds[-1].decision if state.rounds else "accept"
    if decision == "retry":
        return "retrieve"
    return "fallback" if decision == "fallback" else "answer"
