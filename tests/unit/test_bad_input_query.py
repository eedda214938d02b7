"""Hostile questions on the query path, with scripted fakes: any string (unicode, control characters, lone
surrogates, huge, empty, whitespace) gives an answer with a saved trace or a clean error, never a crash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from app import ask
from app.ask import BadQuestionError, check_question
from app.llm.protocol import ContextOverflowError
from app.trace.store import SQLiteTraceStore
from graphs.backends import StaticBackends
from graphs.context import Context
from tests.fakes import FakeLLM
from tests.unit.test_graph import make, paris_judge

PROPERTY = settings(
    database=None,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
ODD = st.sampled_from(["\x00", "\x1b[2J", "\u202e", "\u200b", "\ufeff", "\u3000", "\x1c", "\r\n", "{question}", "{{"])
PIECE = st.one_of(st.characters(), ODD, st.sampled_from(["capital ", "France ", " "]))
TEXT = st.lists(PIECE, max_size=60).map("".join)
QUESTION = st.one_of(
    TEXT,
    st.builds(lambda s, n: s * n, TEXT, st.integers(1, 3_000)),  # huge: up to ~100k characters
    st.builds(lambda a, c, b: a + c + b, TEXT, st.characters(categories=["Cs"]), TEXT),  # a lone surrogate
    st.sampled_from(["", " ", "\t\n", "\u3000\u2028", "\x1c\x1d\x1e\x1f", "\x00", "\ud800", "What is the capital?"]),
)


def backends(context_window: int = 4096) -> StaticBackends:
    base = make(paris_judge)[0]
    verifier = FakeLLM(reply=lambda p: "capital city France", judge=paris_judge, context_window=context_window)
    return StaticBackends(drafter=base.drafter, verifier=verifier, embedder=base.embedder, store=base.store)


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(PROPERTY, max_examples=500)
@given(question=QUESTION, graph=st.sampled_from(["speculative", "standard"]))
def test_check_question_accepts_or_refuses_cleanly(question: str, graph: ask.GraphName) -> None:
    fakes = backends()
    try:
        check_question(question, Context(), graph, lambda ctx: fakes)
    except BadQuestionError as exc:
        assert not question.strip() or not encodable(question), exc
        assert "\n" not in str(exc)
        event("BadQuestionError")
        return
    except ContextOverflowError as exc:
        assert len(question.split()) > 3_000 and "too long" in str(exc)
        event("ContextOverflowError")
        return
    assert question.strip() and encodable(question)
    event("accepted")


@pytest.mark.timeout(300)
def test_any_question_through_the_graph_gives_an_answer_or_a_clean_error(tmp_path: Path) -> None:
    traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
    fakes = backends()
    outcomes: list[str] = []

    @settings(PROPERTY, max_examples=200)
    @given(question=QUESTION, graph=st.sampled_from(["speculative", "standard"]))
    def check(question: str, graph: ask.GraphName) -> None:
        try:
            result = ask.run(question, Context(max_rounds=1), graph, traces=traces, provider=lambda ctx: fakes)
        except (BadQuestionError, ContextOverflowError) as exc:
            assert "\n" not in str(exc)
            outcomes.append(type(exc).__name__)
            return
        assert result.run_id and isinstance(result.answer, str)
        trace = traces.get(result.run_id)  # saved, and readable back
        assert trace.status == "ok" and trace.question == question.strip()
        outcomes.append("answer")

    check()
    print(f"\nquestions through the graph: {len(outcomes)} cases, {dict(Counter(outcomes))}")
    assert outcomes.count("answer") >= 50 and outcomes.count("BadQuestionError") >= 10, outcomes


@pytest.mark.parametrize("question", ["caf\udce9?", "\ud800", "ok \udfff then"])
def test_a_question_that_is_not_unicode_text_is_refused_before_the_run(question: str, tmp_path: Path) -> None:
    """Was: accepted, then the trace could not be saved (and a real model cannot tokenize it)."""
    fakes = backends()
    with pytest.raises(BadQuestionError, match="not valid Unicode text"):
        check_question(question, Context(), "speculative", lambda ctx: fakes)
    traces = SQLiteTraceStore(tmp_path / "traces.sqlite")
    with pytest.raises(BadQuestionError):
        ask.run(question, Context(), "speculative", traces=traces, provider=lambda ctx: fakes)
    assert traces.list() == []


def test_ask_cli_with_argv_bytes_that_are_not_utf8_is_one_error_line() -> None:
    """``specrag ask "$(printf 'caf\\xe9')"``: Python decodes such argv bytes to lone surrogates."""
    from app.cli import app

    result = CliRunner().invoke(app, ["ask", "caf\udce9?"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the question is not valid Unicode text"), result.output


def test_a_huge_question_is_a_context_overflow_not_a_crash() -> None:
    fakes = backends(context_window=2048)
    with pytest.raises(ContextOverflowError, match="the question is too long"):
        check_question("word " * 200_000, Context(), "speculative", lambda ctx: fakes)
    check_question("x" * 1_000_000, Context(), "speculative", lambda ctx: fakes)  # one "token" to the fake
