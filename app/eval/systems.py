"""The systems an evaluation compares, all on the same questions, passages and models.

Generating systems run models:

* ``standard``: one answer from all top-n passages by the verifier-size model (In-Context RALM, the paper's
  baseline): the ``standard_rag`` graph.
* ``speculative``: the full ``speculative_rag`` graph (k-means subsets, drafts, verification), as in the paper:
  the best draft is the answer (``fallback`` off).
* ``speculative+reflect``: the default graph: the same, but reflection falls back to the verifier reading all
  passages when the best draft's calibrated confidence is below ``accept_confidence``.
* ``random-subsets``: the same graph with random subsets instead of clustered ones (``partition='random'``).
* ``speculative+compress`` and ``standard+compress``: the two graphs with the ``compress`` step on (the same
  compressed passages for both, so the comparison stays fair): ``compress`` for the drafts, ``compress_answer``
  for standard's answer.
* ``speculative-base``: the same graph with the base drafter (the drafter model without its tuned adapter):
  task-aware prompts alone, what tuning adds is ``speculative`` minus this.
* ``speculative-verifier-drafts``: the same graph with the verifier model writing the drafts (a reference: what
  a drafter as large as the verifier would give, at its cost).
* ``replug``: a REPLUG-style ensemble by the verifier-size model: one answer per passage, then the answer that
  maximises Σ_d λ_d · P(answer | d, question), with λ the softmax of the retriever scores (uniform when the source
  gives none) and P teacher-forced for every (passage, candidate) pair.

Re-verifying systems score the drafts that ``speculative`` wrote again with the verifier under another scoring
setting (``joint-scores``: ρ_sc = P(answer, rationale | question), the paper's; ``rationale-conditioned``: ρ_sc =
P(answer | question, rationale)) and pick the best; the drafts are not regenerated.

Selection systems re-rank the drafts that ``speculative`` wrote and scored, generating nothing: ``no-verifier``
(a random draft), ``drafter-only`` (best ρ_draft), ``no-draft-score`` / ``no-self-consistency`` /
``no-self-reflection`` (one term removed), ``raw-scores`` and ``length-normalised`` (per-token means of ρ_draft and
ρ_sc). Their latency is the speculative run's, without the ``verify`` node when they use no verifier score.

An entry-point module: it runs graphs (as ``app.ask`` does).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.confidence.features import Belief, ClosedBook, DraftSignal, OpenBook, answer_key, vote_order
from app.confidence.model import ConfidenceModelError, SelfConsistencyOf, load_model
from app.embed.protocol import Embedder
from app.eval.metrics import parse_choice
from app.eval.passages import PassagePool
from app.llm.metered import MeteredModel, Usage
from app.llm.protocol import ScoreRequest
from app.trace.capture import one_line, run_traced
from app.trace.store import TraceStore
from graphs import prompting, speculative_rag, standard_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.drafting import Titled, format_passages
from graphs.result import ConfidenceOut, DraftOut
from graphs.scoring import self_reflection, total
from graphs.state import InputState
from graphs.verification import closed_book, open_book, score_requests

REPLUG_CANDIDATES = 5
"""Distinct answers REPLUG ensembles at most (the most probable under their own passage)."""


class ModelUsage(BaseModel):
    """What one model spent on one question."""

    calls: int = Field(description="Requests: prompts generated, continuations scored")
    prompt_tokens: int = Field(description="Prompt tokens the requests carried")
    generated_tokens: int
    seconds: float = Field(description="Wall time with a request in flight")

    @classmethod
    def of(cls, usage: Usage) -> ModelUsage:
        return cls(
            calls=usage.calls,
            prompt_tokens=usage.prompt_tokens,
            generated_tokens=usage.generated_tokens,
            seconds=round(usage.busy_seconds, 4),
        )


class DraftRecord(BaseModel):
    """One scored draft, kept for audit and for the selection systems (natural-log scores; None if not finite)."""

    round: int = Field(description="Retrieval round (0-based)")
    answer: str
    rationale: str
    passages: list[int] = Field(description="Indices into the question's passage pool")
    parsed: bool
    outcome: str = Field("answer", description="answer, abstain (not verified, never selected) or unparsed")
    letter: str | None = Field(None, description="Multiple choice: the choice letter the answer names")
    choice_shift: int = Field(0, description="Multiple choice: places the drafter saw the choices rotated (0: none)")
    abstain_prob: float | None = Field(
        None, description="Under an abstention threshold: the drafter's P(abstention word) when it chose to abstain"
    )
    answer_forced: bool = Field(False, description="Chose to abstain at or below the threshold; made to answer")
    draft: float | None
    draft_tokens: int
    self_consistency: float | None
    self_consistency_tokens: int
    self_reflection: float | None
    total: float | None
    prompt_tokens: int


class Candidate(BaseModel):
    """A REPLUG candidate answer and its ensemble probability."""

    answer: str
    probability: float


class SystemResult(BaseModel):
    """One system's outcome on one question."""

    answer: str = ""
    rationale: str = ""
    chosen: int | None = Field(None, description="Index into drafts of the selected draft")
    seconds: float = Field(0.0, description="Wall seconds to answer this question")
    timings: dict[str, float] = Field(default_factory=dict, description="Wall seconds per node or phase")
    usage: dict[str, ModelUsage] = Field(default_factory=dict, description="Per model role: drafter, verifier")
    drafts: list[DraftRecord] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list, description="replug: the ensembled answers")
    run_id: str | None = Field(None, description="Trace id in the run's traces.sqlite (specrag trace --traces)")
    decision: str | None = Field(None, description="Speculative graphs: reflection's last decision")
    confidence: float | None = Field(None, description="Speculative graphs: the best draft's confidence (if computed)")
    closed_book: ClosedBook | None = Field(
        None,
        description="Re-verifying systems, and speculative graphs whose confidence model reads it: the verifier's "
        "closed-book belief in the selected answer",
    )
    open_book: OpenBook | None = Field(
        None,
        description="Re-verifying systems, and speculative graphs whose confidence model reads it: the verifier's "
        "belief in the selected answer after reading the selected draft's passages",
    )
    derived_from: str | None = Field(None, description="Selection systems: the system whose drafts they re-rank")
    reused_from: str | None = Field(
        None, description="Copied from this earlier run (--reuse-from): measured there, latency included"
    )
    error: str | None = None
    correct: bool = False
    f1: float = 0.0
    choice: str | None = Field(None, description="Multiple choice: the letter read from the answer")

    @property
    def prompt_tokens(self) -> int:
        return sum(u.prompt_tokens for u in self.usage.values())

    @property
    def generated_tokens(self) -> int:
        return sum(u.generated_tokens for u in self.usage.values())

    @property
    def calls(self) -> int:
        return sum(u.calls for u in self.usage.values())


