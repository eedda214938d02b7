"""A question as the models read it: for multiple choice, the choices and the letter instruction are part of the
text (``prompts/mcq_question.md``), so the drafter, the verifier and the standard baseline all see them; the
choices themselves travel beside it in the state (``InputState.choices``) so that drafts answer with a letter."""

from __future__ import annotations

from collections.abc import Mapping

from graphs import prompting
from graphs.drafting import letters_text


def with_choices(question: str, choices: Mapping[str, str] | None) -> str:
    """``question`` followed by its choices ('A) ...' lines) and 'Reply with the letter ...'; unchanged without
    choices."""
    if not choices:
        return question
    return prompting.load("mcq_question").text(
        "text",
        question=question.strip(),
        choices="\n".join(f"{k}) {v}" for k, v in choices.items()),
        letters=letters_text(choices),
    )
