"""The Speculative RAG graph on a real (small) model, real MiniLM embeddings and a real LanceDB store.

SmolLM2-135M plays drafter and verifier: its answers are poor, but every number the graph reports must be a
genuine log-probability, so each is recomputed here independently of the code that produced it and compared:

* ρ_draft (the drafter's log-probability of its own text, summed during generation): the draft's prompt, rebuilt
  with ``graphs.drafting.draft_prompt`` from the passages the draft names, must be the prompt the drafter read
  (same token count), and the text's tokens are teacher-forced one decode call per token (as generation decodes
  them; not ``score()``), each term a full-vocabulary log-softmax computed here.
* ρ_sc and ρ_sr (the verifier's teacher-forced log-probability of the answer after its rationale, or of answer +
  rationale, and log P('Yes') after the follow-up): the whole token sequence is decoded in one call without the
  prefix cache (not ``score()``), the logits at every position are read, and the sum and P('Yes') are computed
  here.

The graph decoded five drafts per step and scored with a cached prefix, the recomputation one sequence at a time;
on the development machine both agree exactly (difference 0.0). The tolerances leave room for llama.cpp builds
whose kernels round differently by batch shape (tests/integration/test_llamacpp.py), far below the ~0.06 nats per
token that separate stepwise generation from whole-sequence teacher forcing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.embed.minilm import MiniLMEmbedder
from app.llm.llama_engine import log_softmax_at
from app.llm.llamacpp import LlamaCppModel
from app.llm.protocol import ScoreRequest
from app.settings import get_settings
from app.store.ingest import ingest_paths
from app.store.lancedb_store import LanceDBStore
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.drafting import draft_prompt
from graphs.state import InputState, State
from graphs.verification import score_requests
from tests.conftest import REPO

pytestmark = pytest.mark.integration

QUESTION = "In which year was the Rosetta Stone found, and by whom?"
TOL_PER_TOKEN = 1e-3  # nats per token, generated (five sequences per step) vs teacher-forced one token per call
TOL_SCORE = 1e-3  # nats, scored with a cached prefix vs the whole sequence in one call


@pytest.fixture(scope="module")
def smol(packaged_model: Callable[[str], Path]) -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(
        packaged_model("smollm2-135m-instruct"), n_ctx=2048, n_seq_max=6, n_threads=get_settings().llm_threads
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def backends(smol: LlamaCppModel, tmp_path_factory: pytest.TempPathFactory) -> StaticBackends:
    embedder = MiniLMEmbedder()
    store = LanceDBStore.open(tmp_path_factory.mktemp("kb") / "store", embedder=embedder, create=True)
    ingest_paths([REPO / "samples" / "corpus"], store, embedder, progress=False)
    return StaticBackends(drafter=smol, verifier=smol, embedder=embedder, store=store)


@pytest.fixture(scope="module")
def state(backends: StaticBackends, smol: LlamaCppModel) -> State:
    runs_before = smol.stats.generate_runs
    graph = speculative_rag.build(lambda ctx: backends).compile()
    final = State(
        **graph.invoke(
            InputState(question=QUESTION),
            context=Context(n_drafts=5, max_rounds=1, draft_max_tokens=64, fallback=False),
        )
    )
    final.__dict__["_generate_runs"] = smol.stats.generate_runs - runs_before
    return final


def test_five_drafts_with_three_finite_scores(state: State) -> None:
    assert len(state.drafts) == 5
    for d in state.drafts:
        assert d.scores is not None
        s = d.scores
        assert all(math.isfinite(x) for x in (s.draft, s.self_consistency, s.self_reflection))
        assert s.draft < 0 and s.self_consistency < 0 and s.self_reflection < 0
        assert math.exp(s.self_reflection) + math.exp(s.self_reflection_no) <= 1.0 + 1e-9
        assert s.total == pytest.approx(s.draft + s.self_consistency + s.self_reflection)
    totals = [d.scores.total for d in state.drafts if d.scores]
    assert state.chosen == totals.index(max(totals))


def test_parallel_draft_branches_were_batched(state: State) -> None:
    # five Send branches called generate concurrently; the backend coalesced them into fewer runs
    assert state.__dict__["_generate_runs"] < 5


def _one_token_at_a_time(model: LlamaCppModel, prefix: list[int], cont: list[int]) -> list[float]:
    """log P(cont[j] | prefix + cont[:j]) for every j: the prompt decoded once, then one decode call per token
    (the prefix cache keeps what was decoded), each a full-vocabulary log-softmax."""
    saved, model.prefix_cache = model.prefix_cache, True
    try:
        model.reset_prefix_cache()
        terms = []
        for j, token in enumerate(cont):
            rows, cached = model.score_ids(prefix + cont[:j], [len(prefix) - 1 + j])
            assert j == 0 or cached == len(prefix) - 1 + j  # only the newest token was decoded
            terms.append(log_softmax_at(rows[0], token))
        return terms
    finally:
        model.reset_prefix_cache()
        model.prefix_cache = saved


def test_draft_score_is_the_drafters_own_probability(state: State, smol: LlamaCppModel) -> None:
    """ρ_draft recomputed by teacher-forcing the drafter on its own prompt and output, token by token."""
    by_id = {p.id: p for p in state.all_passages}
    compared = 0
    for d in state.drafts:
        prompt = draft_prompt(QUESTION, [by_id[i] for i in d.passage_ids])
        prefix = smol.prompt_ids(prompt)
        assert len(prefix) == d.prompt_tokens  # the prompt the drafter read
        cont = smol.tokenize(d.text, add_special=False, parse_special=False)
        if len(cont) != d.tokens:
            continue  # the text re-tokenises to other tokens: another sequence (counted below)
        compared += 1
        forced = sum(_one_token_at_a_time(smol, prefix, cont))
        assert forced == pytest.approx(d.logprob, abs=TOL_PER_TOKEN * d.tokens), (d.text, forced, d.logprob)
    assert compared >= 4, f"only {compared} of {len(state.drafts)} drafts re-tokenised to their own length"


def _recompute(smol: LlamaCppModel, request: ScoreRequest) -> tuple[float, float, int]:
    """ρ_sc, ρ_sr and the scored token count of ``request``: its whole token sequence decoded in one call without
    the prefix cache, the terms computed here from the logits rows (not by ``score()``)."""
    prefix = smol.prompt_ids(request.prompt)
    cont = smol.tokenize(request.continuation, add_special=False, parse_special=False)
    tail = smol.tokenize(smol.template.tail(request.prompt, request.followup), add_special=False, parse_special=True)
    yes = smol.tokenize("Yes", add_special=False, parse_special=False)[0]
    ids = prefix + cont + tail
    saved, smol.prefix_cache = smol.prefix_cache, False
    try:
        rows, cached = smol.score_ids(ids, list(range(len(ids))))
    finally:
        smol.prefix_cache = saved
    assert cached == 0
    sc = sum(log_softmax_at(rows[len(prefix) - 1 + j], tok) for j, tok in enumerate(cont))
    return sc, log_softmax_at(rows[-1], yes), len(cont)


def test_verifier_scores_match_an_independent_recomputation(state: State, smol: LlamaCppModel) -> None:
    """ρ_sc and ρ_sr of every verified draft, as the graph recorded them (the default scoring), against the
    request's whole sequence decoded in one call here."""
    verified = [d for d in state.drafts if d.scores is not None]
    assert len(verified) >= 3
    of = Context().self_consistency_of
    requests = score_requests(QUESTION, [(d.answer, d.rationale) for d in verified], of)
    for d, req in zip(verified, requests, strict=True):
        assert d.scores is not None
        sc, sr, n = _recompute(smol, req)
        assert d.scores.self_consistency_tokens == n
        assert sc == pytest.approx(d.scores.self_consistency, abs=TOL_SCORE), (sc, d.scores)
        assert sr == pytest.approx(d.scores.self_reflection, abs=TOL_SCORE), (sr, d.scores)


