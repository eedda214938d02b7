"""Selective compression: tier ratios meet the budget, each passage keeps its best sentences in order, the graphs
route through ``compress`` only when asked, and the trace shows what was kept."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from app.ask import run as ask_run
from app.llm.protocol import ChatPrompt
from app.trace.render import render_trace
from app.trace.store import SQLiteTraceStore
from graphs import standard_rag
from graphs.backends import StaticBackends
from graphs.compression import TIER_WEIGHTS, plan, tier_ratios
from graphs.context import Context
from graphs.state import InputState, State
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore, p_yes_confidence
from tests.unit.test_graph import make, paris_judge, run


@pytest.mark.parametrize("target", [0.2, 0.4, 0.6, 0.9, 1.0])
@pytest.mark.parametrize("words", [[100, 100, 100], [10, 300, 50], [0, 80, 20]])
def test_tier_ratios_meet_the_target_and_favour_important_tiers(target: float, words: list[int]) -> None:
    ratios = tier_ratios(words, target)
    assert all(0.0 <= r <= 1.0 + 1e-9 for r in ratios)
    assert sum(w * r for w, r in zip(words, ratios, strict=True)) == pytest.approx(target * sum(words))
    live = [r for w, r in zip(words, ratios, strict=True) if w]
    assert live == sorted(live, reverse=True)  # more important tiers keep more
    if target * TIER_WEIGHTS[0] / sum(TIER_WEIGHTS) * 3 < 1 and all(words):
        assert ratios[0] / ratios[2] == pytest.approx(TIER_WEIGHTS[0] / TIER_WEIGHTS[2])


def test_plan_keeps_the_most_relevant_sentences_in_original_order() -> None:
    sentences = [["a b c d", "e f g h", "i j k l", "m n o p"], ["q r", "s t"], ["u v w x y z"]]
    relevance = [np.array([0.1, 0.9, 0.2, 0.8]), np.array([0.3, 0.2]), np.array([0.05])]
    plans = plan(sentences, relevance, 0.5)
    assert [p.tier for p in plans] == [0, 1, 2]
    first = plans[0]
    assert first.kept == [1, 3]  # the two best of passage 1, in order
    assert all(p.kept for p in plans)  # every passage keeps at least its best sentence
    # 26 words, target 0.5: tier ratios 13/31 x (1.5, 1, 0.5); passage 1 (16 words) may keep 10.06 and keeps 8
    # (its sentences 1 and 3; adding sentence 2 would exceed it); passages 2 and 3 keep only their best sentence
    assert [p.ratio for p in plans] == pytest.approx([1.5 * 13 / 31, 13 / 31, 0.5 * 13 / 31])
    assert [p.kept for p in plans] == [[1, 3], [0], [0]]


@pytest.mark.parametrize("target", [0.15, 0.3, 0.6])
def test_plan_meets_the_word_budget(target: float) -> None:
    """Kept words per passage: within the passage's share (its tier's ratio of its words) unless only its best
    sentence is kept, and short of that share by less than one sentence; overall about ``target`` of the words."""
    rng = np.random.default_rng(5)
    sentences = [
        [" ".join(["w"] * int(rng.integers(3, 9))) for _ in range(int(rng.integers(8, 20)))] for _ in range(10)
    ]
    relevance = [rng.random(len(ss)) for ss in sentences]
    plans = plan(sentences, relevance, target)
    words = [[len(s.split()) for s in ss] for ss in sentences]
    total_kept = 0
    for p, w, r in zip(plans, words, relevance, strict=True):
        share = p.ratio * sum(w)
        kept = sum(w[j] for j in p.kept)
        total_kept += kept
        best = int(np.argmax(r))
        assert best in p.kept
        if p.kept != [best]:
            assert kept <= share + 1e-9, (kept, share)
        assert kept > share - max(w) or kept == sum(w), (kept, share)
    total = sum(map(sum, words))
    longest = sum(max(w) for w in words)  # one sentence per passage: the most a greedy fill can miss by
    assert abs(total_kept - target * total) < longest, (total_kept, target * total)
    assert total_kept < total


LONG_DOCS = [
    (
        f"Doc{i}",
        f"Paris is the capital of France number {i}. Cheese is made from milk in many regions. "
        f"The weather today was rainy in the north. Trains run on time in Switzerland mostly.",
    )
    for i in range(10)
]


def _long_backends(reply: Callable[[ChatPrompt], str] | None = None) -> StaticBackends:
    """The scripted backends over LONG_DOCS (four sentences each); ``reply`` replaces the verifier's replies."""
    backends, _, verifier = make(paris_judge)
    if reply is not None:
        verifier.reply = reply
    return StaticBackends(
        drafter=backends.drafter,
        verifier=verifier,
        embedder=backends.embedder,
        store=FakeStore(FakeEmbedder(), LONG_DOCS),
    )


