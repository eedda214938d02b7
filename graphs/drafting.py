"""The drafter's reply, one contract for the graph and for drafter tuning (``app/tune``): how a draft is asked for
(task-aware: a choice letter for multiple choice, a short span otherwise), how a reply is read back (an answer, an
abstention or unparsed) and how a training target is written (exactly what the parser accepts).

A reply is ``Rationale: <at most two sentences>`` then ``Answer: <letter | short span>``; the assistant turn is
pre-filled with ``Rationale:``. An abstention is the fixed answer ``unknown`` (``ABSTAIN_ANSWER``): the drafter's
subset does not hold the answer. Abstentions are not verified and rank last (``graphs.scoring.rank``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from app.llm.protocol import ChatPrompt, Generation, LanguageModel
from graphs import prompting
from graphs.safety import neutralize

Outcome = Literal["answer", "abstain", "unparsed"]
"""What a draft is: an answer, an abstention (its documents do not hold the answer) or text the parser could not
read as either (verified like an answer, from its best guess)."""

ABSTAIN_ANSWER = "unknown"
"""The answer line of an abstention, as the prompts and the training targets write it."""
ABSTAIN_RATIONALE = "The documents do not contain the answer."
"""The rationale line of an abstention."""

_ABSTAIN_FORMS = re.compile(
    r"^(?:unknown|not (?:stated|given|mentioned|known|in the documents)|none|n/?a|no answer|cannot be determined"
    r"|the documents do not (?:say|contain the answer|state it|mention it))\W*$",
    re.IGNORECASE,
)
_ANSWER = re.compile(r"\bAnswer\s*:", re.IGNORECASE)
_RATIONALE = re.compile(r"^\s*Rationale\s*:\s*", re.IGNORECASE)


class Titled(Protocol):
    """Anything with a title and a text (a retrieved ``Passage``, a stored ``Chunk``)."""

    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A drafter reply, read back."""

    rationale: str
    """The rationale (without its label)."""
    answer: str
    """The answer as written (for multiple choice, the letter when one was read)."""
    outcome: Outcome
    """answer, abstain or unparsed."""
    letter: str | None = None
    """Multiple choice: the choice letter the answer names (None when none could be read, or not multiple choice)."""


def format_passages(passages: Sequence[Titled]) -> str:
    """Passages as delimited, numbered documents (prompts/passage.md), their control sequences made inert
    (``graphs.safety.neutralize``; a title cannot close its attribute)."""
    template = prompting.load("passage")
    return "\n\n".join(
        template.text("text", number=str(i), title=neutralize(p.title).replace('"', "'"), text=neutralize(p.text))
        for i, p in enumerate(passages, 1)
    )


def letters_text(choices: Mapping[str, str]) -> str:
    """'A, B, C or D' for the prompt."""
    letters = list(choices)
    return ", ".join(letters[:-1]) + f" or {letters[-1]}" if len(letters) > 1 else "".join(letters)


def draft_prompt(question: str, passages: Sequence[Titled], choices: Mapping[str, str] | None = None) -> ChatPrompt:
    """The drafter's prompt for one subset: ``prompts/drafter_mcq.md`` when the question has choices (the question
    text then already lists them, ``graphs.question.with_choices``), else ``prompts/drafter.md``."""
    docs = format_passages(passages)
    if choices:
        return prompting.load("drafter_mcq").chat(question=question, passages=docs, letters=letters_text(choices))
    return prompting.load("drafter").chat(question=question, passages=docs)


def render_reply(rationale: str, answer: str) -> str:
    """The text a drafter should write after the ``Rationale:`` prefill (what training targets contain)."""
    return f" {' '.join(rationale.split())}\nAnswer: {' '.join(answer.split())}"


def abstention_reply() -> str:
    """The fixed abstention reply (after the prefill)."""
    return render_reply(ABSTAIN_RATIONALE, ABSTAIN_ANSWER)


def is_abstention(answer: str) -> bool:
    """Whether an answer line says that the documents do not hold the answer."""
    return bool(_ABSTAIN_FORMS.match(" ".join(answer.split()).strip(" .\"'")))


def parse_reply(text: str, choices: Mapping[str, str] | None = None) -> Reply:
    """Read a drafter reply (the text after the ``Rationale:`` prefill).

    The answer is the first line after the last ``Answer:``. It is an abstention when it is the fixed form (or one of
    its plain variants, ``is_abstention``); for multiple choice it is an answer only when it names a choice letter
    (``B``, ``(B)``, ``B) text``, or exactly one choice's text), else unparsed. Without an ``Answer:`` line the whole
    text is the rationale and its last sentence the answer (unparsed).
    """
    matches = list(_ANSWER.finditer(text))
    if not matches:
        body = _RATIONALE.sub("", text.strip())
        last = re.split(r"(?<=[.!?])\s+", body)[-1] if body else ""
        return Reply(rationale=body, answer=last.strip(), outcome="unparsed")
    cut = matches[-1]
    rationale = _RATIONALE.sub("", text[: cut.start()].strip()).strip()
    answer = text[cut.end() :].strip().split("\n", 1)[0].strip()
    if not answer:
        return Reply(rationale=rationale, answer="", outcome="unparsed")
    if is_abstention(answer):
        return Reply(rationale=rationale, answer=ABSTAIN_ANSWER, outcome="abstain")
    if not choices:
        return Reply(rationale=rationale, answer=answer, outcome="answer")
    letter = choice_letter(answer, choices)
    if letter is None:
        return Reply(rationale=rationale, answer=answer, outcome="unparsed")
    return Reply(rationale=rationale, answer=letter, outcome="answer", letter=letter)


