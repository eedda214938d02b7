"""Graph logic with scripted fakes: fan-out, fan-in, scoring, selection, retry routing, bounded rounds."""

import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from app.confidence.features import CLOSED_BOOK_FEATURES, FEATURES, OPEN_BOOK_FEATURES
from app.llm.protocol import ChatPrompt
from graphs import speculative_rag, standard_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.result import RunResult, to_result
from graphs.state import InputState, State
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore, p_yes_confidence

DOCS = [
    ("Paris", "Paris is the capital of France and its largest city."),
    ("France", "France is a country in Western Europe; its capital is Paris."),
    ("Lyon", "Lyon is a large city in France known for its cuisine."),
    ("Marseille", "Marseille is a port city in southern France."),
    ("Berlin", "Berlin is the capital of Germany."),
    ("Germany", "Germany is a country in Central Europe."),
    ("Rome", "Rome is the capital of Italy."),
    ("Madrid", "Madrid is the capital of Spain."),
    ("Seine", "The Seine flows through Paris."),
    ("Loire", "The Loire is the longest river in France."),
    ("Alps", "The Alps span France, Italy and Switzerland."),
    ("Euro", "France uses the euro as its currency."),
]


def drafter_reply(prompt: ChatPrompt) -> str:
    """Answers with the title of the first document it was shown."""
    first = re.search(r'title="([^"]+)"', prompt.messages[-1].content)
    title = first.group(1) if first else "nothing"
    return f"The documents mention {title}.\nAnswer: {title}"


def make(
    judge: Callable[[str], tuple[float, float]], rewrite: str = "capital city France"
) -> tuple[StaticBackends, FakeStore, FakeLLM]:
    emb = FakeEmbedder()
    store = FakeStore(emb, DOCS)
    verifier = FakeLLM(reply=lambda p: rewrite, judge=judge)
    return (
        StaticBackends(drafter=FakeLLM(reply=drafter_reply), verifier=verifier, embedder=emb, store=store),
        store,
        verifier,
    )


def run(backends: StaticBackends, context: Context, question: str = "What is the capital of France?") -> State:
    graph = speculative_rag.build(lambda ctx: backends).compile()
    return State(**graph.invoke(InputState(question=question), context=context))


def paris_judge(continuation: str) -> tuple[float, float]:
    return (-1.0, 0.97) if "Answer: Paris" in continuation else (-5.0, 0.9)


def test_happy_path_five_scored_drafts_and_the_best_is_chosen() -> None:
    backends, _, verifier = make(paris_judge)
    state = run(backends, Context(n_drafts=5, seed=3))
    assert len(state.drafts) == 5
    assert all(d.scores is not None for d in state.drafts)
    totals = [d.scores.total for d in state.drafts if d.scores]
    assert state.chosen == totals.index(max(totals))
    assert state.answer == state.drafts[state.chosen].answer
    # every subset: k=2 passages from this round's retrieval; together they cover all 10 (m·k = n), one per
    # cluster while the smaller cluster has passages to pair with
    assert len(state.rounds) == 1 and state.rounds[0].decision == "accept"
    r = state.rounds[0]
    sizes = [r.clusters.count(c) for c in (0, 1)]
    mixed = 0
    for subset in r.subsets:
        assert len(subset) == 2 and len(set(subset)) == 2
        labels = [r.clusters[r.passage_ids.index(pid)] for pid in subset]
        mixed += sorted(labels) == [0, 1]
    assert mixed == min(5, *sizes) if max(sizes) > 5 else mixed == 5
    assert {pid for s in r.subsets for pid in s} == set(r.passage_ids)
    assert len({tuple(s) for s in r.subsets}) == 5
    assert r.ranking[0] == state.chosen
    # the verifier was called once with all five drafts (one batch of score requests)
    assert verifier.calls == ["score x5"]
    nodes = [t.node for t in state.timings]
    assert (
        nodes[:2] == ["retrieve", "partition"]
        and nodes.count("draft") == 5
        and nodes[-3:] == ["verify", "reflect", "answer"]
    )


