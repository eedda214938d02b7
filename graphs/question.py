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
        choices=choices_block(choices),
        letters=letters_text(choices),
    )


def choices_block(choices: Mapping[str, str]) -> str:
    """The choice lines as :func:`with_choices` writes them ('A) ...', one per line)."""
    return "\n".join(f"{k}) {v}" for k, v in choices.items())


def rotate_choices(question: str, choices: Mapping[str, str], shift: int) -> tuple[str, dict[str, str]] | None:
    """The question with its choice texts rotated ``shift`` places under the same letters, and those choices.

    Letter ``keys[j]`` then shows the text of ``keys[(j + shift) % n]``: a drafter that favours one position names a
    different original choice in each rotated draft, so its drafts agree only where it read the choices.
    :func:`unrotate_letter` maps a letter back. None when the question does not hold the choice lines as
    :func:`with_choices` writes them (the drafts then see the question as it is).
    """
    keys = list(choices)
    n = len(keys)
    block = choices_block(choices)
    if n < 2 or shift % n == 0 or block not in question:
        return None
    rotated = {keys[j]: choices[keys[(j + shift) % n]] for j in range(n)}
    return question.replace(block, choices_block(rotated), 1), rotated


def unrotate_letter(letter: str, choices: Mapping[str, str], shift: int) -> str:
    """The original letter of ``letter`` in choices rotated ``shift`` places (:func:`rotate_choices`)."""
    keys = list(choices)
    return keys[(keys.index(letter) + shift) % len(keys)]