@dataclass(frozen=True, kw_only=True)
class Selection:
    """A selection system: how it picks among the speculative drafts."""

    description: str
    changes: dict[str, Any] = field(default_factory=dict)
    """Context fields that differ from the run's (which score terms, which normalisation)."""
    uses_verifier: bool = True
    random: bool = False


SELECTIONS: dict[str, Selection] = {
    "no-verifier": Selection(description="a random draft (no verification)", uses_verifier=False, random=True),
    "drafter-only": Selection(
        description="best ρ_draft alone",
        changes={"use_self_consistency": False, "use_self_reflection": False, "use_draft_score": True},
        uses_verifier=False,
    ),
    "no-draft-score": Selection(description="ρ_sc · ρ_sr (ρ_draft removed)", changes={"use_draft_score": False}),
    "no-self-consistency": Selection(
        description="ρ_draft · ρ_sr (ρ_sc removed)", changes={"use_self_consistency": False}
    ),
    "no-self-reflection": Selection(
        description="ρ_draft · ρ_sc (ρ_sr removed)", changes={"use_self_reflection": False}
    ),
    "raw-scores": Selection(
        description="all three terms, raw log-probabilities", changes={"score_normalization": "raw"}
    ),
    "length-normalised": Selection(
        description="all three terms, ρ_draft and ρ_sc per token", changes={"score_normalization": "mean"}
    ),
    "vote": Selection(
        description="score-weighted vote: the answer most drafts give, weighted by exp(total)",
        changes={"selection": "vote"},
    ),
}