@dataclasses.dataclass
class TitleSure(FakeLLM):
    """A drafter whose per-token log-probability falls with the length of the first title it read (so ρ_draft per
    token ranks its drafts, and not in draft order)."""

    def generate(self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()) -> list:
        out = super().generate(prompts, max_tokens=max_tokens, stop=stop)
        titles = [re.search(r'title="([^"]+)"', p.messages[-1].content) for p in prompts]
        return [
            dataclasses.replace(g, token_logprobs=tuple(-0.1 * len(t.group(1) if t else "x") for _ in g.token_logprobs))
            for g, t in zip(out, titles, strict=True)
        ]


def agreeing_reply(prompt: ChatPrompt) -> str:
    """Every draft answers Paris, each with its own rationale (the title of the first document it was shown)."""
    first = re.search(r'title="([^"]+)"', prompt.messages[-1].content)
    return f"The documents mention {first.group(1) if first else 'nothing'}.\nAnswer: Paris"


def test_agreeing_drafts_go_unverified_without_a_confidence_model_and_the_reason_says_so() -> None:
    backends, _, verifier = make(paris_judge)
    backends = dataclasses.replace(backends, drafter=TitleSure(reply=agreeing_reply))
    state = run(backends, Context(n_drafts=5, seed=3, confidence_model="none"))
    assert len(state.drafts) == 5 and all(d.outcome == "answer" and d.scores is None for d in state.drafts)
    assert not any(c.startswith("score") for c in verifier.calls)  # the verifier never ran
    per_token = [d.logprob / d.tokens for d in state.drafts]
    assert len(set(per_token)) > 1  # the choice is not a tie broken by draft order
    assert state.chosen == per_token.index(max(per_token)) and state.answer == "Paris"
    assert state.rationale == state.drafts[state.chosen].rationale
    r = state.rounds[0]
    assert r.decision == "accept" and r.ranking[0] == state.chosen
    assert "not verified: all 5 drafts that answered agree ('Paris')" in r.reason
    result = to_result(state, graph="speculative", seconds=0.0)
    assert result.drafts[0].scores is None and result.drafts[0].draft_logprob == pytest.approx(state.drafts[0].logprob)


def test_agreeing_drafts_are_verified_with_verify_agreed_or_a_confidence_model() -> None:
    for context in (
        Context(n_drafts=5, seed=3, confidence_model="none", verify_agreed=True),
        Context(n_drafts=5, seed=3),
    ):
        backends, _, verifier = make(paris_judge)
        state = run(dataclasses.replace(backends, drafter=TitleSure(reply=agreeing_reply)), context)
        assert any(c.startswith("score") for c in verifier.calls)
        assert all(d.scores is not None for d in state.drafts)
        assert "not verified" not in state.rounds[0].reason


def test_drafts_that_disagree_are_verified_without_a_confidence_model() -> None:
    backends, _, verifier = make(paris_judge)
    state = run(backends, Context(n_drafts=5, seed=3, confidence_model="none"))
    assert len({d.answer for d in state.drafts}) > 1 and verifier.calls == ["score x5"]
    assert state.answer == "Paris" and "not verified" not in state.rounds[0].reason


def test_identical_drafts_are_verified_once_and_share_the_verifier_scores() -> None:
    backends, _, verifier = make(paris_judge)
    same = FakeLLM(reply=lambda p: "The documents mention Paris.\nAnswer: Paris")
    state = run(dataclasses.replace(backends, drafter=same), Context(n_drafts=5, seed=3))
    assert len(state.drafts) == 5 and verifier.calls == ["score x1"]  # one request for five identical drafts
    scores = [d.scores for d in state.drafts]
    assert all(s is not None for s in scores)
    assert len({(s.self_consistency, s.self_reflection) for s in scores if s}) == 1
    note = scores[0].method["shared"] if scores[0] else ""
    assert note.startswith("ρ_sc and ρ_sr scored once for 5 identical drafts") and "round 0 subset 4" in note
    assert state.answer == "Paris"


