"""Benchmark the llama.cpp backend: batched vs sequential drafting, scoring with vs without prefix cache.

Run with the project venv::

    .venv/bin/python bench/bench_llm.py [--task multihop_qa] [--question 0] [--drafts 5] [--max-tokens 160]
        [--threads N] [--repeat 2]

The drafter prompts are the product's, built as a run builds them: one real dev question
(``<shared>/eval/dev/questions.jsonl``, setting ``SPECRAG_SHARED_DIR``; the --question-th of --task) with its
passages as the retrieved top-n (chunked as ``specrag ingest`` chunks them, embedded with the configured
embedder), partitioned by the product's k-means and subset sampling (``graphs.clustering``, the ``partition``
node's seed for round 0), one prompt per subset from ``graphs.drafting.draft_prompt``. The drafts therefore share
only the instructions and the question (the prompt's shared token prefix is printed); each reads its own passages.
The verifier scores the drafts as ``verify`` builds its requests (abstentions are not verified).

Uses the default drafter and verifier from the settings (packaged models, assembled on first use).
Run it on an otherwise idle machine: anything else on the CPU changes the numbers a lot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from app.embed.factory import get_embedder
from app.llm.llamacpp import LlamaCppModel
from app.llm.protocol import ChatPrompt, Generation, Message, ScoreRequest, ScoreResult
from app.models import resolve_model
from app.settings import LLMSettings, get_settings
from app.store.chunking import chunk_document
from app.store.loaders import Document
from graphs.clustering import kmeans, sample_subsets
from graphs.context import Context
from graphs.drafting import draft_prompt, format_passages, parse_reply
from graphs.question import with_choices
from graphs.state import Passage
from graphs.verification import score_requests

T = TypeVar("T")


@dataclass
class Row:
    """One line of the results table."""

    label: str
    seconds: float
    tokens: int
    unit: str

    def render(self) -> str:
        rate = self.tokens / self.seconds if self.seconds > 0 else float("nan")
        return f"| {self.label:48s} | {self.seconds:8.2f} | {self.tokens:7d} | {rate:8.1f} {self.unit:9s} |"


REPEAT = 2  # each measurement is repeated (interleaved) and the fastest kept: the CPU is shared


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _best_of(fns: Sequence[Callable[[], T]], repeat: int) -> list[tuple[T, float]]:
    """Run the functions in turn ``repeat`` times; keep each one's last output and fastest time."""
    best: list[tuple[T, float] | None] = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            out, seconds = _timed(fn)
            prev = best[i]
            best[i] = (out, seconds if prev is None else min(seconds, prev[1]))
    return [b for b in best if b is not None]


def _load(settings: LLMSettings, threads: int, n_seq_max: int) -> LlamaCppModel:
    path = resolve_model(settings.model, get_settings().model_cache)
    return LlamaCppModel(path, n_ctx=settings.n_ctx, n_seq_max=n_seq_max, n_batch=settings.n_batch, n_threads=threads)


@dataclass(frozen=True)
class DraftCase:
    """One dev question as the drafter sees it: the question text, its choices, the retrieved passages and the
    subsets the product's partition forms over them."""

    qid: str
    question: str
    choices: dict[str, str]
    passages: list[Passage]
    subsets: list[list[int]]

    def prompts(self) -> list[ChatPrompt]:
        """One drafter prompt per subset, as the ``draft`` node builds it."""
        return [draft_prompt(self.question, [self.passages[i] for i in s], self.choices) for s in self.subsets]


def dev_question(task: str, index: int) -> dict[str, Any]:
    """The ``index``-th question of ``task`` in the shared dev questions (file order)."""
    path = get_settings().dev_dir / "questions.jsonl"
    if not path.is_file():
        sys.exit(f"no dev questions at {path} (set SPECRAG_SHARED_DIR)")
    with open(path, encoding="utf-8") as f:
        questions = [q for q in map(json.loads, f) if q["task"] == task]
    if not 0 <= index < len(questions):
        sys.exit(f"--question {index}: {task} has {len(questions)} dev questions")
    return questions[index]