@dataclass(frozen=True, kw_only=True)
class Reverification:
    """A re-verifying system: the speculative drafts scored again by the verifier under other scoring settings
    (the drafts are not regenerated, so the difference is the verifier's alone)."""

    description: str
    changes: dict[str, Any]
    """Context fields that differ from the run's (what ρ_sc measures)."""


REVERIFICATIONS: dict[str, Reverification] = {
    "joint-scores": Reverification(
        description="ρ_sc = P(answer, rationale | question), the paper's (speculative's drafts re-verified)",
        changes={"self_consistency_of": "answer_and_rationale"},
    ),
    "rationale-conditioned": Reverification(
        description="ρ_sc = P(answer | question, rationale): the verifier reads the rationale and scores the answer "
        "(speculative's drafts re-verified)",
        changes={"self_consistency_of": "answer_given_rationale"},
    ),
}


def scoring_of(system: str, run_scoring: SelfConsistencyOf) -> SelfConsistencyOf:
    """What ρ_sc measured in ``system``'s drafts: a re-verifying system's own setting, else the run's."""
    spec = REVERIFICATIONS.get(system)
    return spec.changes["self_consistency_of"] if spec else run_scoring


GENERATING: dict[str, str] = {
    "standard": "one answer from all top-n passages (verifier-size model)",
    "speculative": "Speculative RAG: clustered subsets, drafts, verification (the paper's; no confidence, no fallback)",
    "speculative+reflect": "Speculative RAG with calibrated reflection: low confidence falls back to the verifier "
    "reading all passages (the default graph)",
    "speculative-base": "Speculative RAG with the base drafter (no tuned adapter)",
    "speculative-verifier-drafts": "Speculative RAG with the verifier model as drafter (reference)",
    "random-subsets": "Speculative RAG with random subsets (no clustering)",
    "replug": "REPLUG-style ensemble: one answer per passage, weighted by retrieval scores",
    "speculative+compress": "Speculative RAG on compressed passages (question-aware sentence selection)",
    "standard+compress": "standard RAG on the same compressed passages",
}

SYSTEMS: dict[str, str] = {
    **GENERATING,
    **{name: r.description for name, r in REVERIFICATIONS.items()},
    **{name: s.description for name, s in SELECTIONS.items()},
}
"""Every system, in report order, with a one-line description."""

Role = Literal["drafter", "verifier", "base_drafter"]


@dataclass
class Models:
    """The models every system shares, metered so each system's spending can be read."""

    drafter: MeteredModel
    verifier: MeteredModel
    embedder: Embedder
    base_drafter: MeteredModel | None = None
    """The drafter model without its tuned adapter (``speculative-base``); None: the drafter is the base model."""
    drafter_lead: str = ""
    """The drafter's answer lead (``app.models.answer_lead``; for ``Context.abstain_threshold``); the base drafter
    and the verifier have none."""

    def reset(self) -> None:
        self.drafter.reset()
        self.verifier.reset()
        if self.base_drafter is not None:
            self.base_drafter.reset()

    def usage(self, roles: tuple[Role, ...] = ("drafter", "verifier")) -> dict[str, ModelUsage]:
        """Usage since the last reset of the roles that did anything."""
        out = {role: ModelUsage.of(m.usage()) for role in roles if (m := getattr(self, role)) is not None}
        return {("drafter" if role == "base_drafter" else role): u for role, u in out.items() if u.calls}