def test_the_trace_says_identical_drafts_shared_one_verifier_request(tmp_path: Path) -> None:
    from rich.console import Console

    from app.ask import run as ask_run
    from app.trace.render import render_trace
    from app.trace.store import SQLiteTraceStore

    backends, _, _ = make(paris_judge)
    same = dataclasses.replace(backends, drafter=FakeLLM(reply=lambda p: "The documents mention Paris.\nAnswer: Paris"))
    traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
    result = ask_run(
        "What is the capital of France?", Context(n_drafts=5, seed=3), traces=traces, provider=lambda c: same
    )
    assert result.run_id is not None
    console = Console(record=True, width=200)
    render_trace(traces.get(result.run_id), console)
    assert "scored 5 drafts in 1 verifier requests (identical drafts share one)" in console.export_text()


def test_random_partition_drafts_from_random_subsets_without_clusters() -> None:
    state = run(make(paris_judge)[0], Context(n_drafts=5, seed=3, partition="random"))
    r = state.rounds[0]
    assert set(r.clusters) == {0}  # no clustering
    assert len(r.subsets) == 5 and len({tuple(s) for s in r.subsets}) == 5
    assert all(len(s) == 2 and set(s) <= set(r.passage_ids) for s in r.subsets)
    assert len(state.drafts) == 5 and state.chosen is not None
    clustered = run(make(paris_judge)[0], Context(n_drafts=5, seed=3)).rounds[0]
    assert clustered.passage_ids == r.passage_ids and clustered.subsets != r.subsets


def test_same_seed_same_subsets_and_drafts() -> None:
    a = run(make(paris_judge)[0], Context(n_drafts=5, seed=11))
    b = run(make(paris_judge)[0], Context(n_drafts=5, seed=11))
    assert a.rounds[0].subsets == b.rounds[0].subsets
    assert [d.answer for d in a.drafts] == [d.answer for d in b.drafts]


def test_low_support_retries_with_rewritten_query_and_new_passages_only() -> None:
    backends, store, _ = make(lambda c: (-2.0, 0.5), rewrite="Paris France capital")
    state = run(backends, Context(n_drafts=5, max_rounds=2, top_n=5, retry_on="low_confidence", fallback=False))
    assert [r.decision for r in state.rounds] == ["retry", "accept"]
    assert state.rounds[0].rewritten_query == "Paris France capital"
    assert state.rounds[1].query == "Paris France capital"
    assert "fallback is off" in state.rounds[1].reason
    first, second = set(state.rounds[0].passage_ids), set(state.rounds[1].passage_ids)
    assert first and second and not first & second
    assert store.searches[1] == ("Paris France capital", tuple(state.rounds[0].passage_ids))
    assert {d.round for d in state.drafts} == {0, 1}
    totals = [d.scores.total for d in state.drafts if d.scores]
    assert state.chosen == totals.index(max(totals))


def test_max_rounds_one_never_retries() -> None:
    backends, _, _ = make(lambda c: (-2.0, 0.1))
    state = run(backends, Context(n_drafts=5, max_rounds=1, retry_on="low_confidence"))
    assert [r.decision for r in state.rounds] == ["fallback"]


def test_fewer_passages_than_needed() -> None:
    backends, _, _ = make(paris_judge)
    state = run(backends, Context(top_n=3, n_drafts=5, per_draft=2, max_rounds=1))
    assert len(state.rounds[0].passage_ids) == 3
    assert len(state.drafts) == 2  # clusters of 2 and 1 passages admit two distinct subsets


