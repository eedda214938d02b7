"""Drafting examples for drafter tuning, built from the shared training pool the way the graph drafts.

Each pool question (``../shared/train/pool.jsonl``, the shared evaluation format) brings 1-3 passages. To make
subsets like the ones the drafter sees at run time (some with the answer, some without), each selected question gets
distractor passages from other pool questions of the same source (nearest to the question by the project's
embedder, so they are on-topic-ish), up to 4-6 passages in all. The passages are embedded, clustered with
``graphs.clustering.kmeans`` into k = ``per_draft`` clusters and sampled into subsets with
``graphs.clustering.sample_subsets``, exactly as ``graphs.nodes.partition`` does. One example per chosen subset:

* short answers: when a subset passage contains a gold alias (normalised containment, ``app.eval.metrics``), the
  rationale is the sentence(s) holding it and the answer the alias; otherwise the fixed abstention
  (``graphs.drafting.abstention_reply``).
* multiple choice: never an abstention; the answer is the gold letter, the rationale the passage sentence that best
  overlaps the question and the gold choice (when the overlap is real), else a short sentence naming the choice
  (a capped share: such targets teach a letter without evidence).

Answer rationales open with a fixed lead (``DataConfig.answer_lead``, "The documents say:") and the abstention with
"The documents do not ...": the choice between answering and abstaining is then one token, and greedy decoding
follows its learned odds. Without it (the first adapter) the abstention's one fixed opening token outweighed the many
different openings of real rationales, and the tuned drafter abstained on nearly every draft.

Rationales are extracted (``extract``), written by a teacher model given the gold answer (``teacher``), or both
(``mixed``: the teacher only for the multiple-choice examples that no passage sentence supports); an example whose
rationale does not support the gold answer is dropped. Never reads ``eval/dev``: an input under such a path is
refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from app.embed.protocol import Embedder
from app.eval.dataset import EvalQuestion
from app.eval.metrics import normalize
from app.llm.protocol import ChatPrompt, LanguageModel
from graphs import prompting
from graphs.clustering import kmeans, sample_subsets
from graphs.drafting import ABSTAIN_ANSWER, ABSTAIN_RATIONALE, draft_prompt, render_reply
from graphs.question import with_choices

RationaleSource = Literal["extract", "teacher", "mixed"]
AbstainCapOf = Literal["short_answers", "all"]
Outcome = Literal["answer", "abstain"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "which",
        "what",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "do",
        "does",
        "did",
        "not",
        "no",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "has",
        "have",
        "had",
        "than",
        "then",
        "so",
        "such",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
        "i",
        "my",
        "me",
        "into",
        "out",
        "over",
        "under",
        "about",
        "after",
        "before",
        "between",
        "during",
        "most",
        "more",
        "less",
        "very",
        "also",
        "only",
        "other",
        "some",
        "any",
        "each",
        "all",
        "both",
        "one",
        "two",
    ]
)


class DataError(ValueError):
    """Bad input for the data builder (a missing pool, a forbidden path, bad options); the message is one line."""


class ExamplePassage(BaseModel):
    """A passage of an example's subset, as the drafter reads it."""

    title: str = ""
    text: str
    from_question: str = Field(description="Pool question id the passage came with (a distractor when not the own)")
    truncated: bool = Field(False, description="Cut to the builder's word limit for training")


class TuneExample(BaseModel):
    """One drafting example: the drafter's prompt inputs and the target reply after the ``Rationale:`` prefill."""

    id: str
    question_id: str
    source: str = Field(description="Pool part: popqa, nq, arcc, ...")
    task: str
    question: str = Field(description="The question as the graph passes it (multiple choice: with its choices)")
    choices: dict[str, str] | None = None
    passages: list[ExamplePassage]
    subset: list[int] = Field(description="Indices of the subset in the question's passage list (partition's order)")
    n_candidates: int = Field(description="Passages the subset was drawn from (own + distractors)")
    outcome: Outcome
    fallback: bool = Field(False, description="Multiple choice: the rationale only names the gold choice")
    rationale: str
    answer: str
    target: str = Field(description="graphs.drafting.render_reply(rationale, answer): what follows the prefill")


