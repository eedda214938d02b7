"""Checks around a tuning run: that training tokenises examples exactly as the llama.cpp backend does, and what a
(tuned) drafter writes for some examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from app.llm.protocol import LanguageModel
from app.tune.data import TuneExample, example_prompt
from graphs.drafting import Drafted, parse_reply, write_draft


class TokenMismatch(BaseModel):
    """The first example whose token ids differ between transformers and llama.cpp."""

    example_id: str
    position: int
    transformers: list[int]
    llama_cpp: list[int]


class TokenCheck(BaseModel):
    """Outcome of comparing the two tokenisations on a sample of examples."""

    examples: int
    tokens: int
    mismatches: int
    first: TokenMismatch | None = None


def compare_tokenisation(base: Path, examples: Sequence[TuneExample], *, threads: int = 2) -> TokenCheck:
    """Tokenise each example's prompt and target with the training tokenizer (transformers' GGUF tokenizer, as
    ``app.tune.train.PromptTokenizer``) and with the llama.cpp backend (``LlamaCppModel.prompt_ids`` and its
    tokenisation of the continuation), and count the examples that differ."""
    from app.llm.llamacpp import LlamaCppModel
    from app.tune.train import PromptTokenizer, load_tokenizer

    ptok = PromptTokenizer(load_tokenizer(base), base)
    llm = LlamaCppModel(base, n_ctx=2048, n_seq_max=1, n_threads=threads)
    try:
        mismatches, tokens, first = 0, 0, None
        for ex in examples:
            enc = ptok.encode_example(ex)
            prompt = example_prompt(ex)
            ours = enc.prompt + enc.target[:-1]
            theirs = llm.prompt_ids(prompt) + llm.tokenize(ex.target, add_special=False, parse_special=False)
            tokens += len(theirs)
            if ours != theirs:
                mismatches += 1
                if first is None:
                    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
                    pos = at if at is not None else min(len(ours), len(theirs))
                    first = TokenMismatch(
                        example_id=ex.id,
                        position=pos,
                        transformers=ours[pos : pos + 8],
                        llama_cpp=theirs[pos : pos + 8],
                    )
            end = llm.tokenize(llm.template.tail(prompt, []), add_special=False, parse_special=True)[:1]
            if end != enc.target[-1:]:
                mismatches += 1
        return TokenCheck(examples=len(examples), tokens=tokens, mismatches=mismatches, first=first)
    finally:
        llm.close()


class SampleDraft(BaseModel):
    """What the drafter wrote for one example."""

    example_id: str
    question: str
    expected_outcome: str
    expected_answer: str
    reply: str
    outcome: str
    answer: str
    follows_format: bool
    correct: bool
    abstain_prob: float | None = None
    """Under an abstention threshold: the drafter's P(abstention word) when it chose to abstain."""
    answer_forced: bool = False
    """Under an abstention threshold: it chose to abstain at or below it and was made to answer."""


def sample_drafts(
    llm: LanguageModel,
    examples: Sequence[TuneExample],
    *,
    max_tokens: int = 96,
    lead: str = "",
    threshold: float | None = None,
) -> list[SampleDraft]:
    """Draft each example's subset with ``llm`` (greedy; with ``threshold`` and the drafter's answer ``lead``, as the
    drafting step does under ``Context.abstain_threshold``: ``graphs.drafting.write_draft``, one example at a time)
    and read the replies back (``graphs.drafting.parse_reply``)."""
    from app.eval.metrics import contains_alias

    if threshold is None:
        gens = [Drafted.of(g) for g in llm.generate([example_prompt(ex) for ex in examples], max_tokens=max_tokens)]
    else:
        gens = [
            write_draft(
                llm, example_prompt(ex), max_tokens=max_tokens, lead=lead, threshold=threshold, choices=ex.choices
            )
            for ex in examples
        ]
    out: list[SampleDraft] = []
    for ex, gen in zip(examples, gens, strict=True):
        reply = parse_reply(gen.text, ex.choices)
        if ex.outcome == "abstain":
            correct = reply.outcome == "abstain"
        elif ex.choices:
            correct = reply.letter == ex.answer
        else:
            correct = reply.outcome == "answer" and contains_alias(reply.answer, [ex.answer])
        out.append(
            SampleDraft(
                example_id=ex.id,
                question=ex.question,
                expected_outcome=ex.outcome,
                expected_answer=ex.answer,
                reply=gen.text,
                outcome=reply.outcome,
                answer=reply.answer,
                follows_format=reply.outcome != "unparsed",
                correct=correct,
                abstain_prob=gen.abstain_prob,
                answer_forced=gen.answer_forced,
            )
        )
    return out


def balanced_sample(rows: Sequence[TuneExample], n: int) -> list[TuneExample]:
    """Up to ``n`` examples, taking sources and outcomes in turn (so that five show each kind), in file order."""
    groups: dict[tuple[str, str], list[TuneExample]] = {}
    for r in rows:
        groups.setdefault((r.source, r.outcome), []).append(r)
    keys = sorted(groups)
    out: list[TuneExample] = []
    while len(out) < n and any(groups[k] for k in keys):
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop(0))
    return out


def trained_questions(run: Path) -> set[str]:
    """The question ids of the examples a training run has trained on (its ``loss.jsonl``; empty if none)."""
    from app.tune.train import read_log

    return {i.split("#", 1)[0] for r in read_log(run / "loss.jsonl") for i in r.example_ids}