def _record(d: DraftOut, pool_index: dict[str, int]) -> DraftRecord:
    s = d.scores
    return DraftRecord(
        round=d.round,
        answer=d.answer,
        rationale=d.rationale,
        passages=[pool_index.get(p, -1) for p in d.passage_ids],
        parsed=d.parsed,
        outcome=d.outcome,
        letter=d.letter,
        choice_shift=d.choice_shift,
        abstain_prob=d.abstain_prob,
        answer_forced=d.answer_forced,
        draft=s.draft if s else d.draft_logprob if d.outcome != "abstain" else None,
        draft_tokens=d.tokens.draft,
        self_consistency=s.self_consistency if s else None,
        self_consistency_tokens=d.tokens.self_consistency,
        self_reflection=s.self_reflection if s else None,
        total=s.total if s else None,
        prompt_tokens=d.tokens.prompt,
    )


def run_graph(
    graph: Literal["speculative", "standard"],
    question: str,
    context: Context,
    models: Models,
    pool: PassagePool,
    traces: TraceStore | None,
    *,
    choices: dict[str, str] | None = None,
    drafter: Literal["drafter", "base", "verifier"] = "drafter",
) -> SystemResult:
    """Run one of the graphs on ``question`` over ``pool`` and summarise it (drafts with their scores).

    Args:
        choices: Multiple choice: letter -> text (``question`` already lists them); the drafts answer a letter.
        drafter: Which model drafts: the configured drafter, its base model (no adapter), or the verifier.

    Raises:
        Exception: Whatever the graph raised (the caller records it).
    """
    drafting = {"drafter": models.drafter, "base": models.base_drafter or models.drafter, "verifier": models.verifier}
    backends = StaticBackends(
        drafter=drafting[drafter],
        verifier=models.verifier,
        embedder=models.embedder,
        store=pool,
        drafter_lead=models.drafter_lead if drafter == "drafter" else "",
    )
    module = speculative_rag if graph == "speculative" else standard_rag
    compiled = module.build(lambda _: backends).compile(name=f"{graph}_rag")
    models.reset()
    t0 = time.perf_counter()
    given = InputState(question=question, choices=dict(choices or {}))
    trace = run_traced(compiled, question, context, traces=traces, input=given)
    seconds = time.perf_counter() - t0
    assert trace.result is not None
    result = trace.result
    index = {c.id: i for i, c in enumerate(pool.chunks)}
    return SystemResult(
        answer=result.answer,
        rationale=result.rationale,
        chosen=result.chosen,
        seconds=round(seconds, 4),
        timings=result.timings,
        usage=models.usage(_roles(models, drafter)),
        drafts=[_record(d, index) for d in result.drafts],
        run_id=result.run_id,
        decision=result.decision,
        confidence=result.confidence.value if result.confidence is not None else None,
        closed_book=_belief_of(result.confidence, "closed_book", mcq=bool(choices)),
        open_book=_belief_of(result.confidence, "open_book", mcq=bool(choices)),
    )


def _belief_of(conf: ConfidenceOut | None, prefix: str, *, mcq: bool) -> Belief | None:
    """The graph's own closed- or open-book belief (``prefix``), read back from the inputs its confidence used
    (present when its model reads them; rounded to 4 decimals there), so that a replay of the run's records sees
    what the graph saw."""
    value = conf.inputs.get(f"{prefix}_mcq" if mcq else f"{prefix}_span") if conf is not None else None
    if conf is None or value is None:
        return None
    return Belief(logprob=value, top=mcq and conf.inputs.get(f"{prefix}_top") == 1.0)


def record_beliefs(
    result: SystemResult,
    question: str,
    choices: Mapping[str, str] | None,
    pool: PassagePool,
    models: Models,
    confidence_model: str,
) -> SystemResult:
    """``result`` with the verifier's beliefs in its selected answer that ``confidence_model`` reads (closed book,
    open book after the selected draft's passages), for the report's calibration section, which replays the
    confidence from the records. They are computed after the run and not timed: the paper's graph computes none.
    Unchanged when nothing was selected, the run failed, or the model reads no belief (or cannot be read: the report
    says so)."""
    if confidence_model == "none" or result.error or result.chosen is None:
        return result
    best = result.drafts[result.chosen]
    if best.outcome == "abstain":
        return result
    try:
        model = load_model(confidence_model)
    except ConfidenceModelError:
        return result
    believed, read = _beliefs(
        best, question, choices, pool.chunks, models, closed=model.reads_closed_book, opened=model.reads_open_book
    )
    update = {k: v for k, v in (("closed_book", believed), ("open_book", read)) if v is not None}
    return result.model_copy(update=update)