def test_empty_store_gives_up_without_drafting() -> None:
    emb = FakeEmbedder()
    store = FakeStore(emb, [])
    llm = FakeLLM(reply=lambda p: "q2")
    backends = StaticBackends(drafter=llm, verifier=llm, embedder=emb, store=store)
    state = run(backends, Context(n_drafts=5, max_rounds=2))
    assert [r.decision for r in state.rounds] == ["retry", "give_up"]
    assert state.chosen is None and state.drafts == [] and state.answer == ""


def test_standard_rag_reads_all_passages_in_one_call() -> None:
    seen: list[str] = []

    def reply(p: ChatPrompt) -> str:
        seen.append(p.messages[-1].content)
        return "Paris"

    emb = FakeEmbedder()
    llm = FakeLLM(reply=reply)
    backends = StaticBackends(
        drafter=FakeLLM(reply=lambda p: pytest.fail("drafter used")),
        verifier=llm,
        embedder=emb,
        store=FakeStore(emb, DOCS),
    )
    graph = standard_rag.build(lambda ctx: backends).compile()
    state = State(**graph.invoke(InputState(question="What is the capital of France?"), context=Context(top_n=4)))
    assert state.answer == "Paris"
    assert len(seen) == 1 and seen[0].count("<document ") == 4


def test_trace_says_how_each_score_was_obtained() -> None:
    state = run(make(paris_judge)[0], Context(n_drafts=5, seed=3))
    scores = state.drafts[0].scores
    assert scores is not None
    assert set(scores.method) == {"draft", "self_consistency", "self_reflection"}
    assert "scripted score (fake)" in scores.method["self_consistency"]
    assert "scripted candidates (fake)" in scores.method["self_reflection"]


def test_answer_given_rationale_scores_each_answer_after_its_rationale() -> None:
    """With ``self_consistency_of='answer_given_rationale'`` the verifier's turn starts with the rationale and only
    the answer is scored; the choice follows those scores and the trace says what was measured."""
    seen: list[str] = []

    def judge(text: str) -> tuple[float, float]:
        seen.append(text)
        return (-0.5, 0.9) if text.endswith("\nAnswer: Paris") else (-4.0, 0.9)

    context = Context(n_drafts=5, seed=3, self_consistency_of="answer_given_rationale", confidence_model="none")
    state = run(make(judge)[0], context)
    scored = [d for d in state.drafts if d.scores is not None]
    assert sorted(seen) == sorted(f"Rationale: {d.rationale}\nAnswer: {d.answer}" for d in scored)
    assert all(d.scores and d.scores.self_consistency_tokens == len(d.answer.split()) for d in scored)
    assert all(
        d.scores and d.scores.method["self_consistency"].startswith("log P(answer | question, rationale)")
        for d in scored
    )
    assert len({d.answer for d in scored}) > 1 and state.answer == "Paris"


def test_a_confidence_model_fitted_on_the_other_scoring_is_refused() -> None:
    """The bundled model reads drafts scored as P(answer | question, rationale); under the paper's ρ_sc its inputs
    mean something else, and the earlier model (fitted the paper's way) is refused under the default scoring."""
    from app.confidence.model import BUNDLED_PAPER_SCORING, ConfidenceModelError

    with pytest.raises(ConfidenceModelError, match="fitted on drafts scored with"):
        run(make(paris_judge)[0], Context(n_drafts=5, seed=3, self_consistency_of="answer_and_rationale"))
    with pytest.raises(ConfidenceModelError, match="fitted on drafts scored with"):
        run(make(paris_judge)[0], Context(n_drafts=5, seed=3, confidence_model=str(BUNDLED_PAPER_SCORING)))


def test_verifier_without_teacher_forcing_is_refused_never_substituted() -> None:
    from app.llm.protocol import Capabilities, NotSupportedError

    backends, _, _ = make(paris_judge)
    ollama_like = FakeLLM(
        reply=lambda p: "x",
        name="ollama:qwen",
        capabilities=Capabilities(score_continuation=False, exact_candidates=False),
    )
    backends = StaticBackends(
        drafter=backends.drafter, verifier=ollama_like, embedder=backends.embedder, store=backends.store
    )
    with pytest.raises(NotSupportedError, match="SPECRAG_VERIFIER__PROVIDER=llamacpp or openai"):
        run(backends, Context(n_drafts=5, seed=3))
    assert not any(c.startswith("score") for c in ollama_like.calls)


