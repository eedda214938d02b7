"""The verifier's scoring requests for drafts (Sec. 3.3 of the paper), shared by the ``verify`` node and the
evaluation's re-verifying systems, so that both ask the verifier exactly the same thing."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from app.confidence.features import Belief, ClosedBook, OpenBook
from app.confidence.model import SelfConsistencyOf
from app.llm.protocol import ChatPrompt, LanguageModel, Message, ScoreRequest
from graphs import prompting
from graphs.drafting import Titled, format_passages
from graphs.safety import neutralize


def score_requests(
    question: str, drafts: Sequence[tuple[str, str]], of: SelfConsistencyOf = "answer_and_rationale"
) -> list[ScoreRequest]:
    """One request per (answer, rationale): ρ_sc teacher-forced and the follow-up whose first token gives ρ_sr.

    The verifier sees the question and the draft, never the passages; text a draft copied from a passage is made
    inert (``graphs.safety``). Every request starts with the same question prefix, which a backend with a prefix
    cache computes once.

    Args:
        question: The question as the models read it (with its choices for multiple choice).
        drafts: (answer, rationale) per draft.
        of: ``answer_and_rationale``: the continuation is 'Answer: … Rationale: …' (the paper's
            P(answer, rationale | question)); ``answer_given_rationale``: the assistant turn starts with the
            rationale and only the answer is scored, P(answer | question, rationale).
    """
    template = prompting.load("verifier")
    prompt = template.chat(question=question)
    followup = (Message(role="user", content=template.text("followup")),)
    requests = []
    for answer, rationale in drafts:
        answer, rationale = neutralize(answer), neutralize(rationale)
        if of == "answer_given_rationale":
            # the rationale opens the assistant turn; the answer follows 'Answer:' after one space, as drafted
            scored = ChatPrompt(messages=prompt.messages, prefill=template.text("given_rationale", rationale=rationale))
            continuation = f" {answer}"
        else:
            scored, continuation = prompt, template.text("continuation", answer=answer, rationale=rationale)
        requests.append(
            ScoreRequest(prompt=scored, continuation=continuation, followup=followup, candidates=("Yes", "No"))
        )
    return requests


def closed_book_requests(question: str, continuations: Sequence[str]) -> list[ScoreRequest]:
    """Requests for the verifier's closed-book log P(continuation | question): the question alone (no rationale,
    no passages), the assistant turn opened with 'Answer:' and each continuation (' <answer>' or ' <letter>')
    teacher-forced. They share the question prefix with :func:`score_requests`'s."""
    template = prompting.load("verifier")
    prompt = template.chat(question=question)
    scored = ChatPrompt(messages=prompt.messages, prefill=template.text("closed_book"))
    return [ScoreRequest(prompt=scored, continuation=f" {neutralize(c)}") for c in continuations]


def closed_book(verifier: LanguageModel, question: str, answer: str, choices: Mapping[str, str]) -> ClosedBook:
    """The verifier's closed-book belief in ``answer`` (a choice letter when ``choices`` are given): one request per
    letter for multiple choice (normalised over the letters), one for a short answer (per token)."""
    return _belief(verifier, closed_book_requests, question, answer, choices)


def open_book_requests(question: str, passages: Sequence[Titled], continuations: Sequence[str]) -> list[ScoreRequest]:
    """Requests for the verifier's log P(continuation | passages, question) when it reads ``passages`` (the selected
    draft's) as standard RAG reads all of them (``prompts/standard_answer.md``, the same prompt the fallback
    answers from), the assistant turn opened with 'Answer:' and each continuation teacher-forced. The draft's
    rationale is not shown: the verifier judges the answer from the evidence itself."""
    prompt = prompting.load("standard_answer").chat(passages=format_passages(passages), question=question)
    return [ScoreRequest(prompt=prompt, continuation=f" {neutralize(c)}") for c in continuations]


def open_book(
    verifier: LanguageModel, question: str, passages: Sequence[Titled], answer: str, choices: Mapping[str, str]
) -> OpenBook:
    """The verifier's belief in ``answer`` after reading ``passages`` (the selected draft's), normalised as
    :func:`closed_book`'s."""

    def requests(q: str, continuations: Sequence[str]) -> list[ScoreRequest]:
        return open_book_requests(q, passages, continuations)

    return _belief(verifier, requests, question, answer, choices)


def _belief(
    verifier: LanguageModel,
    requests: Callable[[str, Sequence[str]], list[ScoreRequest]],
    question: str,
    answer: str,
    choices: Mapping[str, str],
) -> Belief:
    """Score ``answer`` (every letter for multiple choice, normalised over them; else per token) with ``requests``."""
    if choices:
        letters = list(choices)
        results = verifier.score(requests(question, letters))
        logps = [r.logprob for r in results]
        top = max(logps)
        norm = top + math.log(sum(math.exp(v - top) for v in logps))
        key = answer.strip().upper()
        mine = next((v for letter, v in zip(letters, logps, strict=True) if letter.upper() == key), -math.inf)
        return Belief(logprob=mine - norm, top=math.isfinite(mine) and mine >= top)
    (result,) = verifier.score(requests(question, [answer]))
    return Belief(logprob=result.logprob / max(result.n_tokens, 1), top=False)


def self_consistency_method(of: SelfConsistencyOf, provenance: str) -> str:
    """How ρ_sc was computed, for the trace (``Scores.method``)."""
    measured = (
        "log P(answer | question, rationale)"
        if of == "answer_given_rationale"
        else "log P(answer + rationale | question)"
    )
    return f"{measured}: {provenance}"
