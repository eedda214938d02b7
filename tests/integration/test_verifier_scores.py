"""The default verifier (Qwen2.5-Coder-1.5B) ranks correct drafts above corrupted ones (ρ_sc, ρ_sr)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.llm.llamacpp import LlamaCppModel
from app.llm.protocol import ChatPrompt, Message, ScoreRequest
from app.settings import get_settings

pytestmark = pytest.mark.integration

REFLECTION = (Message(role="user", content="Do you think the rationale supports the answer? (Yes or No)"),)

# (question, correct answer, wrong answer, supporting rationale, contradicting rationale)
CASES = [
    (
        "What is the capital of France?",
        "Paris",
        "Berlin",
        "Paris is the capital and largest city of France.",
        "Berlin is the capital of Germany, and Paris is not a city in France.",
    ),
    (
        "Which planet is the largest in the Solar System?",
        "Jupiter",
        "Mars",
        "Jupiter is the largest planet in the Solar System, more massive than all the others combined.",
        "Mars is the largest planet in the Solar System; Jupiter is the smallest.",
    ),
    (
        "Who wrote the play Romeo and Juliet?",
        "William Shakespeare",
        "Charles Dickens",
        "Romeo and Juliet is a tragedy written by William Shakespeare around 1595.",
        "Romeo and Juliet was written by Charles Dickens; Shakespeare never wrote plays.",
    ),
]


def _draft(answer: str, rationale: str) -> str:
    return f"Answer: {answer}\nRationale: {rationale}"


def _prompt(question: str) -> ChatPrompt:
    return ChatPrompt(messages=(Message(role="user", content=f"Question: {question}"),))


@pytest.fixture(scope="module")
def verifier(packaged_model: Callable[[str], Path]) -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(packaged_model(get_settings().verifier.model), n_ctx=1024, n_seq_max=1, n_threads=2)
    yield model
    model.close()


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_self_containment_prefers_the_correct_draft(
    verifier: LlamaCppModel, case: tuple[str, str, str, str, str]
) -> None:
    question, good, bad, support, _contradict = case
    # Only the answer is corrupted. (With a rationale rewritten to match the wrong answer, the Jupiter
    # case inverts on this model: "Answer: Jupiter" is far likelier than "Answer: Mars", but the
    # format tokens "\nRationale" that follow are likelier after the wrong answer.)
    good_draft = _draft(good, support)
    bad_draft = _draft(bad, support)
    scores = verifier.score([ScoreRequest(prompt=_prompt(question), continuation=d) for d in (good_draft, bad_draft)])
    assert scores[0].logprob > scores[1].logprob
    assert scores[1].cached_tokens > 0


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_self_reflection_prefers_a_supporting_rationale(
    verifier: LlamaCppModel, case: tuple[str, str, str, str, str]
) -> None:
    question, good, _bad, support, contradict = case
    results = verifier.score(
        [
            ScoreRequest(
                prompt=_prompt(question),
                continuation=_draft(good, rationale),
                followup=REFLECTION,
                candidates=("Yes", "No"),
            )
            for rationale in (support, contradict)
        ]
    )
    p_yes = [r.candidate_logprobs["Yes"] for r in results]
    assert p_yes[0] > p_yes[1]


def test_the_open_book_belief_follows_the_passages_the_verifier_reads(verifier: LlamaCppModel) -> None:
    """The confidence's open-book input (graphs.verification.open_book): after a passage that states a made-up fact,
    the verifier believes the answer it states, not the one the passage does not give; and the letters of a
    multiple-choice question are normalised over the choices."""
    from app.store.protocol import Chunk
    from graphs.verification import open_book

    question = "Which town did the botanist Ilse Varnhorst retire to?"
    stated = [Chunk(id="1", doc_id="d1", title="Ilse Varnhorst", text="The botanist Ilse Varnhorst retired to Kelso.")]
    other = [Chunk(id="2", doc_id="d2", title="Kelso", text="Kelso is a market town in the Scottish Borders.")]
    right = open_book(verifier, question, stated, "Kelso", {})
    wrong = open_book(verifier, question, stated, "Hexham", {})
    unsupported = open_book(verifier, question, other, "Kelso", {})
    assert right.logprob > wrong.logprob and right.logprob > unsupported.logprob, (right, wrong, unsupported)
    choices = {"A": "Hexham", "B": "Kelso", "C": "Alnwick"}
    asked = question + "\nA. Hexham\nB. Kelso\nC. Alnwick\nAnswer with the letter."
    beliefs = [open_book(verifier, asked, stated, letter, choices) for letter in choices]
    assert sum(math.exp(b.logprob) for b in beliefs) == pytest.approx(1.0, abs=5e-3)  # three calls: cache numerics
    assert beliefs[1].top and not beliefs[0].top and beliefs[1].logprob > -0.7, beliefs
