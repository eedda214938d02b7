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


def test_the_confidence_line_names_what_the_draft_did_not_what_its_task_fixes() -> None:
    from app.ask import _confidence_line
    from graphs.result import ConfidenceOut

    terms = {"p_yes": 0.3, "margin": -0.58, "mcq": -0.42, "open_book_mcq": 0.6, "open_book_span": -0.2}
    inputs = {"p_yes": 0.88, "margin": 0.9, "mcq": 0.0, "open_book_mcq": 0.0, "open_book_span": -1.04}
    line = _confidence_line(
        ConfidenceOut(value=0.38, draft=2, inputs=inputs, contributions=terms, votes=1, model="m")
    ).plain
    assert "open_book_mcq 0.00" in line  # every input is listed
    largest = line.split("Largest logit terms: ")[1]
    assert largest == "margin -0.58, p_yes +0.30, open_book_span -0.20."  # the task's constant (+0.18) ranks last
    mcq = _confidence_line(ConfidenceOut(value=0.5, draft=0, inputs={**inputs, "mcq": 1.0}, contributions=terms,
                                         votes=1, model="m")).plain  # fmt: skip
    assert "task (multiple choice) -0.62" in mcq and "open_book_span" not in mcq.split("Largest logit terms: ")[1]
    assert "(only it gives its answer; m)" in line
    three = _confidence_line(ConfidenceOut(value=0.5, draft=0, inputs=inputs, contributions=terms, votes=3, model="m"))
    assert "(3 drafts agree; m)" in three.plain
