"""draft: one parallel branch per passage subset; the small drafter writes a rationale, then an answer (a choice
letter for multiple choice, a short span otherwise) or abstains when its passages do not hold the answer."""

from __future__ import annotations

import dataclasses
from typing import Any

from graphs.backends import Backends
from graphs.context import Context
from graphs.drafting import draft_prompt, format_passages, parse_reply, write_draft
from graphs.question import rotate_choices, unrotate_letter
from graphs.state import Draft, DraftTask

__all__ = ["draft", "format_passages"]


def draft(task: DraftTask, context: Context, backends: Backends) -> dict[str, Any]:
    """Draft an answer from one subset (a ``Send`` branch; concurrent branches are batched by the backend).

    The prompt and the reader of the reply are ``graphs.drafting``'s (the same ones drafter tuning trains on).
    With ``abstain_threshold`` and a tuned drafter's answer lead, a short-answer draft abstains only when the
    drafter is that sure (``graphs.drafting.write_draft``; the draft records the rule, the probability and whether
    it was made to answer). With ``rotate_choices``, the drafter of subset i sees a multiple-choice question's
    choice texts rotated i places under the same letters, and its letter is mapped back (``Draft.choice_shift``
    records the rotation).

    Returns:
        ``drafts``: a one-element list (the reducer appends branches' drafts).
    """
    question, choices, shift = task.question, task.choices, 0
    if context.rotate_choices and task.choices:
        rotated = rotate_choices(task.question, task.choices, task.subset)
        if rotated is not None:
            (question, choices), shift = rotated, task.subset % len(task.choices)
    prompt = draft_prompt(question, task.passages, choices)
    gen = write_draft(
        backends.drafter,
        prompt,
        max_tokens=context.draft_max_tokens,
        lead=backends.drafter_lead,
        threshold=context.abstain_threshold,
        choices=choices,
    )
    reply = parse_reply(gen.text, choices)
    if shift and reply.letter is not None:
        letter = unrotate_letter(reply.letter, task.choices, shift)
        reply = dataclasses.replace(reply, letter=letter, answer=letter)
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
        choice_shift=shift,
        logprob=gen.logprob,
        tokens=gen.tokens,
        prompt_tokens=gen.prompt_tokens,
        finish_reason=gen.finish_reason,
        model=backends.drafter.name,
        abstain_rule=gen.abstain_rule,
        abstain_prob=gen.abstain_prob,
        answer_forced=gen.answer_forced,
    )
    return {"drafts": [result]}