def test_a_rewrite_that_repeats_the_query_does_not_start_a_new_round() -> None:
    question = "What is the capital of France?"
    backends, store, _ = make(lambda c: (-2.0, 0.5), rewrite=question)
    state = run(backends, Context(n_drafts=5, max_rounds=3, retry_on="low_confidence"), question=question)
    assert [r.decision for r in state.rounds] == ["fallback"]  # fallback off: "accept"
    assert "repeats the previous one" in state.rounds[0].reason
    assert len(store.searches) == 1


# --- reflection on a scripted confidence: each decision, and what the run result shows -----------------------------


def reading_verifier(prompt: ChatPrompt) -> str:
    """The verifier's replies: 'Paris (all passages)' to the standard-answer prompt, a rewrite otherwise."""
    return "Paris (all passages)" if prompt.prefill.strip() == "Answer:" else "capital of France"


def decided(tmp_path: Path, p_yes: float, **ctx: object) -> tuple[State, RunResult, FakeLLM]:
    emb = FakeEmbedder()
    verifier = FakeLLM(reply=reading_verifier, judge=lambda c: (-2.0, p_yes))
    backends = StaticBackends(
        drafter=FakeLLM(reply=drafter_reply), verifier=verifier, embedder=emb, store=FakeStore(emb, DOCS)
    )
    context = Context.model_validate({"confidence_model": p_yes_confidence(tmp_path), "top_n": 5, **ctx})
    state = run(backends, context)
    return state, to_result(state, graph="speculative_rag", seconds=1.0), verifier


def test_high_confidence_accepts_the_best_draft(tmp_path: Path) -> None:
    state, result, _ = decided(tmp_path, 0.97)
    assert [r.decision for r in state.rounds] == ["accept"] and result.decision == "accept"
    assert result.confidence is not None and result.confidence.value > 0.9
    assert result.chosen is not None and result.confidence.draft == result.chosen
    assert result.answer == state.drafts[result.chosen].answer
    assert set(result.confidence.inputs) == set(FEATURES) - set(CLOSED_BOOK_FEATURES) - set(OPEN_BOOK_FEATURES)
    assert result.confidence.model == "scripted-p-yes"
    # The evidence inputs come from the question and the passages the chosen draft read (its answer is a title).
    assert result.confidence.inputs["question_words"] == pytest.approx(math.log1p(6), abs=1e-4)
    assert result.confidence.inputs["supported"] == 1.0
    assert result.rounds[0].confidence == result.confidence


def believing(tmp_path: Path, logprob: float, **reads: bool) -> tuple[State, FakeLLM]:
    """A run whose scripted confidence model also reads the beliefs named in ``reads`` (closed_book, open_book),
    with a verifier that scores every continuation ``logprob``."""
    emb = FakeEmbedder()
    verifier = FakeLLM(reply=reading_verifier, judge=lambda c: (logprob, 0.97))
    backends = StaticBackends(
        drafter=FakeLLM(reply=drafter_reply), verifier=verifier, embedder=emb, store=FakeStore(emb, DOCS)
    )
    model = p_yes_confidence(tmp_path, **reads)
    return run(backends, Context.model_validate({"confidence_model": model, "top_n": 5})), verifier


def test_a_model_that_reads_the_closed_book_inputs_gets_them_from_one_more_verifier_request(tmp_path: Path) -> None:
    state, verifier = believing(tmp_path, -2.0, closed_book=True)
    assert verifier.calls[-1] == "score x1"  # the best answer after the question alone, after verify's batch
    assert state.confidence is not None and state.confidence.inputs["closed_book_span"] == -2.0  # -2 over 1 token
    assert state.confidence.inputs["closed_book_mcq"] == 0.0 and "closed_book_span" in state.confidence.contributions


