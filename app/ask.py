"""Running a graph for one question and rendering the result (used by ``specrag ask``).

An entry-point module: it imports ``graphs`` to run them, which the rest of ``app`` never does (``app.trace``,
which records runs, excepted). Every run leaves a trace (``specrag trace RUN_ID``).
"""

from __future__ import annotations

from typing import Literal

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from app.confidence.features import task_terms
from app.llm.protocol import ContextOverflowError
from app.trace.capture import run_traced
from app.trace.store import TraceStore, open_trace_store
from graphs import speculative_rag, standard_rag
from graphs.backends import BackendProvider, configured_backends
from graphs.context import Context
from graphs.question import with_choices
from graphs.result import ConfidenceOut, RunResult
from graphs.state import InputState

GraphName = Literal["speculative", "standard"]

# Tokens kept free for passages and the drafter's answer when checking that a question fits.
_RESERVED_TOKENS = 512


class BadQuestionError(ValueError):
    """The question is empty or cannot fit the models' context windows."""


def check_question(
    question: str, context: Context, graph: GraphName, provider: BackendProvider = configured_backends
) -> None:
    """Fail fast on an empty question, a missing store, or a question too long for the context window."""
    if not question.strip():
        raise BadQuestionError("the question is empty")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: a JSON "\ud800" escape, or argv bytes that are not UTF-8
        raise BadQuestionError(
            f"the question is not valid Unicode text (a lone surrogate at character {exc.start})"
        ) from None
    backends = provider(context)
    _ = backends.store  # raises StoreNotFoundError before any model is loaded
    models = [backends.verifier] if graph == "standard" else [backends.drafter, backends.verifier]
    from graphs import prompting

    probe = prompting.load("verifier").chat(question=question)
    for model in models:
        n = model.count_tokens(probe)
        if n + _RESERVED_TOKENS > model.context_window:
            raise ContextOverflowError(
                f"the question is too long: {n} tokens, but {model.name}'s context window is "
                f"{model.context_window} tokens and {_RESERVED_TOKENS} are needed for passages and the answer"
            )


def run(
    question: str,
    context: Context,
    graph: GraphName = "speculative",
    *,
    traces: TraceStore | None = None,
    run_id: str = "",
    thread_id: str | None = None,
    provider: BackendProvider | None = None,
    choices: dict[str, str] | None = None,
) -> RunResult:
    """Run one question through a graph and save the run's trace.

    Args:
        question: The question.
        context: Per-run knobs.
        graph: Which graph.
        traces: Where the trace goes (default: the SQLite file at ``SPECRAG_TRACES__PATH``).
        run_id: The run id (32 hex digits; a fresh one when empty).
        thread_id: Recorded with the trace.
        provider: Backends (default: from settings; tests pass fakes).
        choices: Multiple choice: letter -> text; the models read the question with them and drafts answer a letter.

    Returns:
        The result, with ``run_id`` set when the trace was saved.

    Raises:
        BadQuestionError, ContextOverflowError, StoreNotFoundError: Before the run starts (no trace).
        Exception: Whatever the graph raised, after its partial trace was saved (the exception carries a note
            with the run id).
    """
    check_question(question, context, graph, provider or configured_backends)
    asked = with_choices(question.strip(), choices)
    store = traces if traces is not None else open_trace_store()
    module = speculative_rag if graph == "speculative" else standard_rag
    compiled = module.make_graph() if provider is None else module.build(provider).compile(name=f"{graph}_rag")
    given = InputState(question=asked, choices=dict(choices or {}))
    trace = run_traced(compiled, asked, context, traces=store, run_id=run_id, thread_id=thread_id, input=given)
    assert trace.result is not None
    return trace.result