def draft_case(task: str, index: int, n_drafts: int) -> DraftCase:
    """The question, its first top-n chunks (the dev file's passages in its order, chunked as ``specrag ingest``
    does and embedded with the configured embedder) and the partition's subsets (k-means into k = per_draft
    clusters, then ``sample_subsets``, both seeded as the ``partition`` node seeds round 0)."""
    record = dev_question(task, index)
    context = Context(n_drafts=n_drafts)
    chunks = [
        chunk
        for j, p in enumerate(record["passages"])
        for chunk in chunk_document(
            Document(doc_id=f"{record['id']}-{j}", title=str(p.get("title") or ""), text=p["text"], source="dev")
        )
    ][: context.top_n]
    vectors = get_embedder(get_settings().embedder).embed([c.text for c in chunks])
    passages = [
        Passage(id=c.id, doc_id=c.doc_id, title=c.title, text=c.text, score=0.0, round=0, vector=v.tolist())
        for c, v in zip(chunks, vectors, strict=True)
    ]
    seed = context.seed  # the partition node's seed, context.seed + 1000 * round, for round 0
    labels = kmeans(np.asarray([p.vector for p in passages], dtype=np.float64), context.per_draft, seed=seed)
    subsets = sample_subsets(labels.tolist(), context.n_drafts, seed=seed)
    choices = dict(record.get("choices") or {})
    return DraftCase(
        qid=str(record["id"]),
        question=with_choices(str(record["question"]).strip(), choices),
        choices=choices,
        passages=passages,
        subsets=subsets,
    )


def _shared_prefix(ids: Sequence[Sequence[int]]) -> int:
    """Tokens at the start that every prompt shares."""
    n = min(len(x) for x in ids)
    for i in range(n):
        if any(x[i] != ids[0][i] for x in ids[1:]):
            return i
    return n


def bench_drafter(
    case: DraftCase, max_tokens: int, threads: int, repeat: int = REPEAT
) -> tuple[list[Row], list[Generation], float]:
    """Batched vs sequential generation on the same prompts; returns rows, drafts and the speed-up."""
    settings = get_settings().drafter
    prompts = case.prompts()
    n = len(prompts)
    model = _load(settings, threads, max(settings.n_seq_max, n))
    try:
        model.generate(prompts[:1], max_tokens=4)  # warm-up
        ids = [model.prompt_ids(p) for p in prompts]
        n_prompt = sum(len(x) for x in ids)
        shared = _shared_prefix(ids) if n > 1 else 0
        sys.stdout.write(
            f"drafter: {case.qid}, {len(case.passages)} passages, subsets {case.subsets}; prompts share their first "
            f"{shared} tokens (instructions and question) of {n_prompt / n:.0f} on average\n"
        )
        (batched, t_batched), (sequential, t_seq) = _best_of(
            [
                lambda: model.generate(prompts, max_tokens=max_tokens),
                lambda: model.generate_sequential(prompts, max_tokens=max_tokens),
            ],
            repeat,
        )
        same = sum(b.text == s.text for b, s in zip(batched, sequential, strict=True))
        gen_tokens = sum(g.n_tokens for g in batched)
        rows = [
            Row(f"drafter {model.name[:22]}: batched x{n}", t_batched, gen_tokens, "gen tok/s"),
            Row(f"drafter {model.name[:22]}: sequential x{n}", t_seq, gen_tokens, "gen tok/s"),
            Row("drafter: prompt tokens per run", t_batched, n_prompt, "(info)"),
        ]
        sys.stdout.write(f"drafter: {same}/{n} drafts identical batched vs sequential\n")
        return rows, batched, t_seq / t_batched
    finally:
        model.close()


def _score_requests(question: str, drafts: Sequence[str], choices: dict[str, str], context: str) -> list[ScoreRequest]:
    """The product's verifier requests (``graphs.verification``, as ``verify`` builds them, abstentions left out);
    ``context`` optionally puts passages in the prefix (not the product: the verifier reads no passages)."""
    replies = [r for r in (parse_reply(d, choices) for d in drafts) if r.outcome != "abstain"]
    requests = score_requests(question, [(r.answer, r.rationale) for r in replies])
    if not context:
        return requests
    out = []
    for req in requests:
        user = Message(role="user", content=context + req.prompt.messages[-1].content)
        prompt = ChatPrompt(messages=(*req.prompt.messages[:-1], user), prefill=req.prompt.prefill)
        out.append(dataclasses.replace(req, prompt=prompt))
    return out