class DataConfig(BaseModel):
    """How examples are built (every field is recorded in the data card)."""

    seed: int = 0
    questions_per_source: int = Field(200, ge=1, description="Pool questions drawn per source (popqa, nq, arcc)")
    distractor_reservoir: int = Field(
        400, ge=1, description="Other questions per source whose passages may serve as distractors"
    )
    min_passages: int = Field(4, ge=1, description="Fewest passages per question after adding distractors")
    max_passages: int = Field(6, ge=1, description="Most passages per question after adding distractors")
    per_draft: int = Field(2, ge=1, description="k: clusters and passages per subset (the graph's per_draft)")
    n_drafts: int = Field(5, ge=1, description="m: subsets sampled per question (the graph's n_drafts)")
    max_subsets_per_question: int = Field(2, ge=1, description="Examples kept per question (1 or up to this many)")
    abstain_cap: float = Field(
        0.15, ge=0.0, le=1.0, description="Largest share of abstentions among the examples of ``abstain_cap_of``"
    )
    abstain_cap_of: AbstainCapOf = Field(
        "all",
        description="What the abstention cap is a share of: 'short_answers' (the examples that may abstain; "
        "multiple choice never does, so its examples do not dilute the cap; `specrag tune data`'s default) or "
        "'all' (every example: how the v2 and v3 data were built, where 456 multiple-choice examples let popqa "
        "reach 30 % abstentions; the default here, so that older data cards read back as they were built)",
    )
    mcq_fallback_cap: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Largest share of fallback rationales ('The correct choice is ...') among multiple-choice examples",
    )
    answer_lead: str = Field(
        "The documents say:",
        description="Opening of every extracted or taught answer rationale, so that answering or abstaining is one "
        "token's decision (the abstention opens 'The documents do not ...') and greedy decoding follows the learned "
        "odds instead of the most concentrated first token; empty: no lead",
    )
    max_passage_words: int = Field(110, ge=20, description="Passages are cut to this many words for training")
    max_rationale_words: int = Field(45, ge=8, description="Rationales are trimmed to this many words")
    rationale: RationaleSource = "extract"


class SourceCounts(BaseModel):
    """Counts for one pool source in the data card."""

    questions: int = 0
    examples: int = 0
    answer: int = 0
    abstain: int = 0
    dropped_unsupported: int = 0
    dropped_abstain_cap: int = 0
    dropped_fallback_cap: int = 0
    rationale_fallback: int = Field(0, description="MCQ: no real overlap, the rationale names the choice")


class DataCard(BaseModel):
    """What went into a training set, and what was left out."""

    pool: str
    pool_questions: int
    config: DataConfig
    teacher: str | None = Field(None, description="The teacher model (rationale=teacher or mixed)")
    embedder: str
    per_source: dict[str, SourceCounts]
    examples: int
    answer: int
    abstain: int
    truncated_passages: int
    filters: list[str]


class Rationaler(Protocol):
    """Writes the rationale of an answer example (None: no rationale that supports the gold answer)."""

    name: str

    def short(self, question: str, passages: Sequence[ExamplePassage], alias: str) -> str | None:
        """Rationale for a short answer ``alias`` that a subset passage contains."""
        ...

    def mcq(
        self, question: str, passages: Sequence[ExamplePassage], letter: str, choice: str, choices: dict[str, str]
    ) -> tuple[str, bool] | None:
        """Rationale for the gold choice, and whether it fell back to naming the choice."""
        ...


# ---------------------------------------------------------------------------------------------- input


def check_input_path(path: Path) -> None:
    """Refuse a path under an ``eval/dev`` directory (the dev set must never be trained or tuned on).

    Raises:
        DataError: the path lies under ``eval/dev``.
    """
    parts = [p.lower() for p in path.expanduser().resolve().parts]
    if any(a == "eval" and b == "dev" for a, b in itertools.pairwise(parts)):
        raise DataError(f"refusing {path}: it is under eval/dev, which must never be used for training")


def load_pool(path: Path) -> list[EvalQuestion]:
    """The pool questions (shared evaluation format), in file order.

    Raises:
        DataError: forbidden path, missing file, a bad line.
    """
    check_input_path(path)
    if not path.is_file():
        raise DataError(f"training pool not found: {path}")
    out: list[EvalQuestion] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(EvalQuestion.model_validate(json.loads(line)))
            except ValueError as exc:
                first = str(exc).splitlines()[0]
                raise DataError(f"{path}:{number}: not a pool question ({first})") from None
    if not out:
        raise DataError(f"{path} holds no questions")
    return out


