"""draft: one parallel branch per passage subset; the small drafter writes a rationale, then an answer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.safety import neutralize
from graphs.state import Draft, DraftTask

_ANSWER = re.compile(r"\bAnswer\s*:", re.IGNORECASE)


class Titled(Protocol):
    """Anything with a title and a text (a retrieved ``Passage``, a stored ``Chunk``)."""

    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...


def format_passages(passages: Sequence[Titled]) -> str:
    """Passages as delimited, numbered documents (prompts/passage.md), their control sequences made inert
    (``graphs.safety.neutralize``; a title cannot close its attribute)."""
    template = prompting.load("passage")
    return "\n\n".join(
        template.text("text", number=str(i), title=neutralize(p.title).replace('"', "'"), text=neutralize(p.text))
        for i, p in enumerate(passages, 1)
    )


def parse_draft(text: str) -> tuple[str, str, bool]:
    """Split drafter output (after the 'Rationale:' prefill) into (rationale, answer, parsed).

    The answer is the first line after the last 'Answer:'; without one, the whole text is the rationale and
    its last sentence the answer (``parsed`` is False).
    """
    matches = list(_ANSWER.finditer(text))
    if not matches:
        body = text.strip()
        last = re.split(r"(?<=[.!?])\s+", body)[-1] if body else ""
        return body, last.strip(), False
    cut = matches[-1]
    rationale = text[: cut.start()].strip()
    answer = text[cut.end() :].strip().split("\n", 1)[0].strip()
    return rationale, answer, bool(answer)


def draft(task: DraftTask, context: Context, backends: Backends) -> dict[str, Any]:
    """Draft an answer from one subset (a ``Send`` branch; concurrent branches are batched by the backend).

    Returns:
        ``drafts``: a one-element list (the reducer appends branches' drafts).
    """
    prompt = prompting.load("drafter").chat(passages=format_passages(task.passages), question=task.question)
    gen = backends.drafter.generate([prompt], max_tokens=context.draft_max_tokens)[0]
    rationale, answer, parsed = parse_draft(gen.text)
    result = Draft(
        round=task.round,
        subset=task.subset,
        passage_ids=[p.id for p in task.passages],
        rationale=rationale,
        answer=answer,
        text=gen.text,
        parsed=parsed,
        logprob=gen.logprob,
        tokens=gen.n_tokens,
        prompt_tokens=gen.prompt_tokens,
        finish_reason=gen.finish_reason,
    )
    return {"drafts": [result]}
