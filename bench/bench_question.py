"""Wall time per node for real questions: Speculative RAG vs standard RAG on the same store, in one run.

    .venv/bin/python bench/bench_question.py [--store DIR] [--questions 3] [--task multihop_qa] [--max-rounds N]
        [--drafts M] [--compress] [--no-fallback]

Without --store, the shared HotpotQA corpus is ingested into a temporary store first. Questions come from
``<shared>/eval/dev/questions.jsonl`` (those of --task, in file order): the first one warms up both graphs (model
loading, caches) and is not measured; the next --questions are. Runs use the product's defaults, ``max_rounds``
included (2: a retry when every draft abstained), unless --max-rounds is given, and the fallback to the verifier
reading all passages when the best draft's confidence is low; ``--no-fallback`` measures the paper's graph (the
best draft is the answer; no confidence is computed), the system issue 15's latency bar is about. Prints the
setting, per-node median wall seconds for each graph and the ratio of end-to-end medians (speculative / standard),
measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from app.ask import run
from app.embed.factory import get_embedder
from app.settings import get_settings
from app.store.factory import open_store
from app.store.ingest import ingest_paths
from graphs.context import Context

CORPUS = {"multihop_qa": "hotpotqa_reflexion100_corpus.jsonl", "short_qa": "popqa_s2rag100_corpus.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="an ingested store (default: ingest the shared corpus)")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--task", choices=sorted(CORPUS), default="multihop_qa")
    parser.add_argument(
        "--max-rounds", type=int, default=Context().max_rounds, help="retrieval rounds (default: the product's)"
    )
    parser.add_argument(
        "--drafts", type=int, default=Context().n_drafts, help="drafts per round, m (default: the product's)"
    )
    parser.add_argument(
        "--compress",
        action=argparse.BooleanOptionalAction,
        default=Context().compress,
        help="compress the drafts' passages (default: the product's)",
    )
    parser.add_argument(
        "--no-fallback",
        dest="fallback",
        action="store_false",
        help="the paper's graph: never fall back to the verifier reading all passages (default: the product's)",
    )
    args = parser.parse_args()

    settings = get_settings()
    dev = (settings.shared_dir if settings.shared_dir.is_absolute() else Path.cwd() / settings.shared_dir) / "eval/dev"
    store = args.store
    if store is None:
        store = Path(tempfile.mkdtemp(prefix="specrag-bench-")) / "store"
        embedder = get_embedder(settings.embedder)
        kb = open_store(settings.store, path=store, embedder=embedder, create=True)
        ingest_paths([dev / CORPUS[args.task]], kb, embedder, progress=False)
    with open(dev / "questions.jsonl", encoding="utf-8") as f:
        warm_up, *questions = [q for q in map(json.loads, f) if q["task"] == args.task][: 1 + args.questions]

    # The paper's graph has no confidence: without the fallback nothing depends on one, and its beliefs cost requests.
    paper = {} if args.fallback else {"confidence_model": "none"}
    context = Context(
        store=str(store),
        max_rounds=args.max_rounds,
        fallback=args.fallback,
        n_drafts=args.drafts,
        compress=args.compress,
        **paper,
    )
    run(warm_up["question"], context, "speculative")  # warm-up (not measured): loads models and embedder
    run(warm_up["question"], context, "standard")
    walls: dict[str, dict[str, list[float]]] = {"speculative": {}, "standard": {}}
    rounds: list[int] = []
    for q in questions:
        for graph in ("speculative", "standard"):
            result = run(q["question"], context, graph)
            for node, seconds in [*result.timings.items(), ("(total)", result.seconds)]:
                walls[graph].setdefault(node, []).append(seconds)
            if graph == "speculative":
                rounds.append(len(result.rounds))

    print(
        f"{len(questions)} {args.task} questions after 1 warm-up question (not measured), "
        f"m={args.drafts}, compress={'on' if args.compress else 'off'}, "
        f"max_rounds={args.max_rounds}, fallback={'on' if args.fallback else 'off'}, {settings.llm_threads} threads; "
        f"speculative rounds per question {rounds}; "
        "median wall seconds per node"
    )
    for graph, per_node in walls.items():
        print(f"\n{graph}")
        for node, values in per_node.items():
            print(f"  {node:<10} {statistics.median(values):8.2f}")
    ratio = statistics.median(walls["speculative"]["(total)"]) / statistics.median(walls["standard"]["(total)"])
    print(f"\nspeculative / standard end-to-end latency: {ratio:.2f}x")


if __name__ == "__main__":
    main()