def source_of(question: EvalQuestion) -> str:
    """The pool part a question comes from (its id prefix: popqa, nq, arcc)."""
    return question.id.split("-", 1)[0]


# ---------------------------------------------------------------------------------------------- text helpers


def sentences(text: str) -> list[str]:
    """Sentences of a passage (a simple splitter: end punctuation followed by a capital or digit)."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def found_alias(text: str, answers: Sequence[str]) -> str | None:
    """The first gold alias (as written) whose normalised form the normalised text contains as whole words.

    Stricter than the evaluation's substring rule (``app.eval.metrics.contains_alias``), so that a short alias
    ('ro') does not make a target out of a passage that only contains it inside a word ('river')."""
    norm = f" {normalize(text)} "
    for alias in answers:
        a = normalize(alias)
        if a and f" {a} " in norm:
            return alias
    return None


def has_alias(text: str, alias: str) -> bool:
    """Whether ``text`` contains ``alias`` (normalised, as whole words)."""
    return found_alias(text, [alias]) is not None


def _window(words: list[str], limit: int, keep: Callable[[str], bool]) -> list[str]:
    """At most ``limit`` words of ``words``: the first window for which ``keep`` holds (else the first words)."""
    if len(words) <= limit:
        return words
    for start in range(0, len(words) - limit + 1):
        if keep(" ".join(words[start : start + limit])):
            return words[start : start + limit]
    return words[:limit]


def focus_passage(text: str, limit: int, keep: Callable[[str], bool] | None = None) -> tuple[str, bool]:
    """Cut a passage to ``limit`` words at sentence boundaries where possible, keeping text for which ``keep``
    holds (the gold alias) inside; returns the text and whether it was cut."""
    words = text.split()
    if len(words) <= limit:
        return " ".join(words), False
    sents = sentences(text)
    start = 0
    if keep is not None:
        start = next((i for i, s in enumerate(sents) if keep(s)), 0)
        start = max(0, start - 1)
    chosen: list[str] = []
    n = 0
    for s in sents[start:]:
        w = len(s.split())
        if n + w > limit:
            break
        chosen.append(s)
        n += w
    cut = " ".join(chosen)
    if not chosen or (keep is not None and keep(text) and not keep(cut)):
        cut = " ".join(_window(words, limit, keep or (lambda _s: True)))
    return cut, True


def trim_words(text: str, limit: int, keep: Callable[[str], bool] | None = None) -> str:
    """``text`` cut to at most ``limit`` words, keeping a window for which ``keep`` holds."""
    words = text.split()
    if len(words) <= limit:
        return " ".join(words)
    return " ".join(_window(words, limit, keep or (lambda _s: True))).rstrip(",;:") + " ..."


def content_words(text: str) -> set[str]:
    """Normalised words that carry meaning (no stop words, no single letters)."""
    return {w for w in normalize(text).split() if len(w) > 2 and w not in _STOP}


# ---------------------------------------------------------------------------------------------- rationales


class ExtractRationaler:
    """Rationales taken from the passages' own sentences.

    Args:
        max_words: Rationales are trimmed to this many words (the alias is kept inside).
    """

    name = "extract"

    def __init__(self, max_words: int = 45) -> None:
        self.max_words = max_words

    def short(self, question: str, passages: Sequence[ExamplePassage], alias: str) -> str | None:
        """The (at most two) subset sentences that contain the alias, trimmed."""
        hits = [s for p in passages for s in sentences(p.text) if has_alias(s, alias)]
        if not hits:
            return None
        chosen = hits[:2] if len(" ".join(hits[:2]).split()) <= self.max_words else hits[:1]
        return trim_words(" ".join(chosen), self.max_words, lambda t: has_alias(t, alias))

    def mcq(
        self, question: str, passages: Sequence[ExamplePassage], letter: str, choice: str, choices: dict[str, str]
    ) -> tuple[str, bool] | None:
        """The sentence that best overlaps question and gold choice, when it names the gold choice more than any
        other; else a sentence naming the choice (the fallback)."""
        gold = content_words(choice)
        asked = content_words(question)
        others = [content_words(v) for k, v in choices.items() if k != letter]
        best: tuple[float, str] | None = None
        for p in passages:
            for s in sentences(p.text):
                words = content_words(s)
                g = len(words & gold)
                real = normalize(choice) in normalize(s) or (
                    gold and g >= max(1, math.ceil(len(gold) / 2)) and all(g > len(words & o) for o in others)
                )
                if not real:
                    continue
                score = 2.0 * g + len(words & asked)
                if best is None or score > best[0]:
                    best = (score, s)
        if best is not None:
            return trim_words(best[1], self.max_words), False
        text = " ".join(choice.split()).rstrip(".")
        return f"The correct choice is {letter}: {text}.", True


def _read_cache(path: Path) -> dict[str, str]:
    """A teacher cache's replies by key (a missing file: none). A torn last line, from an interrupted build, is cut
    off the file, as ``app.eval.runner.load_records`` does, so that the next reply starts a line of its own."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]
    if len(whole) < len(raw):
        with path.open("r+b") as f:
            f.truncate(len(whole))
    replies: dict[str, str] = {}
    for line in whole.decode("utf-8").splitlines():
        try:
            row = json.loads(line)
            replies[str(row["key"])] = str(row["reply"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return replies


_LETTER_OPENING = re.compile(
    r"^\s*the (?:correct |right )?(?:choice|answer|option)(?: is)?:?\s*\(?(?-i:[A-E])(?:\)|[.:,]|\s)\s*", re.I
)
"""'The correct choice is C) ', 'The correct choice D) ' and their variants, at the start of a teacher's
multiple-choice rationale (a capital letter only: 'The answer is a rock' keeps its words)."""


class TeacherRationaler:
    """Rationales written by a teacher model that is given the gold answer (``prompts/tune_teacher.md``; for
    multiple choice ``prompts/tune_teacher_mcq.md``, which may reason from general knowledge as the drafter may).

    The teacher's replies can be kept in a cache file (JSON lines: the sha256 of teacher, prompt and budget, and the
    reply), appended after every reply, so that an interrupted build resumes where it stopped and a rebuild with the
    same cache (e.g. committed, or copied from another machine) asks the teacher nothing again.

    Args:
        llm: The teacher (any backend of the protocol: the verifier in-process, or a stronger server model).
        max_words: Rationales are trimmed to this many words.
        max_tokens: Generation budget per rationale.
        cache: The cache file (None: no cache). Created when missing.
    """

    def __init__(
        self, llm: LanguageModel, max_words: int = 45, max_tokens: int = 96, cache: Path | None = None
    ) -> None:
        self.llm = llm
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.name = f"teacher ({llm.name})"
        self.cache = cache
        self.replies: dict[str, str] = _read_cache(cache) if cache is not None else {}
        self.asked = 0
        """Replies generated by this instance (not found in the cache)."""

    def _ask(
        self, question: str, passages: Sequence[ExamplePassage], answer: str, template: str = "tune_teacher"
    ) -> str:
        from graphs.drafting import format_passages

        prompt = prompting.load(template).chat(question=question, passages=format_passages(passages), answer=answer)
        key = hashlib.sha256(
            json.dumps(
                [self.llm.name, [[m.role, m.content] for m in prompt.messages], prompt.prefill, self.max_tokens]
            ).encode("utf-8")
        ).hexdigest()
        text = self.replies.get(key)
        if text is None:
            text = self.llm.generate([prompt], max_tokens=self.max_tokens, stop=("\n\n",))[0].text
            self.replies[key] = text
            self.asked += 1
            if self.cache is not None:
                with self.cache.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "reply": text}) + "\n")
        kept = sentences(text.replace("\n", " "))[:2]
        return trim_words(" ".join(kept), self.max_words)

    def short(self, question: str, passages: Sequence[ExamplePassage], alias: str) -> str | None:
        """The teacher's rationale, kept only when it contains the alias."""
        text = self._ask(question, passages, alias)
        return text if text and has_alias(text, alias) else None

    def mcq(
        self, question: str, passages: Sequence[ExamplePassage], letter: str, choice: str, choices: dict[str, str]
    ) -> tuple[str, bool] | None:
        """The teacher's rationale, kept only when it names the gold choice's text; an opening that names the letter
        ('The correct choice is C) ...') loses the letter, so that the drafter is not taught to commit to a letter
        before its reasons (the position bias of docs/eval/pool-arc-rotation)."""
        text = _LETTER_OPENING.sub(
            "", self._ask(question, passages, f"{letter}) {choice}", template="tune_teacher_mcq")
        )
        text = text[:1].upper() + text[1:]
        gold = content_words(choice)
        ok = bool(text) and (normalize(choice) in normalize(text) or bool(gold and gold <= content_words(text)))
        return (text, False) if ok else None