def _beliefs(
    best: DraftRecord,
    question: str,
    choices: Mapping[str, str] | None,
    passages: Sequence[Titled],
    models: Models,
    *,
    closed: bool = True,
    opened: bool = True,
) -> tuple[Belief | None, Belief | None]:
    """The verifier's closed- and open-book beliefs in ``best``'s answer (each None when not asked for), recordable
    as JSON; ``passages`` is the question's pool, which ``best.passages`` indexes."""
    answer = best.letter or best.answer
    believed = _recordable(closed_book(models.verifier, question, answer, choices or {})) if closed else None
    evidence = [passages[i] for i in best.passages if 0 <= i < len(passages)]
    read = _recordable(open_book(models.verifier, question, evidence, answer, choices or {})) if opened else None
    return believed, read


def _roles(models: Models, drafter: str) -> tuple[Role, ...]:
    if drafter == "base" and models.base_drafter is not None:
        return ("base_drafter", "verifier")
    return ("drafter", "verifier")


def replug(question: str, context: Context, models: Models, pool: PassagePool) -> SystemResult:
    """REPLUG-style ensemble over the top-n passages by the verifier-size model (see the module docstring)."""
    models.reset()
    t0 = time.perf_counter()
    hits = pool.search(question, [], k=context.top_n)
    template = prompting.load("standard_answer")
    prompts = [template.chat(passages=format_passages([h.chunk]), question=question) for h in hits]
    gens = models.verifier.generate(prompts, max_tokens=context.answer_max_tokens, stop=["\n"])
    t_gen = time.perf_counter() - t0
    given = [pool.scores[pool.chunks.index(h.chunk)] for h in hits]
    weights = _softmax([s for s in given if s is not None]) if all(s is not None for s in given) else None
    lam = weights or [1.0 / len(hits)] * len(hits)
    # Distinct answers (by their stripped text), the most probable under their own passage first.
    surface: dict[str, str] = {}
    for g, _ in sorted(zip(gens, lam, strict=True), key=lambda gw: -gw[1] * math.exp(gw[0].logprob)):
        key = " ".join(g.text.split())
        if key and key not in surface:
            surface[key] = g.text.rstrip()
    candidates = list(surface.items())[:REPLUG_CANDIDATES]
    requests = [ScoreRequest(prompt=p, continuation=text) for p in prompts for _, text in candidates]
    scored = models.verifier.score(requests) if requests else []
    probability = {
        key: sum(lam[d] * math.exp(scored[d * len(candidates) + j].logprob) for d in range(len(prompts)))
        for j, (key, _) in enumerate(candidates)
    }
    ranked = sorted(probability.items(), key=lambda kv: -kv[1])
    seconds = time.perf_counter() - t0
    return SystemResult(
        answer=ranked[0][0] if ranked else "",
        seconds=round(seconds, 4),
        timings={"generate": round(t_gen, 4), "ensemble": round(seconds - t_gen, 4)},
        usage=models.usage(("verifier",)),
        candidates=[Candidate(answer=k, probability=p) for k, p in ranked],
    )


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [x / sum(e) for x in e]


