"""The ``specrag`` command line."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from app.cli_errors import CLIError, cli_errors, err_console
from app.confidence.cli import confidence_app
from app.tune.cli import tune_app
from graphs.context import Context

if TYPE_CHECKING:
    from graphs.backends import Backends

app = typer.Typer(
    name="specrag",
    help=(
        "Speculative RAG on your own documents: ingest files into a local knowledge base, then ask questions.\n\n"
        "The default knowledge base is [bold].specrag/store[/] (set SPECRAG_STORE__PATH or pass --store)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(tune_app, name="tune")
app.add_typer(confidence_app, name="confidence")

# Piped output (tests, `make demo` logs) gets a readable width instead of rich's 80-column fallback.
out_console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


class GraphChoice(StrEnum):
    """Which graph ``ask`` runs."""

    speculative = "speculative"
    standard = "standard"


StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        "-s",
        help="Knowledge base directory (default: SPECRAG_STORE__PATH, else .specrag/store).",
        show_default=False,
        file_okay=False,
    ),
]


def _knob(text: str, field: str) -> str:
    """Option help that shows the context default (one source of truth: ``graphs.context.Context``)."""
    return f"{text} \\[default: {Context.model_fields[field].default}]"


SelfConsistencyOption = Annotated[
    str | None,
    typer.Option(
        "--self-consistency-of",
        help=_knob(
            "What the verifier's ρ_sc scores: answer_and_rationale (the paper's) or answer_given_rationale "
            "(the answer after reading the rationale).",
            "self_consistency_of",
        ),
    ),
]
"""The ``self_consistency_of`` option, shared by ``ask`` and ``eval``."""

AbstainThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--abstain-threshold",
        help=(
            "Short-answer drafts of a tuned drafter: abstain only when its probability of abstaining is above this "
            "(0.5-1.0; 1.0: never abstain), else it is made to answer. \\[default: greedy]"
        ),
        show_default=False,
    ),
]
"""The ``abstain_threshold`` option, shared by ``ask`` and ``eval``."""


def _context(overrides: Mapping[str, object]) -> Context:
    """The run context from the options that were given (None: the default), or a one-line error."""
    from pydantic import ValidationError

    try:
        return Context.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CLIError(f"invalid option {first['loc'][0]}: {first['msg']}") from None


def _store_path(store: Path | None) -> Path:
    from app.settings import get_settings

    return store if store is not None else get_settings().store.path


@app.command(
    help=(
        "Add documents to a knowledge base (created if needed).\n\n"
        "Every input is read and checked first: if one is missing or unreadable, nothing is written. "
        "Chunks already stored are skipped, so ingesting twice adds nothing and re-running an interrupted "
        "ingest resumes it."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        "  specrag ingest samples/corpus\n\n"
        "  specrag ingest notes.md paper.pdf passages.jsonl --store /data/kb\n\n"
        "  specrag ingest docs/ --batch-size 32"
    ),
)
@cli_errors
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files (.txt, .md, .pdf, .jsonl with {id, title, text} per line) or directories (searched "
            "recursively; hidden files and other file types are skipped).",
            show_default=False,
        ),
    ],
    store: StoreOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Chunks embedded and committed together.")
    ] = 64,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Add documents to a knowledge base (see the command help)."""
    from app.embed.factory import make_embedder
    from app.settings import get_settings
    from app.store.factory import open_store
    from app.store.ingest import ingest_documents, load_documents

    settings = get_settings()
    inputs = load_documents(paths)  # validates everything before the store is touched
    for skipped, reason in [*inputs.skipped, *inputs.skipped_records]:
        err_console.print(f"[yellow]skipped[/] {escape(str(skipped))}: {escape(reason)}")
    embedder = make_embedder(settings.embedder)
    kb = open_store(settings.store, path=_store_path(store), embedder=embedder, create=True)
    report = ingest_documents(inputs, kb, embedder, batch_size=batch_size, progress=not quiet, console=err_console)
    files = f"{report.files:,} file" + ("" if report.files == 1 else "s")
    rate = f", {report.chunks_per_second:,.1f} chunks/s" if report.chunks_added else ""
    out_console.print(
        f"ingested {files}: {report.chunks_seen:,} chunks ({report.chunks_added:,} new, "
        f"{report.already_present:,} already stored) in {report.seconds:.1f} s{rate}"
    )


