"""``specrag tune``: build drafting examples, train a LoRA adapter on the drafter, convert it for llama.cpp, check it.

Heavy imports (torch, transformers, peft) happen inside the commands, so ``specrag --help`` stays fast and the
rest of the CLI works without the ``tune`` extra.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, cast, get_args

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.cli_errors import CLIError, cli_errors, err_console

DEFAULT_DIR = Path(".specrag/tune")

tune_app = typer.Typer(
    name="tune",
    help=(
        "Tune the drafter: build drafting examples from the shared training pool, train a LoRA adapter on the CPU, "
        "convert it to a GGUF LoRA for llama.cpp, and check it.\n\n"
        "Needs the [bold]tune[/] extra (pip install -e '.\\[tune]'). The usual order:\n\n"
        "  specrag tune data                      # .specrag/tune/data/examples.jsonl + data card\n\n"
        "  specrag tune train --max-examples 400  # .specrag/tune/run/ (resumable: --resume)\n\n"
        "  specrag tune convert .specrag/tune/run # adapter.gguf + .sha256\n\n"
        "  specrag tune check --unseen .specrag/tune/run --save check.json   # drafts on untrained pool questions\n\n"
        "  specrag tune ship .specrag/tune/run --check check.json            # adapters/NAME/ + model card\n\n"
        "  SPECRAG_DRAFTER__LORA=.specrag/tune/run/adapter.gguf specrag ask ..."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _shared_dir() -> Path:
    from app.settings import get_settings

    return get_settings().shared_dir


def _base_path(base: str) -> Path:
    from app.models import resolve_model
    from app.settings import get_settings

    return resolve_model(base, get_settings().model_cache)


@tune_app.command(
    "data",
    help=(
        "Build drafting examples from the training pool the way the graph drafts: each question gets distractor "
        "passages from other pool questions of the same source (nearest by the embedder), the passages are "
        "clustered and sampled into k-passage subsets as `partition` does, and each chosen subset becomes one "
        "example whose target is a rationale and answer, or the abstention when the subset lacks the answer "
        "(never for multiple choice). Writes examples.jsonl, data_card.json and data_card.md into --out. "
        "Deterministic for a seed. Refuses any path under eval/dev."
    ),
)
@cli_errors
def data(
    pool: Annotated[
        Path | None,
        typer.Option("--pool", help="Pool JSONL \\[default: SPECRAG_SHARED_DIR/train/pool.jsonl]", show_default=False),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = DEFAULT_DIR / "data",
    per_source: Annotated[int, typer.Option("--per-source", min=1, help="Pool questions per source.")] = 240,
    reservoir: Annotated[
        int, typer.Option("--reservoir", min=1, help="Other questions per source that may give distractors.")
    ] = 400,
    seed: Annotated[int, typer.Option(help="Seed of selection, distractors, clustering and subsets.")] = 0,
    rationale: Annotated[
        str,
        typer.Option(
            "--rationale",
            help="extract: the passage sentences that hold the answer; teacher: written by the verifier model "
            "(SPECRAG_VERIFIER__*; a server model is one setting away), given the gold answer; mixed: extract, and "
            "the teacher for the multiple-choice examples no passage sentence supports (the teacher's cost only "
            "where extraction fails).",
        ),
    ] = "extract",
    max_passage_words: Annotated[
        int, typer.Option("--max-passage-words", min=20, help="Passages are cut to this many words.")
    ] = 110,
    abstain_cap: Annotated[
        float, typer.Option("--abstain-cap", min=0.0, max=1.0, help="Largest share of abstentions.")
    ] = 0.15,
    abstain_cap_of: Annotated[
        str,
        typer.Option(
            "--abstain-cap-of",
            help="What --abstain-cap is a share of: short_answers (the examples that may abstain) or all (every "
            "example, multiple choice included: how the v2 and v3 data were built).",
        ),
    ] = "short_answers",
    fallback_cap: Annotated[
        float,
        typer.Option(
            "--mcq-fallback-cap",
            min=0.0,
            max=1.0,
            help="Largest share of multiple-choice examples whose rationale only names the gold choice (no passage "
            "sentence supports it).",
        ),
    ] = 0.3,
    answer_lead: Annotated[
        str,
        typer.Option(
            "--answer-lead",
            help="Opening of every answer rationale, so that answering or abstaining ('The documents do not ...') "
            "is one token's decision; '' for none.",
        ),
    ] = "The documents say:",
    teacher_cache: Annotated[
        Path | None,
        typer.Option(
            "--teacher-cache",
            help="The teacher's replies, appended as they come (default: --out/teacher_cache.jsonl): an "
            "interrupted build resumes from it, and a rebuild with it asks the teacher nothing again.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Build drafting examples (see the command help)."""
    from app.embed.factory import get_embedder
    from app.tune.data import (
        AbstainCapOf,
        DataConfig,
        DataError,
        ExtractRationaler,
        MixedRationaler,
        Rationaler,
        RationaleSource,
        TeacherRationaler,
        build_examples,
        load_pool,
        write_examples,
    )

    if rationale not in get_args(RationaleSource):
        raise CLIError(f"--rationale must be one of {', '.join(get_args(RationaleSource))}, not {rationale!r}")
    if abstain_cap_of not in get_args(AbstainCapOf):
        raise CLIError(f"--abstain-cap-of must be one of {', '.join(get_args(AbstainCapOf))}, not {abstain_cap_of!r}")
    path = pool if pool is not None else _shared_dir() / "train" / "pool.jsonl"
    try:
        questions = load_pool(path)
        config = DataConfig(
            seed=seed,
            questions_per_source=per_source,
            distractor_reservoir=reservoir,
            max_passage_words=max_passage_words,
            abstain_cap=abstain_cap,
            abstain_cap_of=cast(AbstainCapOf, abstain_cap_of),
            mcq_fallback_cap=fallback_cap,
            answer_lead=answer_lead,
            rationale=cast(RationaleSource, rationale),
        )
        writer: Rationaler | None = None
        if rationale != "extract":
            from app.llm.factory import make_llm
            from app.settings import get_settings

            settings = get_settings()
            llm = make_llm(settings.verifier, threads=settings.llm_threads, cache_dir=settings.model_cache)
            cache = teacher_cache if teacher_cache is not None else out / "teacher_cache.jsonl"
            cache.parent.mkdir(parents=True, exist_ok=True)
            teacher = TeacherRationaler(llm, config.max_rationale_words, cache=cache)
            if teacher.replies:
                err_console.print(f"{len(teacher.replies)} teacher replies reused from {escape(str(cache))}")
            writer = (
                teacher
                if rationale == "teacher"
                else MixedRationaler(ExtractRationaler(config.max_rationale_words), teacher)
            )
        sources = {q.id.split("-", 1)[0] for q in questions}
        with _progress() as progress:
            task = progress.add_task("questions", total=per_source * len(sources), info="", visible=not quiet)

            def note(message: str) -> None:
                if not quiet:
                    progress.console.print(escape(message))

            examples, card = build_examples(
                questions,
                get_embedder(),
                config,
                rationaler=writer,
                pool_path=str(path),
                progress=note,
                step=lambda: progress.advance(task),
            )
        written = write_examples(examples, card, out)
    except DataError as exc:
        raise CLIError(str(exc)) from None
    err_console.print(
        f"{card.examples} examples ({card.answer} answers, {card.abstain} abstentions) -> {escape(str(written))}"
    )