def reverify(
    base: SystemResult,
    name: str,
    question: str,
    context: Context,
    models: Models,
    choices: Mapping[str, str] | None = None,
    passages: Sequence[Titled] = (),
) -> SystemResult:
    """A re-verifying system's result: ``base``'s drafts scored again by the verifier (``graphs.verification``, the
    requests the ``verify`` node sends) under the context :data:`REVERIFICATIONS` names, then the best is picked.

    Its latency is ``base``'s with the verify time replaced by this scoring's.

    Args:
        base: The speculative result whose drafts are re-verified.
        name: A key of :data:`REVERIFICATIONS`.
        question: The question as the models read it (with its choices).
        context: The run's context (the system changes some of its fields).
        choices: Multiple choice: letter -> text (for the closed-book belief in the selected letter, which the
            calibration's model may read; its time counts as verification).
        passages: The question's pool, which the drafts' passage indices point into (for the open-book belief in
            the selected answer after the selected draft's passages; its time counts as verification too).
    """
    ctx = context.model_copy(update=REVERIFICATIONS[name].changes)
    answering = [i for i, d in enumerate(base.drafts) if d.outcome != "abstain"]
    requests = score_requests(
        question, [(base.drafts[i].answer, base.drafts[i].rationale) for i in answering], ctx.self_consistency_of
    )
    models.reset()
    t0 = time.perf_counter()
    results = models.verifier.score(requests) if requests else []
    seconds = time.perf_counter() - t0
    drafts = [d.model_copy() for d in base.drafts]
    for i, r in zip(answering, results, strict=True):
        d = drafts[i]
        sr = self_reflection(r)
        value = total(d.draft if d.draft is not None else -math.inf, d.draft_tokens, r.logprob, r.n_tokens, sr, ctx)
        drafts[i] = d.model_copy(
            update={
                "self_consistency": _finite(r.logprob),
                "self_consistency_tokens": r.n_tokens,
                "self_reflection": _finite(sr),
                "total": _finite(value),
            }
        )
    chosen = pick(drafts, ctx)
    best = drafts[chosen] if chosen is not None else None
    believed = read = None
    if best is not None and best.outcome != "abstain":
        t1 = time.perf_counter()
        believed, read = _beliefs(best, question, choices, passages, models)
        seconds += time.perf_counter() - t1
    timings = {**base.timings, "verify": round(seconds, 4)}
    usage = {**base.usage, **models.usage(("verifier",))}
    return SystemResult(
        answer=best.answer if best else "",
        rationale=best.rationale if best else "",
        chosen=chosen,
        seconds=round(max(base.seconds - base.timings.get("verify", 0.0) + seconds, 0.0), 4),
        timings=timings,
        usage=usage,
        drafts=drafts,
        derived_from="speculative",
        error=base.error,
        closed_book=believed,
        open_book=read,
    )


def _recordable(belief: Belief) -> Belief:
    """``belief`` with a non-finite log-probability as -1e9 (JSON holds no -inf; the inputs cut at -10)."""
    return belief if math.isfinite(belief.logprob) else Belief(logprob=-1e9, top=belief.top)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def select(base: SystemResult, name: str, context: Context, rng: random.Random) -> SystemResult:
    """A selection system's result: re-rank ``base``'s scored drafts (no model runs).

    Args:
        base: The speculative result whose drafts are re-ranked.
        name: A key of :data:`SELECTIONS`.
        context: The run's context (the selection changes some of its fields).
        rng: For ``no-verifier`` (seeded per question by the caller).
    """
    spec = SELECTIONS[name]
    timings = dict(base.timings)
    usage = dict(base.usage)
    seconds = base.seconds
    if not spec.uses_verifier:
        seconds -= timings.pop("verify", 0.0)
        usage.pop("verifier", None)
    chosen = pick(base.drafts, context.model_copy(update=spec.changes), rng if spec.random else None)
    best = base.drafts[chosen] if chosen is not None else None
    return SystemResult(
        answer=best.answer if best else "",
        rationale=best.rationale if best else "",
        chosen=chosen,
        seconds=round(max(seconds, 0.0), 4),
        timings=timings,
        usage=usage,
        derived_from="speculative",
        error=base.error,
    )


def pick(drafts: list[DraftRecord], context: Context, rng: random.Random | None = None) -> int | None:
    """Index of the draft ``context``'s score terms rank first (ties: the earlier draft), or with
    ``selection='vote'`` the best of the answer with the largest score-weighted vote; a random draft with ``rng``;
    None when there is no draft that is not an abstention (abstentions are never selected)."""
    answering = [i for i, d in enumerate(drafts) if d.outcome != "abstain"]
    if not answering:
        return None
    if rng is not None:
        return answering[rng.randrange(len(answering))]
    if context.selection == "vote":
        keys = [answer_key(draft_signal(drafts[i])) for i in answering]
        return answering[vote_order(keys, [_total_of(drafts[i], context) for i in answering])[0]]
    return max(answering, key=lambda i: (_total_of(drafts[i], context), -i))