@app.command(
    epilog="[bold]Examples[/]\n\n  specrag stats\n\n  specrag stats --store /data/kb --json",
)
@cli_errors
def stats(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show what a knowledge base holds: documents, chunks, embedder, and index state."""
    from app.settings import get_settings
    from app.store.factory import open_store

    kb = open_store(get_settings().store, path=_store_path(store), embedder=None, create=False)
    info = kb.stats()
    if as_json:
        out_console.print_json(json.dumps(dataclasses.asdict(info)))
        return
    rows = [
        ("store", info.path),
        ("documents", f"{info.documents:,}"),
        ("chunks", f"{info.chunks:,}"),
        ("embedder", info.embedder),
        ("vector index", info.vector_index),
        ("text index", info.text_index),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out_console.print(f"{key.ljust(width)}  {escape(value)}")


@app.command(
    help=(
        "Answer a question from a knowledge base with Speculative RAG.\n\n"
        "Retrieves the top-n passages, clusters them, drafts m answers in parallel with the small drafter (each "
        "from k passages, one per cluster), scores every draft with the verifier (ρ_draft · ρ_sc · ρ_sr) and "
        "prints the best one with its rationale, sources and the table of drafts. When the best draft is not "
        "well supported, the query is rewritten and new passages are retrieved (at most --max-rounds rounds)."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        '  specrag ask "Who deciphered the hieroglyphs?"\n\n'
        '  specrag ask "..." --store /data/kb --json\n\n'
        '  specrag ask "..." --drafts 3 --per-draft 3 --max-rounds 1\n\n'
        '  specrag ask "Which gas do plants absorb?" --choice A=oxygen --choice B="carbon dioxide"\n\n'
        '  specrag ask "..." --graph standard     # the baseline: one answer from all passages'
    ),
)
@cli_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (see README).")] = False,
    graph: Annotated[
        GraphChoice, typer.Option("--graph", "-g", help="speculative (the method) or standard (baseline).")
    ] = GraphChoice.speculative,
    top_n: Annotated[
        int | None, typer.Option("--top-n", "-n", help=_knob("Passages retrieved per round.", "top_n"))
    ] = None,
    drafts: Annotated[
        int | None, typer.Option("--drafts", "-m", help=_knob("Drafts per round (m).", "n_drafts"))
    ] = None,
    per_draft: Annotated[
        int | None, typer.Option("--per-draft", "-k", help=_knob("Passages per draft = clusters (k).", "per_draft"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_knob("Seed of clustering and subset sampling.", "seed"))] = None,
    max_rounds: Annotated[
        int | None, typer.Option("--max-rounds", help=_knob("Retrieval rounds at most (1: never retry).", "max_rounds"))
    ] = None,
    accept_confidence: Annotated[
        float | None,
        typer.Option(
            "--accept-confidence",
            help=_knob(
                "Calibrated confidence of the best draft needed to accept it (else fall back).", "accept_confidence"
            ),
        ),
    ] = None,
    fallback: Annotated[
        bool | None,
        typer.Option(
            "--fallback/--no-fallback",
            help="Below --accept-confidence, let the verifier answer from all passages (standard RAG) "
            "\\[default: fallback]; --no-fallback accepts the best draft (the paper's graph).",
            show_default=False,
        ),
    ] = None,
    normalization: Annotated[
        str | None,
        typer.Option(
            "--normalization",
            help=_knob("raw (sum of log-probs, as the paper) or mean (per token).", "score_normalization"),
        ),
    ] = None,
    self_consistency_of: SelfConsistencyOption = None,
    search_mode: Annotated[
        str | None, typer.Option("--search-mode", help=_knob("hybrid, vector or text.", "search_mode"))
    ] = None,
    draft_max_tokens: Annotated[
        int | None, typer.Option("--draft-max-tokens", help=_knob("Token limit per draft.", "draft_max_tokens"))
    ] = None,
    compress: Annotated[
        bool | None,
        typer.Option(
            "--compress/--no-compress",
            help=_knob("Keep only the passage sentences that matter for the question before drafting.", "compress"),
            show_default=False,
        ),
    ] = None,
    compress_target: Annotated[
        float | None,
        typer.Option("--compress-target", help=_knob("With --compress: fraction of words kept.", "compress_target")),
    ] = None,
    choice: Annotated[
        list[str] | None,
        typer.Option(
            "--choice",
            help=(
                "A multiple-choice option as LETTER=TEXT (repeat for each choice): the models see the choices and "
                "the drafts answer with a letter."
            ),
            show_default=False,
        ),
    ] = None,
    abstain_threshold: AbstainThresholdOption = None,
) -> None:
    """Answer a question (see the command help)."""

    from app.ask import parse_choices, render, run

    overrides = {
        "store": str(_store_path(store)),
        "top_n": top_n,
        "n_drafts": drafts,
        "per_draft": per_draft,
        "seed": seed,
        "max_rounds": max_rounds,
        "accept_confidence": accept_confidence,
        "fallback": fallback,
        "score_normalization": normalization,
        "self_consistency_of": self_consistency_of,
        "search_mode": search_mode,
        "draft_max_tokens": draft_max_tokens,
        "compress": compress,
        "compress_target": compress_target,
        "abstain_threshold": abstain_threshold,
    }
    result = run(question, _context(overrides), graph.value, choices=parse_choices(choice or []))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        render(result, out_console)


TracesOption = Annotated[
    Path | None,
    typer.Option(
        "--traces",
        help="Trace database (default: SPECRAG_TRACES__PATH, else .specrag/traces.sqlite).",
        show_default=False,
        dir_okay=False,
    ),
]


def _traces_path(path: Path | None) -> Path:
    from app.settings import get_settings

    return path if path is not None else get_settings().traces.path


@app.command(
    help=(
        "Show what one run did, step by step.\n\n"
        "Every node with its start and duration, the passages retrieved in each round with their scores and "
        "clusters, the subsets, the drafts side by side with their scores and rank (★ the chosen one), and each "
        "reflection decision with its reason and rewritten query.\n\n"
        "Every `specrag ask` prints its run id on its last line (and as run_id with --json); failed runs keep "
        "their trace up to the failing node."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        "  specrag trace 3f2a9c0e4b1d4e6f8a7b6c5d4e3f2a1b\n\n"
        "  specrag trace 3f2a9c0e4b1d4e6f8a7b6c5d4e3f2a1b --json\n\n"
        "  specrag traces     # list recent runs and their ids"
    ),
)
@cli_errors
def trace(
    run_id: Annotated[str, typer.Argument(help="The run id (32 hex digits).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as one JSON object.")] = False,
    traces: TracesOption = None,
) -> None:
    """Show a run's trace (see the command help)."""
    from app.trace.model import TraceNotFoundError, validate_run_id
    from app.trace.render import render_trace
    from app.trace.store import SQLiteTraceStore

    validate_run_id(run_id)
    path = _traces_path(traces)
    if not path.is_file():
        raise TraceNotFoundError(f"no trace for run {run_id}: there is no trace database at {path}")
    found = SQLiteTraceStore(path).get(run_id)
    if as_json:
        print(found.model_dump_json(indent=2))
    else:
        render_trace(found, out_console)


@app.command(
    "traces",
    epilog="[bold]Examples[/]\n\n  specrag traces\n\n  specrag traces --limit 5 --thread my-thread --json",
)
@cli_errors
def list_traces(
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, help="Runs to show at most.")] = 20,
    thread: Annotated[
        str | None, typer.Option("--thread", help="Only the runs of this thread.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    traces: TracesOption = None,
) -> None:
    """List recent runs, most recent first, with their run ids (for `specrag trace RUN_ID`)."""
    from app.trace.render import render_trace_list
    from app.trace.store import SQLiteTraceStore

    path = _traces_path(traces)
    found = SQLiteTraceStore(path).list(thread_id=thread, limit=limit) if path.is_file() else []
    if as_json:
        print(json.dumps([t.model_dump(mode="json") for t in found], indent=2))
    else:
        render_trace_list(found, out_console)


@app.command(
    help=(
        "Serve the chat endpoint: an OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models) whose model "
        "names select the graph (speculative-rag, standard-rag), with conversation threads and run traces "
        "(GET /v1/traces/RUN_ID, GET /v1/threads/THREAD_ID/traces).\n\n"
        "Binds to 127.0.0.1 by default. A non-loopback address needs SPECRAG_SERVER__API_KEY (bearer token) or "
        "--allow-public."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        "  specrag serve\n\n"
        "  specrag serve --port 8080 --store /data/kb\n\n"
        "  SPECRAG_SERVER__API_KEY=... specrag serve --host 0.0.0.0"
    ),
)
@cli_errors
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind \\[default: SPECRAG_SERVER__HOST, else 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Port \\[default: SPECRAG_SERVER__PORT, else 8000]"),
    ] = None,
    store: StoreOption = None,
    allow_public: Annotated[
        bool, typer.Option("--allow-public", help="Bind to a non-loopback address without an API key.")
    ] = False,
) -> None:
    """Serve the chat endpoint (see the command help)."""
    import logging

    import uvicorn

    from app.server.app import create_app
    from app.server.security import bind_refusal
    from app.settings import get_settings

    settings = get_settings()
    server = settings.server.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    refusal = bind_refusal(server.host, api_key_set=server.api_key is not None, allow_public=allow_public)
    if refusal:
        raise CLIError(refusal)
    settings = settings.model_copy(update={"server": server})
    provider = None
    if store is not None:
        from graphs.backends import configured_backends

        path = str(store)

        def provider(context: Context) -> Backends:
            return configured_backends(context if context.store else context.model_copy(update={"store": path}))

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    auth = "bearer token required" if server.api_key is not None else "no auth"
    err_console.print(f"serving on http://{server.host}:{server.port}/v1 ({auth}); Ctrl-C stops")
    uvicorn.run(create_app(settings, provider=provider), host=server.host, port=server.port, log_level="info")