@tune_app.command(
    "train",
    help=(
        "Train a LoRA adapter on the drafter from its GGUF (transformers' GGUF loader + peft), loss on the target "
        "tokens only, AdamW with warmup and cosine decay, batch 1. Writes into --out: config.json, checkpoint.pt "
        "(every --checkpoint-every steps), loss.jsonl, loss_curve.png, summary.json and, when done, adapter/ "
        "(peft). Interrupt it at any time and continue exactly with --resume (same options)."
    ),
)
@cli_errors
def train_cmd(
    examples: Annotated[Path, typer.Option("--examples", help="examples.jsonl.")] = DEFAULT_DIR
    / "data"
    / "examples.jsonl",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = DEFAULT_DIR / "run",
    base: Annotated[
        str, typer.Option("--base", help="Base GGUF: packaged model name or path.")
    ] = "qwen2.5-coder-0.5b-instruct",
    max_examples: Annotated[
        int | None, typer.Option("--max-examples", min=1, help="Use the first N examples of the seeded order.")
    ] = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the examples.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    rank: Annotated[int, typer.Option("--rank", "-r", min=1, help="LoRA rank.")] = 16,
    layers: Annotated[
        int | None, typer.Option("--layers", min=1, help="LoRA on the last N layers only (default: all).")
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16-autocast or bf16 (frozen base in bf16).")] = "fp32",
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Examples per optimizer step.")] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=32, help="Skip longer examples.")] = 640,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Steps per checkpoint.")] = 25,
    seed: Annotated[int, typer.Option(help="Seed of data order, LoRA init and dropout.")] = 0,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    stop_after: Annotated[
        int | None, typer.Option("--stop-after", min=1, help="Stop after N steps in this call (checkpointed).")
    ] = None,
    total_steps: Annotated[
        int | None,
        typer.Option(
            "--total-steps",
            min=1,
            help="With --resume: shorten the run to N steps (same data order; the learning rate decays over the new "
            "horizon from here on; recorded in horizon.json).",
        ),
    ] = None,
) -> None:
    """Train a LoRA adapter (see the command help)."""
    from pydantic import ValidationError

    from app.tune.data import DataError, read_examples
    from app.tune.train import TrainConfig, TuneError, train

    if precision not in ("fp32", "bf16-autocast", "bf16"):
        raise CLIError(f"--precision must be fp32, bf16-autocast or bf16, not {precision!r}")
    try:
        config = TrainConfig(
            base=base,
            examples=str(examples),
            max_examples=max_examples,
            epochs=epochs,
            lr=lr,
            rank=rank,
            alpha=2 * rank,
            layers=layers,
            precision=precision,
            grad_accum=grad_accum,
            max_tokens=max_tokens,
            checkpoint_every=checkpoint_every,
            seed=seed,
            threads=threads,
        )
    except ValidationError as exc:
        raise CLIError(f"bad option: {exc.errors()[0]['msg']}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("specrag.tune")
    try:
        rows = read_examples(examples)
        base_path = _base_path(base)
        err_console.print(f"loading {escape(str(base_path))} (dequantised to fp32) ...")
        with _progress() as progress:
            task = progress.add_task("training", total=None, info="")
            losses: list[float] = []
            started = time.perf_counter()

            def on_start(done: int, total: int) -> None:
                progress.update(task, total=total, completed=done)

            def on_step(step: int, total: int, loss: float, seconds: float) -> None:
                losses.append(loss)
                recent = losses[-20:]
                progress.update(
                    task, completed=step, info=f"loss {loss:.3f} (avg20 {sum(recent) / len(recent):.3f}) {seconds:.1f}s"
                )
                if step % 10 == 0 or step == total:
                    log.info(
                        "step %d/%d loss %.4f avg20 %.4f %.1f s/step, %.0f s this session",
                        step,
                        total,
                        loss,
                        sum(recent) / len(recent),
                        seconds,
                        time.perf_counter() - started,
                    )

            summary = train(
                config,
                out,
                base_path=base_path,
                examples=rows,
                resume=resume,
                stop_after=stop_after,
                total_steps=total_steps,
                on_start=on_start,
                on_step=on_step,
            )
    except (DataError, TuneError) as exc:
        raise CLIError(str(exc)) from None
    state = "done" if summary.steps == summary.total_steps else "stopped (continue with --resume)"
    err_console.print(
        f"{state}: {summary.steps}/{summary.total_steps} steps, {summary.seconds_per_step:.1f} s/step, "
        f"loss {summary.first_loss:.3f} -> {summary.final_loss:.3f}; {escape(str(out))}"
    )


@tune_app.command(
    "convert",
    help=(
        "Convert a finished run's peft adapter to a GGUF LoRA adapter with the converter of the llama-cpp-python "
        "sdist (fetched once with pip into .specrag/tune/sdist), and write its sha256 beside it (<file>.sha256, "
        "which the llamacpp backend checks at load)."
    ),
)
@cli_errors
def convert_cmd(
    run: Annotated[Path, typer.Argument(help="The run directory (specrag tune train --out).", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="GGUF file \\[default: RUN/adapter.gguf]", show_default=False)
    ] = None,
    outtype: Annotated[str, typer.Option(help="f16, f32, bf16 or q8_0.")] = "f16",
    from_checkpoint: Annotated[
        bool,
        typer.Option(
            "--from-checkpoint", help="Convert the latest checkpoint (a stopped or unfinished run) instead of adapter/."
        ),
    ] = False,
) -> None:
    """Convert an adapter (see the command help)."""
    from app.tune.convert import ConvertError, convert
    from app.tune.train import TuneError, export_checkpoint

    if outtype not in ("f16", "f32", "bf16", "q8_0"):
        raise CLIError(f"--outtype must be f16, f32, bf16 or q8_0, not {outtype!r}")
    if not (run / "base_config.json").is_file():
        raise CLIError(f"{run} is not a training run (no base_config.json)")
    try:
        adapter = export_checkpoint(run) if from_checkpoint else run / "adapter"
        default = run / (f"{adapter.name}.gguf" if from_checkpoint else "adapter.gguf")
        target = out if out is not None else default
        done = convert(adapter, run / "base_config.json", target, cache_dir=DEFAULT_DIR, outtype=outtype)
    except (ConvertError, TuneError) as exc:
        raise CLIError(str(exc)) from None
    err_console.print(f"{escape(done.path)}: {done.size / 1e6:.1f} MB, sha256 {done.sha256}")


@tune_app.command(
    "check",
    help=(
        "Check a tuned drafter on examples: that training tokenised them exactly as the llama.cpp backend does "
        "(--tokens), and what the drafter writes for the first N (greedy, through the backend, with the adapter "
        "of SPECRAG_DRAFTER__LORA or --lora): whether replies follow the `Rationale: ... Answer: ...` format and "
        "abstain where the subset lacks the answer."
    ),
)
@cli_errors
def check_cmd(
    examples: Annotated[Path, typer.Option("--examples", help="examples.jsonl.")] = DEFAULT_DIR
    / "data"
    / "examples.jsonl",
    n: Annotated[int, typer.Option("--n", "-n", min=0, help="Examples to draft (0: only the token check).")] = 5,
    lora: Annotated[
        str | None, typer.Option("--lora", help="Adapter (name or path) \\[default: SPECRAG_DRAFTER__LORA]")
    ] = None,
    tokens: Annotated[int, typer.Option("--tokens", min=0, help="Examples whose tokenisation to compare.")] = 20,
    unseen: Annotated[
        Path | None,
        typer.Option(
            "--unseen",
            help="A run directory: draft only examples of questions that run never trained on (its loss.jsonl).",
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Write the results as JSON here.", show_default=False)
    ] = None,
    abstain_threshold: Annotated[
        float | None,
        typer.Option(
            "--abstain-threshold",
            min=0.5,
            max=1.0,
            help="Draft as the graph does with this abstention threshold (the adapter's answer lead from its data "
            "card) \\[default: greedy]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a drafter (see the command help)."""
    from app.llm.factory import make_llm
    from app.settings import get_settings
    from app.tune.check import balanced_sample, compare_tokenisation, sample_drafts, trained_questions
    from app.tune.data import DataError, read_examples

    settings = get_settings()
    try:
        rows = read_examples(examples)
    except DataError as exc:
        raise CLIError(str(exc)) from None
    drafter = settings.drafter.model_copy(update={"lora": lora} if lora is not None else {})
    if tokens:
        result = compare_tokenisation(_base_path(drafter.model), rows[:tokens], threads=settings.llm_threads)
        err_console.print(
            f"tokenisation: {result.examples} examples, {result.tokens} tokens, {result.mismatches} mismatches"
            + (f" (first: {result.first.model_dump_json()})" if result.first else "")
        )
    if n == 0:
        return
    pool = rows
    if unseen is not None:
        trained = trained_questions(unseen)
        if not trained:
            raise CLIError(f"{unseen} has no loss.jsonl with trained examples")
        pool = [r for r in rows if r.question_id not in trained]
    sample = balanced_sample(pool, n)
    llm = make_llm(drafter, threads=settings.llm_threads, cache_dir=settings.model_cache)
    err_console.print(f"drafter: {escape(llm.name)}")
    from app.models import answer_lead

    lead = answer_lead(drafter)
    if abstain_threshold is not None and not lead:
        raise CLIError(f"--abstain-threshold: the drafter {llm.name} has no answer lead (no data card with one)")
    drafts = sample_drafts(llm, sample, lead=lead, threshold=abstain_threshold)
    for d in drafts:
        err_console.print(
            f"[bold]{escape(d.example_id)}[/] expected {d.expected_outcome} {escape(d.expected_answer)!r}; "
            f"got {d.outcome} {escape(d.answer)!r} ({'ok' if d.correct else 'wrong'})"
            + (
                f" [P(abstain) {d.abstain_prob:.2f}{', made to answer' if d.answer_forced else ''}]"
                if d.abstain_prob is not None
                else ""
            )
            + f"\n  {escape(d.reply.strip())}"
        )
    ok = sum(d.follows_format for d in drafts)
    err_console.print(f"{ok}/{len(drafts)} follow the reply format, {sum(d.correct for d in drafts)} correct")
    if save is not None:
        import json

        save.write_text(
            json.dumps(
                {
                    "drafter": llm.name,
                    "abstain_threshold": abstain_threshold,
                    "tokens": result.model_dump() if tokens else None,
                    "drafts": [d.model_dump() for d in drafts],
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
            encoding="utf-8",
        )


@tune_app.command(
    "ship",
    help=(
        "Put a converted adapter into adapters/NAME/ with its model card (README.md), the data card, the loss curve "
        "and the training summary, from a finished run; with --check, the results of `specrag tune check --save` go "
        "into the card. Prints the registry entry to add to app/models.py."
    ),
)
@cli_errors
def ship_cmd(
    run: Annotated[Path, typer.Argument(help="The run directory.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Adapter name.")] = "specrag-drafter-v1",
    data_dir: Annotated[Path, typer.Option("--data", help="The data directory (data_card.json).")] = DEFAULT_DIR
    / "data",
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="GGUF adapter \\[default: RUN/adapter.gguf]", show_default=False)
    ] = None,
    check: Annotated[
        Path | None, typer.Option("--check", help="JSON from `specrag tune check --save`.", show_default=False)
    ] = None,
    dest: Annotated[Path, typer.Option("--dest", help="Where adapters live.")] = Path("adapters"),
    note: Annotated[list[str] | None, typer.Option("--note", help="A line for the card's notes (repeatable).")] = None,
) -> None:
    """Ship an adapter (see the command help)."""
    import json

    from app.models import sha256_file
    from app.tune.card import ship
    from app.tune.check import SampleDraft, TokenCheck
    from app.tune.convert import Converted

    path = adapter if adapter is not None else run / "adapter.gguf"
    if not path.is_file() or not (run / "summary.json").is_file():
        raise CLIError(f"{run} has no finished, converted run (summary.json and {path.name}); run `tune convert`")
    converted = Converted(path=str(path), sha256=sha256_file(path), size=path.stat().st_size)
    tokens_check: TokenCheck | None = None
    drafts: list[SampleDraft] | None = None
    if check is not None:
        found = json.loads(check.read_text(encoding="utf-8"))
        tokens_check = TokenCheck.model_validate(found["tokens"]) if found.get("tokens") else None
        drafts = [SampleDraft.model_validate(d) for d in found.get("drafts", [])]
    info = ship(
        name, run, data_dir, converted, dest_root=dest, tokens=tokens_check, drafts=drafts, notes=list(note or [])
    )
    err_console.print(f"wrote {escape(info.directory)}; registry entry for app/models.py:")
    err_console.print(
        escape(
            f'PackagedAdapter(name="{name}", base="{info.base}", sha256="{converted.sha256}", size={converted.size:_})'
        )
    )
