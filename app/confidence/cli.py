"""``specrag confidence``: fit the calibrated confidence that reflection acts on, and show a fitted model.

``fit`` does the whole job in one command, resumable at every step: it draws the calibration set (held-out pool
questions, never the dev set), runs ``speculative`` (no confidence, no fallback) and ``standard`` on it through the
evaluation harness, fits the model and writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from app.cli_errors import CLIError, cli_errors, err_console

if TYPE_CHECKING:
    from app.confidence.pool import PoolSetConfig
    from app.eval.runner import QuestionRecord

DEFAULT_DIR = Path(".specrag/confidence")

confidence_app = typer.Typer(
    name="confidence",
    help=(
        "The calibrated confidence of the selected draft: P(its answer is right), from the agreement among "
        "drafts, the verifier's scores and the margin to the runner-up. Reflection accepts the draft at or above "
        "accept_confidence and otherwise falls back to the verifier reading all passages.\n\n"
        "  specrag confidence fit                       # calibration set + runs + fit (resumable)\n\n"
        "  specrag confidence show                      # the bundled model: coefficients, pool figures\n\n"
        "  specrag ask 'question' --context accept_confidence=0.6"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@confidence_app.command(
    help=(
        "Fit the confidence model: draw held-out pool questions (not trained on by the drafter's adapter, never "
        "the dev set) with retriever-like passage lists into DIR/pool.jsonl, run speculative and standard on them "
        "(DIR/run, resumable like specrag eval: interrupt and re-run), fit a logistic regression (scikit-learn) "
        "on the selected drafts' features, choose the acceptance threshold on the cross-validated curve, and "
        "write the model (--model)."
    ),
    epilog=(
        "[bold]Examples[/]\n\n"
        "  specrag confidence fit --per-source 35\n\n"
        "  specrag confidence fit --model app/confidence/specrag-confidence-v3.json --name specrag-confidence-v3\n\n"
        "  specrag confidence fit --from-run .specrag/confidence/run --system rationale-conditioned"
    ),
)
@cli_errors
def fit(
    pool: Annotated[Path | None, typer.Option(help="Training pool \\[default: SHARED/train/pool.jsonl]")] = None,
    per_source: Annotated[int, typer.Option(min=1, help="Held-out questions per pool source.")] = 35,
    out: Annotated[Path, typer.Option("--dir", help="Where the calibration set and runs go.")] = DEFAULT_DIR,
    model: Annotated[Path, typer.Option("--model", help="Where the fitted model is written.")] = DEFAULT_DIR
    / "confidence.json",
    name: Annotated[str, typer.Option(help="Model name and version (shown in traces).")] = "specrag-confidence",
    tolerance: Annotated[
        float, typer.Option(min=0.0, max=0.2, help="Accuracy the threshold may give up to accept more drafts.")
    ] = 0.01,
    features: Annotated[
        str,
        typer.Option(help="Comma-separated inputs the model reads (default: all; see specrag confidence show)."),
    ] = "",
    system: Annotated[
        str,
        typer.Option(
            help="The system whose selected drafts the model is fitted on: speculative (scored as the context says), "
            "or a re-verifying system of specrag eval (joint-scores, rationale-conditioned: the same drafts scored "
            "the other way; the model records which, and the graph refuses it under the other scoring)."
        ),
    ] = "speculative",
    from_run: Annotated[
        Path | None,
        typer.Option(
            "--from-run",
            help="Fit on an existing specrag eval run over a calibration set (a pool.jsonl written by this command, "
            "its pool.config.json beside it) instead of drawing and running one; the run must hold standard and "
            "--system.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit the confidence model (see the command help)."""
    from app.confidence.features import FEATURES, unknown_features
    from app.confidence.fit import FitError, fit_model
    from app.confidence.pool import PoolSetConfig, build_pool_set, write_pool_set
    from app.eval.confidence import rows
    from app.eval.runner import KNOB_BEFORE
    from app.eval.session import EvalOptions, evaluate
    from app.eval.systems import REVERIFICATIONS, scoring_of
    from app.settings import get_settings
    from app.tune.data import DataError
    from graphs.context import Context

    chosen = [f.strip() for f in features.split(",") if f.strip()] or list(FEATURES)
    if unknown := unknown_features(chosen):
        raise CLIError(f"unknown --features {', '.join(unknown)}; choose among {', '.join(FEATURES)}")
    if system != "speculative" and system not in REVERIFICATIONS:
        raise CLIError(f"unknown --system {system!r}; choose speculative or one of {', '.join(REVERIFICATIONS)}")
    pool = pool or get_settings().shared_dir / "train" / "pool.jsonl"
    if from_run is not None:
        run, config = from_run, _calibration_set_of(from_run)
    else:
        config = PoolSetConfig(per_source=per_source)
        dataset = out / "pool.jsonl"
        previous = dataset.with_suffix(".config.json")
        if not dataset.is_file() or not previous.is_file() or json.loads(previous.read_text()) != config.model_dump():
            err_console.print(f"drawing the calibration set ({per_source} held-out questions per source) from {pool}")
            try:
                write_pool_set(build_pool_set(pool, config), dataset, config)
            except DataError as exc:
                raise CLIError(str(exc)) from None
        run = out / "run"
        # The paper's graph, one round: no confidence model, no fallback. accept_confidence is not read without a
        # model; it is pinned so that a run resumes after the default (chosen by this very fit) changes.
        context = Context(max_rounds=1, confidence_model="none", fallback=False, accept_confidence=0.5)
        systems = ["standard", "speculative", *([system] if system != "speculative" else [])]
        evaluate(
            EvalOptions(dataset=dataset, systems=systems, out=run, context=context, progress=not quiet),
            err_console,
        )
    run_info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    run_scoring = run_info.get("context", {}).get("self_consistency_of", KNOB_BEFORE["self_consistency_of"])
    scoring = scoring_of(system, run_scoring)
    data = rows(_with_dataset_text(run, run_info), system=system)
    if not data:
        raise CLIError(f"{run} holds no question with both standard and {system}: run them first (specrag eval)")
    try:
        fitted = fit_model(
            data,
            name=name,
            features=chosen,
            tolerance=tolerance,
            about={
                "calibration_set": config.model_dump(),
                "pool": str(pool),
                "models": run_info.get("models", {}),
                "run": str(run),
                "system": system,
            },
            self_consistency_of=scoring,
        )
    except FitError as exc:
        raise CLIError(str(exc)) from None
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(fitted.model_dump_json(indent=2) + "\n", encoding="utf-8")
    _show(fitted, Console())
    err_console.print(f"wrote {model}")


