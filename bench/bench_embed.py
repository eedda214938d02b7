"""The runtime embedder (MiniLM int8 on onnxruntime) against the reference (the same model on torch).

    .venv/bin/python bench/bench_embed.py [--limit 0] [--batch-size 32] [--onnx PATH ...]

Needs the ``torch`` extra (make install has it). Every passage of the three shared dev corpora
(``<shared>/eval/dev/*_corpus.jsonl``) and every dev question is embedded by each embedder: the torch reference
(sentence-transformers), the committed ONNX file (``app/embed/models``), and each ``--onnx`` candidate. Batches are
embedded by all embedders in rotating order, so background load hits them alike. Reported, measured in this run:

* throughput (passages/s) and its ratio to the torch reference;
* cosine to the reference vectors: min, 1st percentile, mean, over passages and questions;
* retrieval against the reference: mean overlap of each question's top-10 passages (exact search in its own
  dataset's corpus) with the reference's top-10, and answer hit@10 (a gold answer string appears in a top-10
  passage; PopQA and HotpotQA, where answers are spans) for every embedder, so a change of vectors is judged by
  what retrieval finds.

``--limit N`` keeps the first N passages of each corpus (0: all).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.embed.minilm import MiniLMEmbedder
from app.embed.protocol import Embedder
from app.embed.reference import TorchMiniLMEmbedder
from app.settings import get_settings

Vectors = npt.NDArray[np.float32]
CORPORA = {
    "popqa": "popqa_s2rag100_corpus.jsonl",
    "arcc": "arcc_s2rag100_corpus.jsonl",
    "hotpot": "hotpotqa_reflexion100_corpus.jsonl",
}
"""Question id prefix -> its dataset's corpus file."""
K = 10


@dataclass
class Question:
    """A dev question: its dataset, text and gold answers."""

    dataset: str
    text: str
    answers: list[str]


@dataclass
class Run:
    """One embedder's vectors and time."""

    name: str
    embedder: Embedder
    seconds: float = 0.0
    passages: dict[str, list[Vectors]] = field(default_factory=dict)
    questions: list[Vectors] = field(default_factory=list)


def read_corpus(path: Path, limit: int) -> list[str]:
    """The non-empty passage texts of a corpus file (the first ``limit``; 0: all)."""
    texts = [t for line in path.open(encoding="utf-8") if (t := json.loads(line)["text"].strip())]
    return texts[:limit] if limit else texts


def read_questions(path: Path) -> list[Question]:
    """The dev questions with their dataset (from the id prefix)."""
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return [Question(dataset=r["id"].split("-")[0], text=r["question"], answers=r["answers"]) for r in rows]


def embed_all(runs: Sequence[Run], corpora: dict[str, list[str]], questions: list[str], batch: int) -> None:
    """Embed every batch with every embedder, rotating which goes first; accumulate each one's time."""
    jobs = [(name, texts[i : i + batch]) for name, texts in corpora.items() for i in range(0, len(texts), batch)]
    jobs += [("?", questions[i : i + batch]) for i in range(0, len(questions), batch)]
    for run in runs:
        run.embedder.embed(questions[:8])  # load the model outside the timed part
    for step, (name, texts) in enumerate(jobs):
        for j in range(len(runs)):
            run = runs[(step + j) % len(runs)]
            start = time.perf_counter()
            vectors = run.embedder.embed(texts)
            if name != "?":
                run.seconds += time.perf_counter() - start
                run.passages.setdefault(name, []).append(vectors)
            else:
                run.questions.append(vectors)
        if step % 20 == 0:
            sys.stderr.write(f"  batch {step + 1}/{len(jobs)}\n")


def every_vector(run: Run) -> Vectors:
    """All of a run's vectors in one order: each corpus' passages (in :data:`CORPORA` order), then the questions."""
    return np.concatenate([*(np.concatenate(run.passages[name]) for name in CORPORA), *run.questions])


def top_k(query: Vectors, corpus: Vectors) -> list[set[int]]:
    """Indices of each query row's top-K corpus rows (exact cosine: rows are unit length)."""
    scores = query @ corpus.T
    return [set(np.argsort(-row, kind="stable")[:K].tolist()) for row in scores]


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="passages per corpus (0: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per embed call (default: %(default)s)")
    parser.add_argument("--onnx", type=Path, action="append", default=[], help="an extra ONNX candidate to compare")
    args = parser.parse_args(argv)
    directory = get_settings().dev_dir
    corpora = {name: read_corpus(directory / file, args.limit) for name, file in CORPORA.items()}
    questions = read_questions(directory / "questions.jsonl")
    runs = [Run("torch (reference)", TorchMiniLMEmbedder(batch_size=args.batch_size))]
    runs.append(Run("onnx int8 (runtime)", MiniLMEmbedder()))
    runs += [Run(f"onnx {p.name}", MiniLMEmbedder(onnx_path=p)) for p in args.onnx]
    n_passages = sum(len(t) for t in corpora.values())
    sys.stderr.write(f"{n_passages} passages, {len(questions)} questions, {len(runs)} embedders\n")
    embed_all(runs, corpora, [q.text for q in questions], args.batch_size)

    ref = runs[0]
    ref_vectors = every_vector(ref)
    ref_top: dict[str, list[set[int]]] = {}
    print(f"| embedder | passages/s | × torch | cosine min / p1 / mean | top-{K} overlap | answer hit@{K} |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        passages = {name: np.concatenate(parts) for name, parts in run.passages.items()}
        qvecs = np.concatenate(run.questions)
        cos = (every_vector(run) * ref_vectors).sum(1)
        overlaps: list[float] = []
        hits: list[bool] = []
        for name in CORPORA:
            idx = [i for i, q in enumerate(questions) if q.dataset == name]
            tops = top_k(qvecs[idx], passages[name])
            if run is ref:
                ref_top[name] = tops
            overlaps += [len(a & b) / K for a, b in zip(tops, ref_top[name], strict=True)]
            if name != "arcc":
                for i, top in zip(idx, tops, strict=True):
                    text = " ".join(corpora[name][j] for j in top).lower()
                    hits.append(any(a.lower() in text for a in questions[i].answers))
        rate = n_passages / run.seconds
        print(
            f"| {run.name} | {rate:.1f} | {rate * ref.seconds / n_passages:.2f} | "
            f"{cos.min():.4f} / {np.percentile(cos, 1):.4f} / {cos.mean():.5f} | {np.mean(overlaps):.3f} | "
            f"{np.mean(hits):.3f} ({sum(hits)}/{len(hits)}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