class MixedRationaler:
    """Extracted rationales where the passages hold one, the teacher's for multiple choice where they do not.

    Extraction finds a supporting sentence for most short answers but for few multiple-choice questions (ARC's
    passages rarely state the choice's text), whose examples then fall back to naming the choice and are capped.
    Here only those fallbacks are sent to the teacher, so the teacher's cost is paid where extraction fails; a
    teacher rationale that does not name the gold choice keeps the fallback.

    Args:
        extract: The extractor (tried first, for every example).
        teacher: Asked for the multiple-choice examples whose extraction fell back.
    """

    def __init__(self, extract: ExtractRationaler, teacher: TeacherRationaler) -> None:
        self.extract = extract
        self.teacher = teacher
        self.name = f"mixed: extract, {teacher.name} for multiple choice without a supporting sentence"

    def short(self, question: str, passages: Sequence[ExamplePassage], alias: str) -> str | None:
        """The extracted rationale (short answers never go to the teacher)."""
        return self.extract.short(question, passages, alias)

    def mcq(
        self, question: str, passages: Sequence[ExamplePassage], letter: str, choice: str, choices: dict[str, str]
    ) -> tuple[str, bool] | None:
        """The extracted sentence; where there is none, the teacher's rationale; else the fallback."""
        extracted = self.extract.mcq(question, passages, letter, choice, choices)
        if extracted is not None and not extracted[1]:
            return extracted
        return self.teacher.mcq(question, passages, letter, choice, choices) or extracted


