"""Does overlapping the verifier with the drafter gain anything on this CPU? (issue 15, item 3)

Run with the project venv, on an otherwise idle machine::

    .venv/bin/python bench/bench_overlap.py [--task multihop_qa] [--question 0] [--drafts 3] [--repeat 2]

One real dev question's drafts (the product's prompts and subsets, as ``bench/bench_llm.py`` builds them), then
the verifier's scoring of them (``graphs.verification`` requests, abstentions left out), three ways, each the
fastest of ``--repeat`` runs, both prefix caches emptied before every run:

- ``sequential``: the product: all drafts in one batch, then all scoring requests in one call.
- ``prefix while drafting``: the same, while a second thread has the verifier decode the question's prefix of its
  scoring prompt (one request with a one-token continuation), so the real scoring finds it cached.
- ``score each finished draft``: the drafts one after another, and a second thread scores each as it finishes
  while the next is written (the graph cannot do this with a batched drafter; this is its best case).

Both models keep the product's thread count each (``SPECRAG_LLM_THREADS``), so overlapping puts two models'
threads on the same cores: that is the question.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.llm.factory import clear_llm_cache, get_llm
from app.llm.llamacpp import LlamaCppModel
from app.llm.protocol import ScoreRequest
from app.settings import get_settings

if __package__ in (None, ""):  # run as a script (make bench): its sibling is importable from its directory
    from bench_llm import DraftCase, _score_requests, add_case_arguments, draft_case
else:
    from bench.bench_llm import DraftCase, _score_requests, add_case_arguments, draft_case


@dataclass(frozen=True)
class Outcome:
    """One way's fastest run: its wall seconds and what it produced (to check the ways agree)."""

    label: str
    seconds: float
    drafts: tuple[str, ...]
    scores: tuple[float, ...]


def _reset(*models: LlamaCppModel) -> None:
    for m in models:
        m.reset_prefix_cache()


def sequential(drafter: LlamaCppModel, verifier: LlamaCppModel, case: DraftCase, max_tokens: int) -> Outcome:
    """All drafts in one batch, then all scoring requests in one call (what the graph does)."""
    drafts = [g.text for g in drafter.generate(case.prompts(), max_tokens=max_tokens)]
    scored = verifier.score(_score_requests(case.question, drafts, case.choices, ""))
    return Outcome("sequential", 0.0, tuple(drafts), tuple(s.logprob for s in scored))


def prefix_while_drafting(drafter: LlamaCppModel, verifier: LlamaCppModel, case: DraftCase, max_tokens: int) -> Outcome:
    """The verifier decodes its scoring prompt's prefix (the question) in a second thread while the drafts are
    written."""
    warm = _score_requests(case.question, ["x\nAnswer: x"], case.choices, "")
    worker = threading.Thread(target=lambda: verifier.score(warm))
    worker.start()
    drafts = [g.text for g in drafter.generate(case.prompts(), max_tokens=max_tokens)]
    worker.join()
    scored = verifier.score(_score_requests(case.question, drafts, case.choices, ""))
    return Outcome("prefix while drafting", 0.0, tuple(drafts), tuple(s.logprob for s in scored))


def score_each_finished(drafter: LlamaCppModel, verifier: LlamaCppModel, case: DraftCase, max_tokens: int) -> Outcome:
    """Drafts one at a time; a second thread scores each finished draft while the next one is written."""
    finished: queue.Queue[str | None] = queue.Queue()
    scores: list[float] = []

    def score_loop() -> None:
        while (text := finished.get()) is not None:
            requests: list[ScoreRequest] = _score_requests(case.question, [text], case.choices, "")
            scores.extend(s.logprob for s in verifier.score(requests))

    worker = threading.Thread(target=score_loop)
    worker.start()
    drafts = []
    for prompt in case.prompts():
        (gen,) = drafter.generate([prompt], max_tokens=max_tokens)
        drafts.append(gen.text)
        finished.put(gen.text)
    finished.put(None)
    worker.join()
    return Outcome("score each finished draft", 0.0, tuple(drafts), tuple(scores))


WAYS: tuple[Callable[[LlamaCppModel, LlamaCppModel, DraftCase, int], Outcome], ...] = (
    sequential,
    prefix_while_drafting,
    score_each_finished,
)


def measure(
    drafter: LlamaCppModel, verifier: LlamaCppModel, case: DraftCase, max_tokens: int, repeat: int
) -> list[Outcome]:
    """Each way ``repeat`` times in turn (interleaved, so drift hits all alike); the fastest run of each."""
    best: dict[str, Outcome] = {}
    for _ in range(repeat):
        for way in WAYS:
            _reset(drafter, verifier)
            start = time.perf_counter()
            out = way(drafter, verifier, case, max_tokens)
            seconds = time.perf_counter() - start
            if out.label not in best or seconds < best[out.label].seconds:
                best[out.label] = Outcome(out.label, seconds, out.drafts, out.scores)
    return list(best.values())  # in WAYS' order: sequential first


def render(outcomes: Sequence[Outcome]) -> str:
    """A markdown table: seconds and the ratio to ``sequential``."""
    base = outcomes[0].seconds
    lines = ["| way | seconds | × sequential | drafts as sequential's |", "|---|---:|---:|---:|"]
    for o in outcomes:
        same = sum(a == b for a, b in zip(o.drafts, outcomes[0].drafts, strict=True))
        lines.append(f"| {o.label} | {o.seconds:.2f} | {o.seconds / base:.3f} | {same}/{len(o.drafts)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Load both models once, measure the three ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(parser)
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each way; the fastest counts.")
    args = parser.parse_args(argv)
    if args.drafts < 1 or args.repeat < 1:
        parser.error("--drafts and --repeat must be at least 1")
    settings = get_settings()
    case = draft_case(args.task, args.question, args.drafts)
    drafter = get_llm(settings.drafter, threads=settings.llm_threads, cache_dir=settings.model_cache)
    verifier = get_llm(settings.verifier, threads=settings.llm_threads, cache_dir=settings.model_cache)
    if not isinstance(drafter, LlamaCppModel) or not isinstance(verifier, LlamaCppModel):
        sys.exit("bench_overlap measures the embedded llama.cpp models; the settings name another backend")
    try:
        drafter.generate(case.prompts()[:1], max_tokens=4)  # warm-up: first calls allocate
        verifier.score(_score_requests("warm-up", ["x\nAnswer: y"], {}, ""))
        outcomes = measure(drafter, verifier, case, args.max_tokens, args.repeat)
    finally:
        clear_llm_cache()
    sys.stdout.write(
        f"{case.qid}: {args.drafts} drafts, {settings.llm_threads} threads per model, fastest of {args.repeat}\n"
    )
    sys.stdout.write(render(outcomes) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