def parse_choices(options: list[str]) -> dict[str, str]:
    """``--choice`` values (``LETTER=TEXT``) as letter -> text, in order.

    Raises:
        BadQuestionError: A value without ``=``, an empty or repeated letter, an empty text, or a single choice.
    """
    choices: dict[str, str] = {}
    for option in options:
        letter, sep, text = option.partition("=")
        letter, text = letter.strip(), text.strip()
        if not sep or not letter or not text or len(letter) > 3 or " " in letter:
            raise BadQuestionError(f"--choice {option!r}: expected LETTER=TEXT, e.g. --choice B='carbon dioxide'")
        if letter in choices:
            raise BadQuestionError(f"--choice: letter {letter!r} is given twice")
        choices[letter] = text
    if len(choices) == 1:
        raise BadQuestionError("--choice: a multiple-choice question needs at least two choices")
    return choices


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render(result: RunResult, console: Console) -> None:
    """Answer, rationale, sources, the drafts table and the reflection rounds, for a terminal."""
    body = Group(Text(result.answer or "(no answer)", style="bold"), Text(result.rationale, style="dim"))
    how = " · fallback: the verifier read all passages" if result.decision == "fallback" else ""
    console.print(Panel(body, title=f"Answer ({result.graph}{how})", title_align="left"))
    if result.sources:
        console.print(Text("Sources: " + "; ".join(f"[{s.id[:8]}] {s.title}" for s in result.sources)))
    if result.drafts:
        console.print(_drafts_table(result, console.width))
    for r in result.rounds:
        console.print(Text(f"Round {r.index + 1} ({r.query}): {r.decision}. {r.reason}"))
    if result.confidence is not None:
        console.print(_confidence_line(result.confidence))
    walls = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    console.print(Text(f"Time: {result.seconds:.2f}s ({walls})"))
    if result.run_id:
        console.print(Text(f"run id: {result.run_id} (specrag trace {result.run_id})"))


def _confidence_line(c: ConfidenceOut) -> Text:
    """The confidence, its inputs and what moved it most (the logit terms, largest first)."""
    if c.draft is None:
        return Text(f"Confidence: {c.value:.2f} (no draft answered; {c.model})")
    inputs = ", ".join(f"{k} {v:.2f}" for k, v in c.inputs.items())
    mcq = c.inputs.get("mcq") == 1.0
    task = f"task ({'multiple choice' if mcq else 'short answer'})"
    moved = sorted(task_terms(c.contributions, mcq=mcq).items(), key=lambda kv: -abs(kv[1]))[:3]
    terms = ", ".join(f"{task if k == 'task' else k} {v:+.2f}" for k, v in moved)
    return Text(
        f"Confidence: {c.value:.2f} that draft #{c.draft} is right "
        f"({'only it gives its answer' if c.votes == 1 else f'{c.votes} drafts agree'}; {c.model}). "
        f"Inputs: {inputs}. Largest logit terms: {terms}."
    )


def _threshold(rule: str) -> str:
    """'0.8' of 'threshold 0.8'."""
    return rule.removeprefix("threshold ").strip()


def _drafts_table(result: RunResult, width: int) -> Table:
    """The drafts with their scores; the answer column takes what the number columns leave of ``width``."""
    table = Table(
        title="Drafts: natural-log scores, total = ρ_draft + ρ_sc + ρ_sr (★ chosen; abstentions are not verified)",
        title_justify="left",
    )
    fixed: list[tuple[str, int]] = [("#", 3)]
    if len(result.rounds) > 1:
        fixed.append(("round", 5))
    numbers = [(col, max(len(col), 7)) for col in ["ρ_draft", "ρ_sc", "ρ_sr", "P(Yes)", "total", "tokens"]]
    # Each column costs its width plus 3 (padding and border); the table adds one closing border.
    answer_width = max(12, width - sum(w + 3 for _, w in [*fixed, *numbers]) - 3 - 1)
    for col, w in fixed:
        table.add_column(col, justify="right", no_wrap=True, min_width=w)
    table.add_column("answer", no_wrap=True, width=answer_width)
    for col, w in numbers:
        table.add_column(col, justify="right", no_wrap=True, min_width=w)
    for i, d in enumerate(result.drafts):
        s = d.scores
        answer = " ".join(d.answer.split())
        if d.outcome == "abstain":
            sure = f", P {d.abstain_prob:.2f} > {_threshold(d.abstain_rule)}" if d.abstain_prob is not None else ""
            answer = f"(abstained{sure}: not in its passages)"
        elif d.outcome == "unparsed":
            answer = f"(unparsed) {answer}"
        if d.answer_forced and d.abstain_prob is not None:
            answer = f"{answer} (made to answer: P(abstain) {d.abstain_prob:.2f})"
        cells = [f"{'★' if i == result.chosen else ''}{i}"]
        if len(result.rounds) > 1:
            cells.append(str(d.round + 1))
        cells += [
            answer if len(answer) <= answer_width else answer[: answer_width - 1] + "…",
            _fmt(s.draft if s else d.draft_logprob if d.outcome != "abstain" else None, 1),
            _fmt(s.self_consistency if s else None, 1),
            _fmt(s.self_reflection if s else None, 3),
            _fmt(s.p_yes if s else None, 3),
            _fmt(s.total if s else None, 1),
            str(d.tokens.draft),
        ]
        table.add_row(*cells, style="bold green" if i == result.chosen else None)
    return table
