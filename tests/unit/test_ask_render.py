"""The terminal rendering of `specrag ask`: every score readable at a common terminal width."""

import re

import pytest
from rich.console import Console

from app.ask import render
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.result import to_result
from graphs.state import InputState, State
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore
from tests.unit.test_graph import DOCS

LONG = "The documents state that the capital of the country described in the first document is a large old city"


@pytest.mark.parametrize("width", [100, 120])
def test_drafts_table_shows_every_score_in_full(width: int) -> None:
    # long answers (as the real drafter writes), long totals, and a retry so the round column shows
    emb = FakeEmbedder()
    backends = StaticBackends(
        drafter=FakeLLM(reply=lambda p: f"Because.\nAnswer: {LONG} {len(p.messages[-1].content)}"),
        verifier=FakeLLM(reply=lambda p: "capital city", judge=lambda c: (-104.25 - len(c) / 100, 0.5)),
        embedder=emb,
        store=FakeStore(emb, DOCS),
    )
    graph = speculative_rag.build(lambda ctx: backends).compile()
    context = Context(retry_on="low_confidence", fallback=False)  # P(Yes) 0.5: low confidence, retry, accept
    state = State(**graph.invoke(InputState(question="What is the capital of France?"), context=context))
    result = to_result(state, graph="speculative_rag", seconds=1.0)
    console = Console(width=width, record=True, highlight=False)
    render(result, console)
    text = console.export_text()
    assert "…" not in "".join(re.findall(r"-\d+\.\d…", text)), "a number was cut"
    for d in result.drafts:
        assert d.scores is not None and d.scores.total is not None
        assert f"{d.scores.total:.1f}" in text
        assert f"{d.scores.self_consistency:.1f}" in text
    assert f"★{result.chosen}" in text
    assert "round" in text and "Round 2" in text