# ---------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Candidate:
    """A selected pool question with its passages (own + distractors) and their vectors, before subsets."""

    question: EvalQuestion
    passages: list[ExamplePassage]
    vectors: npt.NDArray[np.float64]


def _keep_for(question: EvalQuestion) -> Callable[[str], bool] | None:
    if question.is_mcq:
        gold = question.choices.get(question.answers[0], "") if question.choices else ""
        words = content_words(gold)
        return (lambda s: bool(words & content_words(s))) if words else None
    return lambda s: found_alias(s, question.answers) is not None


def select_questions(pool: Sequence[EvalQuestion], config: DataConfig) -> dict[str, tuple[list[int], list[int]]]:
    """Per source: indices of the selected questions and of the distractor reservoir (disjoint, seeded)."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(pool):
        by_source[source_of(q)].append(i)
    rng = np.random.default_rng(config.seed)
    out: dict[str, tuple[list[int], list[int]]] = {}
    for source in sorted(by_source):
        order = [by_source[source][j] for j in rng.permutation(len(by_source[source]))]
        n = config.questions_per_source
        out[source] = (order[:n], order[n : n + config.distractor_reservoir])
    return out


def _candidates(
    pool: Sequence[EvalQuestion], config: DataConfig, embedder: Embedder, progress: Callable[[str], None]
) -> list[_Candidate]:
    """Selected questions with distractors added (nearest reservoir passages to the question, same source)."""
    rng = np.random.default_rng(config.seed + 1)
    out: list[_Candidate] = []
    for source, (chosen, reservoir) in select_questions(pool, config).items():
        progress(f"{source}: embedding {len(chosen)} questions and the distractor reservoir")
        res_passages: list[ExamplePassage] = []
        for i in reservoir:
            q = pool[i]
            for p in q.passages:
                text, cut = focus_passage(p.text, config.max_passage_words)
                res_passages.append(ExamplePassage(title=p.title, text=text, from_question=q.id, truncated=cut))
        res_vecs = embedder.embed([p.text for p in res_passages]) if res_passages else np.zeros((0, embedder.dim))
        q_vecs = embedder.embed([pool[i].question for i in chosen])
        owns: list[list[ExamplePassage]] = []
        for qi in chosen:
            q = pool[qi]
            keep = _keep_for(q)
            owns.append([])
            for p in q.passages:
                text, cut = focus_passage(p.text, config.max_passage_words, keep)
                owns[-1].append(ExamplePassage(title=p.title, text=text, from_question=q.id, truncated=cut))
        flat = [p.text for own in owns for p in own]
        own_vecs = embedder.embed(flat) if flat else np.zeros((0, embedder.dim))
        at = 0
        for qi, qv, own in zip(chosen, q_vecs, owns, strict=True):
            q = pool[qi]
            vecs = [own_vecs[at + j] for j in range(len(own))]
            at += len(own)
            want = int(rng.integers(config.min_passages, config.max_passages + 1))
            need = max(0, want - len(own))
            seen = {normalize(p.text) for p in own}
            extra: list[ExamplePassage] = []
            if need and len(res_passages):
                for j in np.argsort(-(res_vecs @ qv), kind="stable"):
                    cand = res_passages[int(j)]
                    if normalize(cand.text) in seen:
                        continue
                    seen.add(normalize(cand.text))
                    extra.append(cand)
                    vecs.append(res_vecs[int(j)])
                    if len(extra) >= need:
                        break
            mixed = own + extra
            order = [int(j) for j in rng.permutation(len(mixed))]
            out.append(
                _Candidate(
                    question=q,
                    passages=[mixed[j] for j in order],
                    vectors=np.asarray([vecs[j] for j in order], dtype=np.float64),
                )
            )
    return out


def lead(rationale: str, opening: str) -> str:
    """``rationale`` opened with ``opening`` (unless it already opens so, or ``opening`` is empty)."""
    if not opening or rationale.lower().startswith(opening.lower().rstrip(":")):
        return rationale
    return f"{opening} {rationale}"


def _example(
    cand: _Candidate, subset: Sequence[int], n: int, rationaler: Rationaler, counts: SourceCounts, opening: str
) -> TuneExample | None:
    q = cand.question
    passages = [cand.passages[i] for i in subset]
    choices = q.choices if q.is_mcq else None
    question = with_choices(q.question, choices)
    base = {
        "id": f"{q.id}#{n}",
        "question_id": q.id,
        "source": source_of(q),
        "task": q.task,
        "question": question,
        "choices": choices,
        "passages": passages,
        "subset": list(subset),
        "n_candidates": len(cand.passages),
    }
    if choices:
        letter = q.answers[0]
        got = rationaler.mcq(q.question, passages, letter, choices.get(letter, letter), choices)
        if got is None:
            counts.dropped_unsupported += 1
            return None
        rationale, fallback = got
        if not fallback:
            rationale = lead(rationale, opening)
        return TuneExample(
            **base,
            outcome="answer",
            fallback=fallback,
            rationale=rationale,
            answer=letter,
            target=render_reply(rationale, letter),
        )
    alias = found_alias(" ".join(p.text for p in passages), q.answers)
    if alias is None:
        return TuneExample(
            **base,
            outcome="abstain",
            rationale=ABSTAIN_RATIONALE,
            answer=ABSTAIN_ANSWER,
            target=render_reply(ABSTAIN_RATIONALE, ABSTAIN_ANSWER),
        )
    written = rationaler.short(q.question, passages, alias)
    if written is None or not has_alias(written, alias):
        counts.dropped_unsupported += 1
        return None
    written = lead(written, opening)
    target = render_reply(written, alias)
    return TuneExample(**base, outcome="answer", rationale=written, answer=alias, target=target)


def _outcome_of(cand: _Candidate, subset: Sequence[int]) -> Outcome:
    q = cand.question
    if q.is_mcq:
        return "answer"
    return "answer" if found_alias(" ".join(cand.passages[i].text for i in subset), q.answers) else "abstain"


def build_examples(
    pool: Sequence[EvalQuestion],
    embedder: Embedder,
    config: DataConfig,
    *,
    rationaler: Rationaler | None = None,
    pool_path: str = "",
    progress: Callable[[str], None] = lambda _m: None,
    step: Callable[[], None] = lambda: None,
) -> tuple[list[TuneExample], DataCard]:
    """Drafting examples and their data card (deterministic for ``config.seed`` and a deterministic embedder).

    Args:
        pool: Pool questions (``load_pool``).
        embedder: Embeds passages for clustering and questions for choosing distractors.
        config: How many, how long, which rationales.
        rationaler: Writes rationales (default: ``ExtractRationaler``).
        pool_path: Recorded in the card.
        progress: Receives one-line stage messages.
        step: Called once per question processed (a progress bar).

    Raises:
        DataError: inconsistent options.
    """
    if config.min_passages > config.max_passages:
        raise DataError("min_passages must not exceed max_passages")
    writer = rationaler or ExtractRationaler(config.max_rationale_words)
    cands = _candidates(pool, config, embedder, progress)
    progress(f"clustering and drafting targets for {len(cands)} questions")
    per_source: dict[str, SourceCounts] = defaultdict(SourceCounts)
    rng = np.random.default_rng(config.seed + 2)
    examples: list[TuneExample] = []
    for qn, cand in enumerate(cands):
        counts = per_source[source_of(cand.question)]
        counts.questions += 1
        seed = config.seed + qn
        labels = kmeans(cand.vectors, config.per_draft, seed=seed).tolist()
        subsets = sample_subsets(labels, config.n_drafts, seed=seed)
        answer_subsets = [s for s in subsets if _outcome_of(cand, s) == "answer"]
        abstain_subsets = [s for s in subsets if _outcome_of(cand, s) == "abstain"]
        n_pick = int(rng.integers(1, config.max_subsets_per_question + 1))
        picked = (answer_subsets[:1] + abstain_subsets[:1] + answer_subsets[1:] + abstain_subsets[1:])[:n_pick]
        for j, subset in enumerate(picked):
            ex = _example(cand, subset, j, writer, counts, config.answer_lead)
            if ex is not None:
                examples.append(ex)
        step()
    examples = _cap_fallbacks(examples, config, rng, per_source)
    examples = _cap_abstentions(examples, config, rng, per_source)
    order = rng.permutation(len(examples))
    examples = [examples[int(i)] for i in order]
    for ex in examples:
        c = per_source[ex.source]
        c.examples += 1
        c.answer += int(ex.outcome == "answer")
        c.abstain += int(ex.outcome == "abstain")
        c.rationale_fallback += int(ex.fallback)
    card = DataCard(
        pool=pool_path,
        pool_questions=len(pool),
        config=config,
        teacher=writer.name if config.rationale != "extract" else None,
        embedder=embedder.name,
        per_source=dict(sorted(per_source.items())),
        examples=len(examples),
        answer=sum(ex.outcome == "answer" for ex in examples),
        abstain=sum(ex.outcome == "abstain" for ex in examples),
        truncated_passages=sum(p.truncated for ex in examples for p in ex.passages),
        filters=[
            "short answers: a subset holds the answer when a passage contains a gold alias as whole words "
            "(normalised as app.eval.metrics); the rationale must contain that alias, else the example is dropped",
            "multiple choice: never an abstention; an extracted rationale must name the gold choice more than any "
            "other, else the rationale names the choice (counted as rationale_fallback, capped at "
            f"{config.mcq_fallback_cap:.0%} of the multiple-choice examples)",
            f"answer rationales open with {config.answer_lead!r} (abstentions with {ABSTAIN_RATIONALE!r})"
            if config.answer_lead
            else "answer rationales have no fixed opening",
            f"abstentions capped at {config.abstain_cap:.0%} of "
            + ("the examples" if config.abstain_cap_of == "all" else "the short-answer examples")
            + " (random ones dropped)",
            f"passages cut to {config.max_passage_words} words for training (the alias kept inside)",
            "input paths under eval/dev are refused; the pool is disjoint from the dev set (pool README)",
        ],
    )
    return examples, card


def _cap_share(
    examples: list[TuneExample], capped: Callable[[TuneExample], bool], rest: int, cap: float, rng: np.random.Generator
) -> tuple[list[TuneExample], list[TuneExample]]:
    """Drop random examples for which ``capped`` holds until they are at most ``cap`` of themselves plus ``rest``
    others; returns (kept, dropped)."""
    hit = [i for i, ex in enumerate(examples) if capped(ex)]
    allowed = len(hit) if cap >= 1.0 else min(len(hit), int(cap * rest / (1.0 - cap)))
    if allowed >= len(hit):
        return examples, []
    keep = {hit[int(i)] for i in rng.permutation(len(hit))[:allowed]}
    kept: list[TuneExample] = []
    dropped: list[TuneExample] = []
    for i, ex in enumerate(examples):
        (dropped if capped(ex) and i not in keep else kept).append(ex)
    return kept, dropped


def _cap_abstentions(
    examples: list[TuneExample], config: DataConfig, rng: np.random.Generator, per_source: dict[str, SourceCounts]
) -> list[TuneExample]:
    """Drop random abstentions until they are at most ``abstain_cap`` of the examples (``abstain_cap_of='all'``)
    or of the short-answer examples (``'short_answers'``, `specrag tune data`'s default)."""
    counted = examples if config.abstain_cap_of == "all" else [ex for ex in examples if ex.task != "mcq"]
    answers = sum(ex.outcome != "abstain" for ex in counted)
    kept, dropped = _cap_share(examples, lambda ex: ex.outcome == "abstain", answers, config.abstain_cap, rng)
    for ex in dropped:
        per_source[ex.source].dropped_abstain_cap += 1
    return kept


def _cap_fallbacks(
    examples: list[TuneExample], config: DataConfig, rng: np.random.Generator, per_source: dict[str, SourceCounts]
) -> list[TuneExample]:
    """Drop random fallback-rationale MCQ examples until they are at most ``mcq_fallback_cap`` of the MCQ ones."""
    real = sum(ex.task == "mcq" and not ex.fallback for ex in examples)
    kept, dropped = _cap_share(examples, lambda ex: ex.fallback, real, config.mcq_fallback_cap, rng)
    for ex in dropped:
        per_source[ex.source].dropped_fallback_cap += 1
    return kept


# ---------------------------------------------------------------------------------------------- output


def example_prompt(example: TuneExample) -> ChatPrompt:
    """The drafter's ChatPrompt for an example (``graphs.drafting.draft_prompt``)."""
    return draft_prompt(example.question, example.passages, example.choices)


def write_examples(examples: Iterable[TuneExample], card: DataCard, out_dir: Path) -> Path:
    """Write ``examples.jsonl``, ``data_card.json`` and ``data_card.md`` into ``out_dir``; returns the JSONL."""
    check_input_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "examples.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(ex.model_dump_json() + "\n")
    (out_dir / "data_card.json").write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out_dir / "data_card.md").write_text(card_markdown(card), encoding="utf-8")
    return path


