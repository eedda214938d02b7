"""One ``specrag eval`` invocation: load the models once, evaluate with a progress bar, write the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.confidence.model import ConfidenceModel, ConfidenceModelError, load_model
from app.eval.dataset import EvalQuestion, load_questions
from app.eval.export import with_dataset_text
from app.eval.plots import write_plots
from app.eval.report import Summary, complete, summarize, write_summary
from app.eval.reuse import prompt_hashes, reuse
from app.eval.runner import QuestionRecord, RunSpec, missing, open_run, ordered_systems, run_questions
from app.eval.systems import Models, SystemResult
from app.llm.metered import MeteredModel
from app.llm.protocol import ChatPrompt, Message
from app.settings import get_settings
from app.store.factory import open_store
from app.trace.store import SQLiteTraceStore
from graphs.context import Context


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What ``specrag eval`` was asked."""

    dataset: Path
    systems: Sequence[str]
    out: Path
    context: Context
    seed: int = 0
    limit: int | None = None
    per_task: int | None = None
    tasks: Sequence[str] = ()
    store: Path | None = None
    restart: bool = False
    progress: bool = True
    reuse_from: Path | None = None
    """An earlier run whose standard, standard+compress and replug results may be copied (``app.eval.reuse``)."""


def load_models(systems: Sequence[str] = ()) -> Models:
    """The configured drafter, verifier and embedder, metered (loaded once for the whole run); with
    ``speculative-base`` among ``systems`` and a drafter adapter configured, the drafter's base model too."""
    from app.embed.factory import get_embedder
    from app.llm.factory import get_llm
    from app.models import answer_lead

    s = get_settings()
    drafter = get_llm(s.drafter, threads=s.llm_threads, cache_dir=s.model_cache)
    verifier = get_llm(s.verifier, threads=s.llm_threads, cache_dir=s.model_cache)
    base = None
    if "speculative-base" in systems and s.drafter.lora:
        plain = s.drafter.model_copy(update={"lora": "", "lora_sha256": None})
        base = MeteredModel(get_llm(plain, threads=s.llm_threads, cache_dir=s.model_cache))
    return Models(
        drafter=MeteredModel(drafter),
        verifier=MeteredModel(verifier),
        embedder=get_embedder(s.embedder),
        base_drafter=base,
        drafter_lead=answer_lead(s.drafter),
    )


def warm_up(models: Models, systems: Sequence[str]) -> None:
    """One tiny request per model the systems use, so the first question's latency does not include loading."""
    models.embedder.embed(["warm-up"])
    prompt = ChatPrompt(messages=(Message(role="user", content="Say OK."),))
    if set(systems) - {"standard", "standard+compress", "replug"}:
        models.drafter.generate([prompt], max_tokens=1)
    models.verifier.generate([prompt], max_tokens=1)
    models.reset()


def evaluate(options: EvalOptions, console: Console, models: Models | None = None) -> Summary | None:
    """Run (or resume) an evaluation and write ``summary.json``, ``report.md`` and the plots into ``options.out``.

    Args:
        options: The run.
        console: Where progress and messages go (stderr for the CLI).
        models: Backends to use (default: from settings; tests pass others).

    Returns:
        The summary over the questions that have every system (None when none has yet).

    Raises:
        EvalError, DatasetError: Bad options, data or output directory (nothing evaluated).
        KeyboardInterrupt: After the report of what is complete was written.
    """
    systems = ordered_systems(options.systems)
    questions = load_questions(options.dataset, tasks=options.tasks, limit=options.limit, per_task=options.per_task)
    store = None
    if options.store is not None:  # checked before the models load; the embedder is checked once they have
        open_store(get_settings().store, path=options.store, embedder=None, create=False)
    models = models or load_models(systems)
    if options.store is not None:
        store = open_store(get_settings().store, path=options.store, embedder=models.embedder, create=False)
    spec = RunSpec(
        dataset=options.dataset,
        context=options.context,
        seed=options.seed,
        store=options.store,
        models={"drafter": models.drafter.name, "verifier": models.verifier.name, "embedder": models.embedder.name},
        prompts=prompt_hashes(),
    )
    records = open_run(options.out, spec, restart=options.restart)
    if options.reuse_from is not None:
        reused = reuse(options.reuse_from, options.out, spec.fingerprint(), records, systems, questions)
        copied = ", ".join(f"{s} for {n} questions" for s, n in reused.systems.items()) or "nothing"
        console.print(f"reused from {options.reuse_from}: {copied}")
        for what in reused.unchecked:
            console.print(f"[yellow]warning[/]: could not compare {what}; assumed unchanged")
    if options.store is None:  # records copied without the dataset's text (app.eval.export) get it back
        records = with_dataset_text(records, questions)
    todo = [q for q in questions if missing(records.get(q.id), systems)]
    console.print(
        f"{len(questions)} questions × {len(systems)} systems ({', '.join(systems)}); "
        f"{len(questions) - len(todo)} already done in {options.out}"
    )
    if todo:
        warm_up(models, systems)
    traces = SQLiteTraceStore(options.out / "traces.sqlite")
    wanted = {q.id: q for q in questions}
    try:
        with _progress(console, options.progress) as bar:
            task = bar.add_task("evaluating", total=len(todo))
            for record in run_questions(
                todo,
                systems,
                out=options.out,
                context=options.context,
                seed=options.seed,
                models=models,
                store=store,
                traces=traces,
                records=records,
            ):
                bar.update(task, advance=1, description=_running(records, wanted, systems, record))
    finally:
        summary = _write(records, wanted, systems, options, spec, console)
    return summary


