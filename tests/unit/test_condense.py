"""condense with fakes: the question of a chat turn, follow-ups rewritten from the thread's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from app.llm.protocol import ChatPrompt
from app.trace.capture import run_traced
from app.trace.store import SQLiteTraceStore
from graphs import speculative_rag, standard_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.nodes.condense import clean_rewrite, format_history
from graphs.state import ChatTurn, InputState, State, as_turn, state_serializer
from tests.fakes import FakeLLM
from tests.unit.test_graph import make, paris_judge

REWRITE = "Where does the Seine flow?"


def rewriting(backends: StaticBackends, prompts: list[ChatPrompt]) -> StaticBackends:
    """The same backends with a verifier that records its generate prompts and always rewrites to REWRITE."""

    def reply(p: ChatPrompt) -> str:
        prompts.append(p)
        return REWRITE

    verifier = FakeLLM(reply=reply, judge=paris_judge)
    return StaticBackends(drafter=backends.drafter, verifier=verifier, embedder=backends.embedder, store=backends.store)


def user(text: str) -> ChatTurn:
    return ChatTurn(role="user", content=text)


def test_first_turn_is_the_question_as_written_without_a_model_call() -> None:
    prompts: list[ChatPrompt] = []
    backends = rewriting(make(paris_judge)[0], prompts)
    graph = speculative_rag.build(lambda ctx: backends).compile()
    state = State(
        **graph.invoke(InputState(messages=[user(" What is the capital of France? ")]), context=Context(n_drafts=5))
    )
    assert state.question == state.original_question == "What is the capital of France?"
    assert prompts == []  # verifier.generate was not called (no history, max_rounds not reached)
    assert [t.node for t in state.timings][:2] == ["condense", "retrieve"]
    assert state.messages[-1] == ChatTurn(role="assistant", content=state.answer)


def test_follow_up_is_rewritten_from_the_history() -> None:
    prompts: list[ChatPrompt] = []
    backends = rewriting(make(paris_judge)[0], prompts)
    graph = standard_rag.build(lambda ctx: backends).compile()
    history = [user("Tell me about Paris."), ChatTurn(role="assistant", content="Paris is the capital of France.")]
    state = State(
        **graph.invoke(InputState(messages=[*history, user("and which river?")]), context=Context(n_drafts=5))
    )
    assert state.original_question == "and which river?"
    assert state.question == REWRITE
    rendered = prompts[0].messages[-1].content
    assert "User: Tell me about Paris.\nAssistant: Paris is the capital of France." in rendered
    assert "Follow-up message: and which river?" in rendered
    assert "{" not in rendered


def test_thread_history_comes_from_the_checkpointer_and_per_run_state_is_reset() -> None:
    prompts: list[ChatPrompt] = []
    backends = rewriting(make(paris_judge)[0], prompts)
    graph = speculative_rag.build(lambda ctx: backends).compile(checkpointer=InMemorySaver(serde=state_serializer()))
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
    first = State(
        **graph.invoke(
            InputState(messages=[user("What is the capital of France?")]),
            config,
            context=Context(n_drafts=5, max_rounds=1),
        )
    )
    second = State(
        **graph.invoke(InputState(messages=[user("and its river?")]), config, context=Context(n_drafts=5, max_rounds=1))
    )
    assert [m.role for m in second.messages] == ["user", "assistant", "user", "assistant"]
    assert second.messages[1].content == first.answer
    assert second.question == REWRITE and second.original_question == "and its river?"
    assert "User: What is the capital of France?" in prompts[-1].messages[-1].content
    # the second run starts afresh: its own drafts, one round, timings from condense on
    assert len(second.drafts) == 5 and len(second.rounds) == 1
    assert {p.round for p in second.all_passages} == {0} and len(second.all_passages) == 10
    assert second.timings[0].node == "condense" and len(second.timings) == 11


def test_the_trace_shows_the_original_and_the_rewritten_question(tmp_path: Path) -> None:
    prompts: list[ChatPrompt] = []
    backends = rewriting(make(paris_judge)[0], prompts)
    graph = speculative_rag.build(lambda ctx: backends).compile(name="speculative_rag")
    turns = [user("Tell me about Paris."), ChatTurn(role="assistant", content="A city."), user("and which river?")]
    trace = run_traced(
        graph,
        "and which river?",
        Context(n_drafts=5, max_rounds=1),
        traces=SQLiteTraceStore(tmp_path / "t.sqlite"),
        input=InputState(messages=turns),
    )
    assert [s.node for s in trace.steps][:2] == ["condense", "retrieve"]
    condense = trace.steps[0]
    assert condense.reads == {"message": "and which river?", "history_turns": 2}
    assert condense.writes == {"original_question": "and which river?", "question": REWRITE, "rewritten": True}
    assert trace.steps[1].reads["query"] == REWRITE
    assert trace.result is not None and trace.result.question == REWRITE
    answer = trace.steps[-1]
    assert answer.writes["messages"] == [{"role": "assistant", "content": trace.result.answer}]


def test_a_plain_question_skips_condense() -> None:
    backends = make(paris_judge)[0]
    graph = speculative_rag.build(lambda ctx: backends).compile()
    state = State(**graph.invoke(InputState(question="What is the capital of France?"), context=Context(n_drafts=5)))
    assert "condense" not in [t.node for t in state.timings] and state.messages == []


def test_rewrite_cleaning_and_history_format() -> None:
    assert clean_rewrite(' Standalone question: "When was he born?"\nmore') == "When was he born?"
    assert clean_rewrite("\n") == ""
    assert clean_rewrite("User: Who deciphered the hieroglyphs?") == "Who deciphered the hieroglyphs?"
    turns = [user("x" * 700), ChatTurn(role="assistant", content="a\nb"), ChatTurn(role="system", content="s")]
    text = format_history(turns)
    assert text.splitlines()[0].endswith(" ...") and len(text.splitlines()[0]) < 620
    assert "Assistant: a b" in text


def test_the_trace_renders_the_condense_step() -> None:
    from datetime import UTC, datetime

    from app.trace.model import Step
    from app.trace.render import step_summary

    now = datetime.now(UTC)
    step = Step(
        index=0,
        node="condense",
        round=0,
        task_id="t",
        started_at=now,
        ended_at=now,
        seconds=0.0,
        writes={"original_question": "and which river?", "question": REWRITE, "rewritten": True},
    )
    assert step_summary(step) == f'"and which river?" → "{REWRITE}"'
    same = step.model_copy(update={"writes": {"original_question": "q?", "question": "q?", "rewritten": False}})
    assert step_summary(same) == '"q?" (no earlier turns to resolve)'


def test_json_turns_from_the_langgraph_api_or_studio_are_accepted() -> None:
    prompts: list[ChatPrompt] = []
    backends = rewriting(make(paris_judge)[0], prompts)
    graph = speculative_rag.build(lambda ctx: backends).compile()
    turns: Any = [
        {"type": "human", "content": "Tell me about Paris."},
        {"role": "assistant", "content": [{"type": "text", "text": "A city."}]},
        {"role": "user", "content": "and which river?"},
    ]
    json_input: Any = {"messages": turns}
    state = State(**graph.invoke(json_input, context=Context(n_drafts=5, max_rounds=1)))
    assert state.original_question == "and which river?" and state.question == REWRITE
    assert "User: Tell me about Paris.\nAssistant: A city." in prompts[0].messages[-1].content
    with pytest.raises(ValueError, match="not a chat turn"):
        as_turn({"role": "robot", "content": "x"})


def test_a_second_question_on_a_thread_does_not_inherit_the_first_runs_drafts() -> None:
    """Plain-question runs on one checkpointed thread (as Studio does): each run starts clean."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs import speculative_rag
    from graphs.context import Context
    from graphs.state import InputState, State
    from tests.unit.test_graph import make, paris_judge

    backends, _, _ = make(paris_judge)
    graph = speculative_rag.build(lambda ctx: backends).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
    first = State(
        **graph.invoke(InputState(question="What is the capital of France?"), config, context=Context(n_drafts=5))
    )
    second = State(
        **graph.invoke(InputState(question="Which river flows through Paris?"), config, context=Context(n_drafts=5))
    )
    assert len(first.drafts) == 5 and len(second.drafts) == 5
    assert len(second.rounds) == 1 and second.rounds[0].query == "Which river flows through Paris?"
    assert second.chosen is not None and second.answer == second.drafts[second.chosen].answer
