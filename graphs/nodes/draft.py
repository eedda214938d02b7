"""draft: one parallel branch per passage subset; the small drafter writes a rationale, then an answer (a choice
letter for multiple choice, a short span otherwise) or abstains when its passages do not hold the answer."""

from __future__ import annotations

from typing import Any

from graphs.backends import Backends
from graphs.context import Context
from graphs.drafting import draft_prompt, format_passages, parse_reply
from graphs.state import Draft, DraftTask

__all__ = ["draft", "format_passages"]


def draft(task: DraftTask, context: Context, backends: Backends) -> dict[str, Any]:
    """Draft an answer from one subset (a ``Send`` branch; concurrent branches are batched by the backend).

    The prompt and the reader of the reply are ``graphs.drafting``'s (the same ones drafter tuning trains on).

    Returns:
        ``drafts``: a one-element list (the reducer appends branches' drafts).
    """
    prompt = draft_prompt(task.question, task.passages, task.choices)
    gen = backends.drafter.generate([prompt], max_tokens=context.draft_max_tokens)[0]
    reply = parse_reply(gen.text, task.choices)
    result = Draft(
        round=task.round,
        subset=task.subset,
        passage_ids=[p.id for p in task.passages],
        rationale=reply.rationale,
        answer=reply.answer,
        text=gen.text,
        parsed=reply.outcome != "unparsed",
        outcome=reply.outcome,
        letter=reply.letter,
        logprob=gen.logprob,
        tokens=gen.n_tokens,
        prompt_tokens=gen.prompt_tokens,
        finish_reason=gen.finish_reason,
        model=backends.drafter.name,
    )
    return {"drafts": [result]}