def _score_pass(model: LlamaCppModel, requests: Sequence[ScoreRequest], cache: bool) -> list[ScoreResult]:
    model.prefix_cache = cache
    model.reset_prefix_cache()
    return model.score(requests)


def bench_verifier(
    case: DraftCase, drafts: Sequence[str], threads: int, repeat: int = REPEAT
) -> tuple[list[Row], dict[str, float]]:
    """Scoring the drafts (ρ_sc + ρ_sr in one pass) with and without the prefix cache."""
    settings = get_settings().verifier
    rows: list[Row] = []
    ratios: dict[str, float] = {}
    passages = format_passages([case.passages[i] for i in case.subsets[0]]) + "\n\n"
    if not _score_requests(case.question, drafts, case.choices, ""):
        sys.stdout.write("verifier: every draft abstained, nothing to score (try another --question)\n")
        return rows, ratios
    model = _load(settings, threads, 1)
    try:
        model.score(_score_requests("warm-up", ["x\nAnswer: y"], {}, ""))
        with_passages = f"question + {len(case.subsets[0])} passages"
        for label, context in (("question only", ""), (with_passages, passages)):
            requests = _score_requests(case.question, drafts, case.choices, context)
            (cold, t_cold), (warm, t_warm) = _best_of(
                [
                    lambda r=requests: _score_pass(model, r, cache=False),  # type: ignore[misc]
                    lambda r=requests: _score_pass(model, r, cache=True),  # type: ignore[misc]
                ],
                repeat,
            )
            max_diff = max(abs(a.logprob - b.logprob) for a, b in zip(cold, warm, strict=True))
            n_tokens = sum(r.prompt_tokens for r in cold)
            cached = sum(r.cached_tokens for r in warm)
            rows.append(Row(f"verifier, {label}: no prefix cache", t_cold, n_tokens, "tok/s"))
            rows.append(Row(f"verifier, {label}: prefix cache", t_warm, n_tokens, "tok/s"))
            sys.stdout.write(
                f"verifier ({label}): {len(requests)} drafts scored, {cached}/{n_tokens} tokens reused, "
                f"max |Δ logprob| {max_diff:.4f}\n"
            )
            ratios[label] = t_cold / t_warm
    finally:
        model.close()
    return rows, ratios


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the dev question and its drafts (``draft_case``): --task, --question, --drafts,
    --max-tokens (this script's and ``bench_overlap.py``'s)."""
    parser.add_argument("--task", choices=("multihop_qa", "short_qa", "mcq"), default="multihop_qa")
    parser.add_argument("--question", type=int, default=0, help="Which dev question of --task (file order).")
    parser.add_argument("--drafts", type=int, default=Context().n_drafts, help="m: subsets, hence drafts.")
    parser.add_argument("--max-tokens", type=int, default=Context().draft_max_tokens, help="Per draft.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(parser)
    parser.add_argument("--threads", type=int, default=get_settings().llm_threads)
    parser.add_argument("--repeat", type=int, default=REPEAT, help="Runs per measurement (fastest kept).")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)

    case = draft_case(args.task, args.question, args.drafts)
    draft_rows, drafts, speedup = bench_drafter(case, args.max_tokens, args.threads, repeat)
    # Score the drafts as ``verify`` would: each reply read back by the product's parser.
    verify_rows, ratios = bench_verifier(case, [g.text for g in drafts], args.threads, repeat)

    out = sys.stdout
    out.write(
        f"\n{case.qid} ({args.task}), threads={args.threads}, drafts={len(drafts)}, max_tokens={args.max_tokens}, "
        f"best of {repeat} (interleaved)\n"
    )
    out.write(f"| {'run':48s} | {'seconds':>8s} | {'tokens':>7s} | {'rate':>18s} |\n")
    out.write(f"|{'-' * 50}|{'-' * 10}|{'-' * 9}|{'-' * 20}|\n")
    for row in (*draft_rows, *verify_rows):
        out.write(row.render() + "\n")
    out.write(f"\nbatched generation speed-up over sequential: {speedup:.2f}x\n")
    for label, ratio in ratios.items():
        out.write(f"prefix cache speed-up when scoring ({label}): {ratio:.2f}x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