@pytest.mark.parametrize("of", ["answer_and_rationale", "answer_given_rationale"])
def test_both_scorings_match_an_independent_recomputation(state: State, smol: LlamaCppModel, of: str) -> None:
    """``score()`` with the prefix cache on, for either ``self_consistency_of``: with the rationale given, the prefill
    sits inside the assistant turn before the answer and only the answer's tokens are summed."""
    verified = [d for d in state.drafts if d.scores is not None]
    requests = score_requests(QUESTION, [(d.answer, d.rationale) for d in verified], of)  # type: ignore[arg-type]
    smol.reset_prefix_cache()
    results = smol.score(requests)
    for req, got in zip(requests, results, strict=True):
        if of == "answer_given_rationale":
            assert smol.detokenize(smol.prompt_ids(req.prompt)).rstrip().endswith("Answer:")
        sc, sr, n = _recompute(smol, req)
        assert got.n_tokens == n
        assert sc == pytest.approx(got.logprob, abs=TOL_SCORE)
        assert sr == pytest.approx(got.candidate_logprobs["Yes"], abs=TOL_SCORE)


def test_trace_records_clusters_subsets_and_decision(state: State) -> None:
    r = state.rounds[0]
    assert len(r.passage_ids) == 10 and len(r.clusters) == 10 and set(r.clusters) == {0, 1}
    assert len(r.subsets) == 5 and all(len(s) == 2 for s in r.subsets)
    assert r.decision == "accept" and "confidence" in r.reason  # fallback off: the best draft is accepted
    assert state.confidence is not None and state.confidence.draft == state.chosen
    assert r.ranking[0] == state.chosen