def test_compress_step_shrinks_passages_and_reports_what_it_kept() -> None:
    state = run(_long_backends(), Context(seed=1, compress=True, compress_target=0.4))
    assert [t.node for t in state.timings][:3] == ["retrieve", "compress", "partition"]
    assert len(state.compression) == len(state.passages) == 10
    before = sum(c.words_before for c in state.compression)
    after = sum(c.words_after for c in state.compression)
    assert after < 0.6 * before
    by_id = {p.id: p for p in state.all_passages}  # the originals
    for p, c in zip(state.passages, state.compression, strict=True):
        assert c.passage_id == p.id and c.kept and len(p.text.split()) == c.words_after
        assert p.text in by_id[p.id].text or all(part in by_id[p.id].text for part in p.text.split(". "))
        assert "Paris is the capital" in p.text  # the question's sentence is the most relevant one
    uncompressed = run(make(paris_judge)[0], Context(seed=1))
    assert uncompressed.compression == [] and "compress" not in [t.node for t in uncompressed.timings]


def test_standard_graph_compresses_with_compress_answer() -> None:
    """With compress_answer the standard answer reads the compressed passages: what the model was sent shrank, not
    only the state; compress alone (the drafts' knob) leaves standard RAG's passages whole."""

    def sent_to_the_model(context: Context) -> tuple[State, str]:
        prompts: list[ChatPrompt] = []

        def answer(prompt: ChatPrompt) -> str:
            prompts.append(prompt)
            return "Paris"

        backends = _long_backends(answer)
        graph = standard_rag.build(lambda c: backends).compile()
        state = State(**graph.invoke(InputState(question="capital of France?"), context=context))
        [prompt] = prompts
        return state, "\n".join(m.content for m in prompt.messages)

    state, sent = sent_to_the_model(Context(compress_answer=True))
    assert [t.node for t in state.timings] == ["retrieve", "compress", "answer"]
    assert len(state.compression) == 10
    assert sum(c.words_after for c in state.compression) < 0.5 * sum(c.words_before for c in state.compression)
    for i in range(10):
        assert f"Paris is the capital of France number {i}." in sent  # each passage's best sentence is kept
    assert "Trains run on time" not in sent and "Cheese is made" not in sent  # the rest was cut before the model
    for context in (Context(), Context(compress=True)):  # compress is the drafts' knob: standard reads all
        _, plain = sent_to_the_model(context)
        assert "Trains run on time" in plain and "Cheese is made" in plain


def test_the_fallback_reads_the_passages_as_retrieved_unless_compress_answer(tmp_path: Path) -> None:
    """Compressed drafts, low confidence: the verifier's answer from all passages reads their whole text (the
    1.5B reader loses accuracy on compressed passages); with compress_answer it reads what the drafts read."""

    def fallback_prompt(**knobs: object) -> tuple[State, str]:
        sent: list[str] = []

        def reply(prompt: ChatPrompt) -> str:
            if prompt.prefill.strip() == "Answer:":  # the answer from all passages
                sent.append("\n".join(m.content for m in prompt.messages))
                return "Paris"
            return "capital of France"

        backends = _long_backends(reply)
        verifier = backends.verifier
        assert isinstance(verifier, FakeLLM)
        verifier.judge = lambda c: (-2.0, 0.5)  # low confidence: the run falls back
        scripted = backends
        context = Context.model_validate(
            {"confidence_model": p_yes_confidence(tmp_path), "seed": 1, "compress": True, **knobs}
        )
        state = run(scripted, context)
        assert state.decision == "fallback" and len(sent) == 1
        return state, sent[0]

    state, whole = fallback_prompt()
    assert [t.node for t in state.timings][:2] == ["retrieve", "compress"]
    assert "Trains run on time" not in "".join(p.text for p in state.passages)  # the drafts read compressed text
    assert whole.count("Trains run on time") == 10  # the fallback read every passage whole
    _, compressed = fallback_prompt(compress_answer=True)
    assert "Trains run on time" not in compressed and compressed.count("Paris is the capital") == 10


def test_trace_shows_per_passage_what_compression_kept(tmp_path: Path) -> None:
    backends, _, _ = make(paris_judge)
    traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
    result = ask_run(
        "What is the capital of France?", Context(seed=3, compress=True), traces=traces, provider=lambda c: backends
    )
    assert result.run_id is not None
    trace = traces.get(result.run_id)
    step = next(s for s in trace.steps if s.node == "compress")
    retrieved = next(s for s in trace.steps if s.node == "retrieve").writes["passages"]
    parts = step.writes["compression"]
    assert [c["passage_id"] for c in parts] == [p["id"] for p in retrieved] == step.reads["passage_ids"]
    assert all({"tier", "sentences", "kept", "relevance", "words_before", "words_after"} <= set(c) for c in parts)
    assert [p["id"] for p in step.writes["passages"]] == [p["id"] for p in retrieved]
    console = Console(record=True, width=200)
    render_trace(trace, console)
    text = console.export_text()
    assert "kept (sentences · words · tier)" in text and "of 10 passages" in text