@app.command(
    "eval",
    help=(
        "Evaluate Speculative RAG against its baselines and ablations on a QA dataset, every system on the same "
        "questions, passages and models, in one run.\n\n"
        "DATASET is a JSONL file in the shared format (id, question, answers, task, choices?, passages). By default "
        "each question's own passages are used (the paper's setting); with --store they are retrieved once from an "
        "ingested knowledge base. Systems: standard, speculative, speculative-base (the drafter without its tuned "
        "adapter), speculative-verifier-drafts (the verifier drafts: a reference), random-subsets, replug, "
        "speculative+compress, standard+compress (generate); no-verifier, drafter-only, no-draft-score, "
        "no-self-consistency, no-self-reflection, raw-scores, length-normalised (re-rank the speculative drafts, "
        "generating nothing).\n\n"
        "Writes into --out: results.jsonl (one line per question: answers, correctness, drafts and scores), "
        "summary.json, report.md (accuracy with 95% bootstrap intervals, paired difference to standard, F1, "
        "latency p50/p95, tokens, model calls), accuracy_vs_latency.png, accuracy_vs_drafts.png and traces.sqlite. "
        "Interrupt it at any time: re-running the same command resumes (finished questions are not redone), and "
        "adding systems computes only those."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        "  specrag eval ../shared/eval/dev/questions.jsonl --limit 30\n\n"
        "  specrag eval questions.jsonl --per-task 50 --out runs/dev150\n\n"
        "  specrag eval questions.jsonl --systems standard,speculative --tasks mcq --limit 20\n\n"
        "  specrag eval questions.jsonl --store kb/ --limit 30      # retrieval from an ingested corpus\n\n"
        "  specrag eval questions.jsonl --per-task 50 --systems standard,speculative --reuse-from docs/eval/dev150"
    ),
)
@cli_errors
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Questions (JSONL, shared format).", show_default=False)],
    systems: Annotated[
        str, typer.Option("--systems", help="Comma-separated systems to run (default: all).", show_default=False)
    ] = "",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Questions at most, round-robin across tasks.", show_default=False),
    ] = None,
    per_task: Annotated[
        int | None, typer.Option("--per-task", min=1, help="Questions per task at most.", show_default=False)
    ] = None,
    tasks: Annotated[
        str, typer.Option("--tasks", help="Comma-separated tasks (short_qa, mcq, multihop_qa).", show_default=False)
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed of subset sampling and of the random-draft ablation.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output directory \\[default: .specrag/eval/DATASET-NAME]",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Retrieve from this knowledge base instead of the given passages.", show_default=False
        ),
    ] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", help=_knob("Passages per question.", "top_n"))] = None,
    drafts: Annotated[int | None, typer.Option("--drafts", "-m", help=_knob("Drafts (m).", "n_drafts"))] = None,
    per_draft: Annotated[
        int | None, typer.Option("--per-draft", "-k", help=_knob("Passages per draft (k).", "per_draft"))
    ] = None,
    max_rounds: Annotated[
        int, typer.Option("--max-rounds", min=1, max=5, help="Retrieval rounds (1: the paper's single pass).")
    ] = 1,
    accept_confidence: Annotated[
        float | None,
        typer.Option(
            "--accept-confidence",
            min=0.0,
            max=1.0,
            help=_knob(
                "The default graph (speculative+reflect): confidence needed to accept the best draft, else it "
                "falls back. A run keeps the value it started with: resuming one made under another default "
                "needs that value.",
                "accept_confidence",
            ),
        ),
    ] = None,
    normalization: Annotated[
        str | None, typer.Option("--normalization", help=_knob("raw or mean.", "score_normalization"))
    ] = None,
    self_consistency_of: SelfConsistencyOption = None,
    compress: Annotated[
        bool | None,
        typer.Option(
            "--compress/--no-compress",
            help=_knob(
                "Compress the drafts' passages in every drafting system (the +compress systems always do).",
                "compress",
            ),
            show_default=False,
        ),
    ] = None,
    compress_target: Annotated[
        float | None,
        typer.Option(
            "--compress-target",
            help=_knob("With compression: fraction of the passages' words kept.", "compress_target"),
        ),
    ] = None,
    rotate_choices: Annotated[
        bool | None,
        typer.Option(
            "--rotate-choices/--no-rotate-choices",
            help=_knob(
                "Multiple choice: each draft sees the choices rotated (its letter mapped back).", "rotate_choices"
            ),
            show_default=False,
        ),
    ] = None,
    abstain_threshold: AbstainThresholdOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard what --out holds and start afresh.")] = False,
    reuse_from: Annotated[
        Path | None,
        typer.Option(
            "--reuse-from",
            help=(
                "An earlier run of the same dataset: copy its standard, standard+compress and replug results "
                "(they never run the drafter) when the verifier, embedder, passages and knobs they read are the "
                "same; otherwise an error. What was copied goes to --out/reused.json."
            ),
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Evaluate systems on a dataset (see the command help)."""
    from app.eval.session import EvalOptions
    from app.eval.session import evaluate as run_eval
    from app.eval.systems import SYSTEMS

    context = _context(
        {
            "top_n": top_n,
            "n_drafts": drafts,
            "per_draft": per_draft,
            "max_rounds": max_rounds,
            "accept_confidence": accept_confidence,
            "seed": seed,
            "score_normalization": normalization,
            "self_consistency_of": self_consistency_of,
            "compress": compress,
            "compress_target": compress_target,
            "rotate_choices": rotate_choices,
            "abstain_threshold": abstain_threshold,
        }
    )

    options = EvalOptions(
        dataset=dataset,
        systems=[x.strip() for x in systems.split(",") if x.strip()] or list(SYSTEMS),
        out=out if out is not None else Path(".specrag/eval") / dataset.stem,
        context=context,
        seed=seed,
        limit=limit,
        per_task=per_task,
        tasks=[x.strip() for x in tasks.split(",") if x.strip()],
        store=store,
        restart=restart,
        reuse_from=reuse_from,
        progress=not quiet,
    )
    summary = run_eval(options, err_console)
    if summary is not None:
        from app.eval.report import markdown

        out_console.print(markdown(summary), markup=False)


def main() -> None:
    """Console-script entry point (``specrag``)."""
    app()


if __name__ == "__main__":
    main()