def _write(
    records: dict[str, QuestionRecord],
    wanted: Mapping[str, EvalQuestion],
    systems: list[str],
    options: EvalOptions,
    spec: RunSpec,
    console: Console,
) -> Summary | None:
    rows = [r for qid, r in records.items() if qid in wanted]
    if not complete(rows, systems):
        console.print("no question has results for every system yet: no report written")
        return None
    settings: dict[str, object] = {
        "context": options.context.model_dump(exclude={"store"}),
        "seed": options.seed,
        "passages": f"retrieved from {options.store}" if options.store else "given by the dataset",
        **spec.models,
    }
    reused = sorted({n for r in rows for n, x in r.systems.items() if x.reused_from})
    if reused:
        settings["reused"] = f"{', '.join(reused)} copied from {options.reuse_from or 'an earlier run'} (--reuse-from)"
    model, calibrated = _confidence_model(options.context, systems, console, rows)
    summary = summarize(rows, systems, settings, wanted, confidence=model, calibrated=calibrated)
    write_summary(summary, options.out)
    written = write_plots(summary, options.out)
    console.print(
        f"wrote {options.out / 'report.md'}, summary.json, results.jsonl and {', '.join(p.name for p in written)}"
    )
    return summary


def _confidence_model(
    context: Context, systems: Sequence[str], console: Console, records: Sequence[QuestionRecord] = ()
) -> tuple[ConfidenceModel | None, str]:
    """The model the run's context names, for the calibration section, and the system whose drafts it judges:
    ``speculative`` when it is scored as the model was fitted, else the run's re-verifying system that is (the same
    drafts). None when 'none', unreadable, no system is scored that way, or that system's ``records`` lack a
    belief of the verifier the model reads (records made before it was recorded: their inputs would be 0). A system
    whose selected drafts went unverified (agreeing rounds of the paper's graph) is passed over: without scores
    their inputs would read as no draft."""
    from app.eval.systems import REVERIFICATIONS, scoring_of

    if context.confidence_model == "none":
        return None, "speculative"
    try:
        model = load_model(context.confidence_model)
    except ConfidenceModelError as exc:
        console.print(f"[yellow]warning[/]: no calibration section: {exc}")
        return None, "speculative"
    passed_over = False
    for name in ("speculative", *(n for n in REVERIFICATIONS if n in systems)):
        if scoring_of(name, context.self_consistency_of) == model.self_consistency_of:
            if unverified := _unverified(name, records):
                console.print(
                    f"[yellow]warning[/]: no calibration section from {name}: {unverified} of its selected drafts "
                    "were not verified (their drafts agreed, and the paper's graph has no confidence to read the "
                    "scores); a re-verifying system (rationale-conditioned) judges the same drafts verified"
                )
                passed_over = True
                continue
            if lacking := _lacking_beliefs(model, name, records):
                console.print(
                    f"[yellow]warning[/]: no calibration section: {model.name} reads the verifier's {lacking}, "
                    f"which this run's {name} records lack (made before it was recorded); re-verify them "
                    "(drop those records and run again) or judge them with the model of their time"
                )
                return None, "speculative"
            return model, name
    if passed_over:
        return None, "speculative"
    console.print(
        f"[yellow]warning[/]: no calibration section: {model.name} was fitted on drafts scored with "
        f"self_consistency_of={model.self_consistency_of!r}; this run scores {context.self_consistency_of!r} and has "
        "no re-verifying system scored that way"
    )
    return None, "speculative"


def _answered(system: str, records: Sequence[QuestionRecord]) -> list[SystemResult]:
    """``system``'s results whose selected draft is an answer (not an abstention, and not no draft at all)."""
    chosen = [x for r in records if (x := r.systems.get(system)) is not None and x.chosen is not None]
    return [x for x in chosen if x.chosen is not None and x.drafts[x.chosen].outcome != "abstain"]


def _unverified(system: str, records: Sequence[QuestionRecord]) -> int:
    """How many of ``system``'s selected answers have no verifier scores (an agreeing round skipped the verifier)."""
    return sum(1 for x in _answered(system, records) if x.chosen is not None and x.drafts[x.chosen].total is None)


def _lacking_beliefs(model: ConfidenceModel, system: str, records: Sequence[QuestionRecord]) -> str:
    """Which beliefs ``model`` reads that some selected answer of ``system`` was recorded without ('' if none)."""
    answered = _answered(system, records)
    lacking = [
        what
        for what, reads, has in (
            ("closed-book belief", model.reads_closed_book, lambda x: x.closed_book is not None),
            ("open-book belief", model.reads_open_book, lambda x: x.open_book is not None),
        )
        if reads and any(not has(x) for x in answered)
    ]
    return " and ".join(lacking)


def _running(
    records: dict[str, QuestionRecord], wanted: Mapping[str, EvalQuestion], systems: list[str], last: QuestionRecord
) -> str:
    """Progress text: running accuracy of the main systems."""
    rows = [r for qid, r in records.items() if qid in wanted and all(s in r.systems for s in systems)]
    shown = [s for s in ("speculative", "standard") if s in systems] or systems[:2]
    accs = ", ".join(f"{s} {100 * sum(r.systems[s].correct for r in rows) / max(len(rows), 1):.0f}%" for s in shown)
    return f"{last.id[:24]:<24} {accs}"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