@confidence_app.command(help="Show a confidence model: its features and coefficients, and how it was fitted.")
@cli_errors
def show(
    path: Annotated[Path | None, typer.Argument(help="A model file \\[default: the bundled one]")] = None,
) -> None:
    """Show a confidence model."""
    from app.confidence.model import ConfidenceModelError, load_model

    try:
        model = load_model(path or "")
    except ConfidenceModelError as exc:
        raise CLIError(str(exc)) from None
    _show(model, Console())


def _show(model: object, console: Console) -> None:
    from app.confidence.model import ConfidenceModel

    assert isinstance(model, ConfidenceModel)
    fit = model.fit
    cv = fit.get("cross_validated", {})
    nan = float("nan")
    console.print(f"[bold]{model.name}[/]  accept_confidence = {model.accept_confidence:.2f}")
    console.print(
        f"fitted on {fit.get('questions', '?')} calibration questions {fit.get('tasks', {})}: draft accuracy "
        f"{fit.get('draft_accuracy', nan):.1%}, fallback (standard) {fit.get('fallback_accuracy', nan):.1%}"
    )
    console.print(
        f"cross-validated: ECE {cv.get('ece', float('nan')):.3f}, AUROC {cv.get('auroc') or float('nan'):.3f}, "
        f"Brier {cv.get('brier', float('nan')):.3f}"
    )
    point = fit.get("chosen_point", {})
    if point:
        console.print(
            f"chosen point: accuracy {point['accuracy']:.1%}, {point['accepted']:.0%} of drafts accepted, "
            f"mean {point['mean_seconds']:.1f} s ({fit.get('threshold_rule', '')})"
        )
    for feature, coef, mean, scale in zip(model.features, model.coef, model.mean, model.scale, strict=True):
        console.print(f"  {feature:16s} coef {coef:+.3f}  (mean {mean:.3f}, sd {scale:.3f})")
    console.print(f"  {'intercept':16s} {model.intercept:+.3f}")


def _with_dataset_text(run: Path, run_info: dict[str, Any]) -> list[QuestionRecord]:
    """The run's records, with the dataset's text restored where a record lacks it (a copy exported without it,
    ``app.eval.export``): the question and the passages its drafts read are inputs of the model (``question_words``,
    ``supported``), so fitting on a data-free copy would fit them on zeros.

    Raises:
        CLIError: Some record lacks the text and the run's dataset is not there to restore it from.
    """
    from app.eval.dataset import load_questions
    from app.eval.export import with_dataset_text
    from app.eval.runner import RESULTS, load_records

    records = load_records(run / RESULTS)
    if all(r.question and r.passages for r in records.values()):
        return list(records.values())
    dataset = Path(str(run_info.get("dataset", "")))
    if not dataset.is_file():
        raise CLIError(
            f"{run} holds records without the dataset's text (an exported copy) and its dataset {dataset} is not "
            "there to restore it from; point run.json's dataset at the calibration set"
        )
    return list(with_dataset_text(records, load_questions(dataset)).values())


def _calibration_set_of(run: Path) -> PoolSetConfig:
    """The calibration set an eval run was made on (its dataset's pool.config.json), refusing anything else.

    Raises:
        CLIError: ``run`` is no eval run, or its dataset is not a calibration set written by ``fit`` (the dev set
            never is: a model fitted there would be judged on what it was fitted on).
    """
    from app.confidence.pool import PoolSetConfig
    from app.tune.data import DataError, check_input_path

    info = run / "run.json"
    if not info.is_file():
        raise CLIError(f"--from-run {run}: no run.json there (not a specrag eval run)")
    dataset = Path(json.loads(info.read_text(encoding="utf-8")).get("dataset", ""))
    try:
        check_input_path(dataset)
    except DataError as exc:
        raise CLIError(str(exc)) from None
    config = dataset.with_suffix(".config.json")
    if not config.is_file():
        raise CLIError(f"--from-run {run}: {dataset} has no {config.name} beside it (not a calibration set)")
    return PoolSetConfig.model_validate_json(config.read_text(encoding="utf-8"))