def choice_letter(answer: str, choices: Mapping[str, str]) -> str | None:
    """The choice letter an answer line names: a leading letter (``B``, ``(B)``, ``B)``, ``B.``, ``B:``, followed by
    anything), or the text of exactly one choice; None otherwise."""
    keys = {k.upper(): k for k in choices if k}
    if not keys:
        return None
    alt = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    t = answer.strip()
    leading = re.match(rf"^[\(\[]?({alt})(?:[\)\]\.:,]|\s|$)", t, flags=re.IGNORECASE)
    # A lower-case letter counts only alone ('b'); 'A gas ...' starts with the article, not the letter.
    if leading and (len(t) <= 3 or leading.group(1).isupper()) and not re.match(r"A\s+[a-z]", t):
        return keys[leading.group(1).upper()]
    norm = _norm(t)
    same = [k for k, v in choices.items() if _norm(v) and _norm(v) == norm]
    return same[0] if len(same) == 1 else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True)
class LeadSplit:
    """A tuned drafter's answer lead and the abstention rationale, split at their first different word: after the
    shared opening, answering or abstaining is one word ("The documents" + "say" | "do")."""

    shared: str
    """The words both open with ("The documents")."""
    answer_word: str
    """The answer lead's next word ("say")."""
    abstain_word: str
    """The abstention's next word ("do")."""


def split_lead(lead: str) -> LeadSplit | None:
    """Split ``lead`` against ``ABSTAIN_RATIONALE``; None when they share no opening or differ in no word."""
    a, b = lead.split(), ABSTAIN_RATIONALE.split()
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n == 0 or n >= len(a) or n >= len(b):
        return None
    answer_word, abstain_word = _first_word(a[n]), _first_word(b[n])
    if not answer_word or not abstain_word or answer_word.lower() == abstain_word.lower():
        return None
    return LeadSplit(" ".join(a[:n]), answer_word, abstain_word)


@dataclass(frozen=True, kw_only=True)
class Drafted:
    """What the drafter wrote for one subset, and how answering was weighed against abstaining."""

    text: str
    """The reply after the ``Rationale:`` prefill, any opening the step pre-filled included."""
    logprob: float
    """The drafter's log-probability of ``text``: the generated tokens, plus, for a draft written again with the
    answer lead, log(1 - P(abstention word)) for the answer word it was given (the two words hold over 98 % of the
    mass after the opening, measured on the tuned drafters; the shared opening itself is not counted)."""
    tokens: int
    """Tokens generated (of the kept generation)."""
    prompt_tokens: int
    """Tokens of the prompt (of the kept generation)."""
    finish_reason: str
    """'stop' or 'length'."""
    abstain_prob: float | None = None
    """With a threshold: the drafter's probability of the abstention's word after the opening, when it chose that
    word (None: it chose to answer, so the probability was below one half; or no threshold applied)."""
    answer_forced: bool = False
    """Whether the drafter chose to abstain at or below the threshold and was made to answer (the answer lead
    pre-filled)."""
    abstain_rule: str = "greedy"
    """How answering was weighed against abstaining: 'greedy', or 'threshold <t>'."""

    @classmethod
    def of(
        cls,
        gen: Generation,
        *,
        opening: str = "",
        given_logprob: float = 0.0,
        abstain_prob: float | None = None,
        answer_forced: bool = False,
        abstain_rule: str = "greedy",
    ) -> Drafted:
        """A generation after the pre-filled ``opening``, with the log-probability of a word it was given."""
        return cls(
            text=opening + gen.text,
            logprob=gen.logprob + given_logprob,
            tokens=gen.n_tokens,
            prompt_tokens=gen.prompt_tokens,
            finish_reason=gen.finish_reason,
            abstain_prob=abstain_prob,
            answer_forced=answer_forced,
            abstain_rule=abstain_rule,
        )


def write_draft(
    llm: LanguageModel,
    prompt: ChatPrompt,
    *,
    max_tokens: int,
    lead: str = "",
    threshold: float | None = None,
    choices: Mapping[str, str] | None = None,
) -> Drafted:
    """Generate one draft. With ``threshold`` and a drafter ``lead`` (short-answer questions only: multiple choice
    never abstains), the shared opening of the lead and the abstention is pre-filled; when the drafter then picks
    the abstention's word with probability at or below ``threshold``, the draft is written again with the whole
    answer lead pre-filled (one more generation, for those drafts only)."""
    split = split_lead(lead) if threshold is not None and not choices else None
    if split is None:
        greedy = "greedy" if threshold is None or choices else "greedy (the drafter has no answer lead)"
        return Drafted.of(llm.generate([prompt], max_tokens=max_tokens)[0], abstain_rule=greedy)
    rule = f"threshold {threshold:g}"
    opening = " " + split.shared
    gen = llm.generate([replace(prompt, prefill=prompt.prefill + opening)], max_tokens=max_tokens)[0]
    chose_abstain = _first_word(gen.text).lower() == split.abstain_word.lower() and bool(gen.token_logprobs)
    p = math.exp(gen.token_logprobs[0]) if chose_abstain else None
    if p is None or p > (threshold or 0.0):
        return Drafted.of(gen, opening=opening, abstain_prob=p, abstain_rule=rule)
    forced = " " + lead.strip()
    again = llm.generate([replace(prompt, prefill=prompt.prefill + forced)], max_tokens=max_tokens)[0]
    return Drafted.of(
        again,
        opening=forced,
        given_logprob=math.log(max(1.0 - p, 1e-6)),
        abstain_prob=p,
        answer_forced=True,
        abstain_rule=rule,
    )


def _first_word(text: str) -> str:
    m = re.match(r"\s*([^\W_]+)", text)
    return m.group(1) if m else ""