def test_a_model_that_reads_the_open_book_inputs_gets_them_from_the_verifier_reading_the_best_draft_s_passages(
    tmp_path: Path,
) -> None:
    state, verifier = believing(tmp_path, -3.0, open_book=True)
    assert verifier.calls[-1] == "score x1"  # one more request, after verify's batch
    assert state.confidence is not None and state.confidence.inputs["open_book_span"] == -3.0  # -3 over 1 token
    assert "closed_book_span" not in state.confidence.inputs  # not read: not computed
    assert state.chosen is not None
    best = state.drafts[state.chosen]
    read = {p.id: p for p in state.all_passages}
    prompt = verifier.scored[-1].prompt
    last = prompt.messages[-1].content
    assert all(read[i].text in last for i in best.passage_ids)  # the best draft's passages, and only those
    assert sum(p.text in last for p in state.all_passages) == len(best.passage_ids)
    assert last.endswith(f"Question: {state.question}") and prompt.prefill == "Answer:"
    assert verifier.scored[-1].continuation == f" {best.answer}"


def test_low_confidence_falls_back_to_the_verifier_reading_all_passages(tmp_path: Path) -> None:
    state, result, verifier = decided(tmp_path, 0.5)
    assert [r.decision for r in state.rounds] == ["fallback"] and result.decision == "fallback"
    assert result.confidence is not None and result.confidence.value < 0.01
    assert result.answer == "Paris (all passages)" and result.chosen is None and result.rationale == ""
    assert verifier.calls[-1] == "generate x1"  # one answer from all five passages
    assert [s.id for s in result.sources] == state.rounds[0].passage_ids
    assert [t.node for t in state.timings][-2:] == ["reflect", "fallback"]
    payload = json.loads(result.model_dump_json())  # what `ask --json` prints and the chat extension carries
    assert payload["decision"] == "fallback" and 0.0 <= payload["confidence"]["value"] <= 1.0
    assert "agreement" in payload["confidence"]["inputs"]


def test_low_confidence_retries_when_asked_then_falls_back(tmp_path: Path) -> None:
    state, result, _ = decided(tmp_path, 0.5, retry_on="low_confidence", max_rounds=2)
    assert [r.decision for r in state.rounds] == ["retry", "fallback"]
    assert state.rounds[0].rewritten_query == "capital of France"
    assert result.answer == "Paris (all passages)"


def test_without_fallback_low_confidence_still_accepts(tmp_path: Path) -> None:
    state, result, _ = decided(tmp_path, 0.5, fallback=False)
    assert result.decision == "accept" and "fallback is off" in state.rounds[0].reason
    assert result.chosen is not None and result.answer == state.drafts[result.chosen].answer


def test_nothing_retrieved_gives_up(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    llm = FakeLLM(reply=lambda p: "q2")
    backends = StaticBackends(drafter=llm, verifier=llm, embedder=emb, store=FakeStore(emb, []))
    state = run(backends, Context(n_drafts=5, max_rounds=1, confidence_model=p_yes_confidence(tmp_path)))
    assert [r.decision for r in state.rounds] == ["give_up"] and state.decision == "give_up"
    assert state.confidence is not None and state.confidence.value == 0.0 and state.answer == ""


def test_a_fallback_after_a_retry_reads_the_new_passages_first(tmp_path: Path) -> None:
    state, result, _ = decided(tmp_path, 0.5, retry_on="low_confidence", max_rounds=2)
    assert [r.decision for r in state.rounds] == ["retry", "fallback"]
    first, second = state.rounds[0].passage_ids, state.rounds[1].passage_ids
    read = [s.id for s in result.sources]
    assert read[: len(second)] == second and set(read[len(second) :]) <= set(first) and len(read) == 5