def _total_of(d: DraftRecord, context: Context) -> float:
    """A recorded draft's total under ``context``'s score terms (-inf when a term is missing or not finite)."""
    if d.draft is None or d.self_consistency is None or d.self_reflection is None:
        return -math.inf
    value = total(d.draft, d.draft_tokens, d.self_consistency, d.self_consistency_tokens, d.self_reflection, context)
    return value if math.isfinite(value) else -math.inf


_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")


def draft_signal(d: DraftRecord, choices: dict[str, str] | None = None, *, mcq: bool = False) -> DraftSignal:
    """A recorded draft as the confidence reads it. Records exported without the dataset's text have no choices:
    a multiple-choice answer that is a bare letter is its letter then (the tuned drafter answers so)."""
    outcome: Literal["answer", "abstain", "unparsed"] = (
        "abstain" if d.outcome == "abstain" else "unparsed" if d.outcome == "unparsed" else "answer"
    )
    letter = d.letter
    if letter is None and outcome != "abstain" and (choices or mcq):
        bare = _LETTER.match(d.answer.strip())
        letter = parse_choice(d.answer, choices) if choices else (bare.group(1) if bare else None)
    return DraftSignal(
        answer=d.answer,
        outcome=outcome,
        letter=letter,
        draft=d.draft,
        draft_tokens=d.draft_tokens,
        self_consistency=d.self_consistency,
        self_consistency_tokens=d.self_consistency_tokens,
        self_reflection=d.self_reflection,
        total=d.total,
    )


def run_system(
    name: str,
    question: str,
    context: Context,
    models: Models,
    pool: PassagePool,
    traces: TraceStore | None,
    choices: dict[str, str] | None = None,
) -> SystemResult:
    """Run a generating system; an exception becomes a result with ``error`` set (and no answer).

    Args:
        choices: Multiple choice: letter -> text (``question`` already lists them).

    Raises:
        KeyError: ``name`` is not a generating system.
    """
    reflecting = context.model_copy(update={"fallback": True})
    # Every other drafting system is the paper's graph: no fallback, and no confidence (nothing it decides depends on
    # one, and the verifier's beliefs a confidence model reads would cost it requests the paper does not make).
    judged_by = context.confidence_model
    context = context.model_copy(update={"fallback": False, "confidence_model": "none"})
    compressed = context.model_copy(update={"compress": True})
    answer_compressed = context.model_copy(update={"compress_answer": True})

    def graph(kind: Literal["speculative", "standard"], ctx: Context, **kw: Any) -> Callable[[], SystemResult]:
        return lambda: run_graph(kind, question, ctx, models, pool, traces, choices=choices, **kw)

    runners: dict[str, Callable[[], SystemResult]] = {
        "standard": graph("standard", context),
        "speculative": lambda: record_beliefs(
            run_graph("speculative", question, context, models, pool, traces, choices=choices),
            question,
            choices,
            pool,
            models,
            judged_by,
        ),
        "speculative+reflect": graph("speculative", reflecting),
        "speculative-base": graph("speculative", context, drafter="base"),
        "speculative-verifier-drafts": graph("speculative", context, drafter="verifier"),
        "random-subsets": graph("speculative", context.model_copy(update={"partition": "random"})),
        "replug": lambda: replug(question, context, models, pool),
        "speculative+compress": graph("speculative", compressed),
        "standard+compress": graph("standard", answer_compressed),
    }
    runner = runners[name]
    t0 = time.perf_counter()
    try:
        return runner()
    except Exception as exc:  # recorded per question; the run goes on
        return SystemResult(seconds=round(time.perf_counter() - t0, 4), error=one_line(exc), usage=models.usage())