def read_examples(path: Path) -> list[TuneExample]:
    """Examples written by ``write_examples``.

    Raises:
        DataError: forbidden path, missing file, a bad line.
    """
    check_input_path(path)
    if not path.is_file():
        raise DataError(f"examples not found: {path} (build them with `specrag tune data`)")
    out: list[TuneExample] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(TuneExample.model_validate_json(line))
                except ValueError as exc:
                    raise DataError(f"{path}:{number}: not a tuning example ({str(exc).splitlines()[0]})") from None
    if not out:
        raise DataError(f"{path} holds no examples")
    return out


def card_markdown(card: DataCard) -> str:
    """The data card as Markdown."""
    c = card.config
    lines = [
        "# Drafter tuning data card",
        "",
        f"- Pool: `{card.pool}` ({card.pool_questions} questions; never `eval/dev`)",
        f"- Seed: {c.seed}; {c.questions_per_source} questions per source; distractors from "
        f"{c.distractor_reservoir} other questions of the same source, nearest to the question by `{card.embedder}`",
        f"- Passages per question: {c.min_passages}-{c.max_passages} (own + distractors), cut to "
        f"{c.max_passage_words} words; subsets: k-means k={c.per_draft}, `sample_subsets` m={c.n_drafts} "
        f"(as `graphs/nodes/partition.py`), up to {c.max_subsets_per_question} kept per question",
        f"- Rationales: {c.rationale}"
        + (f" ({card.teacher})" if card.teacher else "")
        + f", ≤ {c.max_rationale_words} words",
        f"- Examples: {card.examples} ({card.answer} answers, {card.abstain} abstentions); "
        f"{card.truncated_passages} passages cut",
        "",
        "| source | questions | examples | answer | abstain | dropped (unsupported) | dropped (abstain cap) "
        "| MCQ fallback rationale | dropped (fallback cap) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for source, s in card.per_source.items():
        lines.append(
            f"| {source} | {s.questions} | {s.examples} | {s.answer} | {s.abstain} | {s.dropped_unsupported} "
            f"| {s.dropped_abstain_cap} | {s.rationale_fallback} | {s.dropped_fallback_cap} |"
        )
    lines += ["", "Filters:", *[f"- {f}" for f in card.filters], ""]
    return "\n".join(lines)


def outcome_counts(examples: Iterable[TuneExample]) -> Counter[tuple[str, str]]:
    """(source, outcome) -> count."""
    return Counter((ex.source, ex.outcome) for ex in examples)
