"""The checkpointer contract: SQLite (temp file) and Postgres (real server) pass the same tests.

A tiny three-node StateGraph (no models) runs on a thread, stops before its last node, resumes, and is read back
through ``get_state_history`` and through a brand-new checkpointer on the same database (persistence).

Postgres: ``SPECRAG_TEST_POSTGRES_URL`` (set by ``.ci/run``), else a temporary cluster from Debian's binaries, else
skipped with the reason (a failure under CI=true).
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from pydantic import SecretStr

from app.checkpoint import make_async_checkpointer, make_checkpointer
from app.settings import CheckpointerSettings
from tests.contract.postgres import postgres_url  # noqa: F401 (a fixture)


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _node(name: str) -> Any:
    def run(state: State) -> dict[str, list[str]]:
        return {"steps": [name]}

    return run


def builder() -> StateGraph[State]:
    graph = StateGraph(State)
    for name in ("plan", "draft", "answer"):
        graph.add_node(name, _node(name))
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "draft")
    graph.add_edge("draft", "answer")
    graph.add_edge("answer", END)
    return graph


def thread() -> RunnableConfig:
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}"}}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointerSettings:
    if request.param == "sqlite":
        return CheckpointerSettings(provider="sqlite", path=tmp_path / "sub" / "checkpoints.sqlite")
    url = request.getfixturevalue("postgres_url")
    return CheckpointerSettings(provider="postgres", url=SecretStr(url), pool_size=2)


def test_interrupt_resume_history_and_persistence(settings: CheckpointerSettings) -> None:
    config = thread()
    with make_checkpointer(settings) as saver:
        graph = builder().compile(checkpointer=saver, interrupt_before=["answer"])
        assert graph.invoke(State(steps=[]), config) == {"steps": ["plan", "draft"]}
        paused = graph.get_state(config)
        assert paused.next == ("answer",)
        assert graph.invoke(None, config) == {"steps": ["plan", "draft", "answer"]}
        done = graph.get_state(config)
        assert done.next == ()
        history = list(graph.get_state_history(config))
        latest_two = list(graph.get_state_history(config, limit=2))
    # Newest first: after answer, after draft (the interrupt), after plan, the input, the empty start.
    assert [s.values.get("steps", []) for s in history] == [
        ["plan", "draft", "answer"],
        ["plan", "draft"],
        ["plan"],
        [],
        [],
    ]
    assert [s.next for s in history[:3]] == [(), ("answer",), ("draft",)]
    assert [s.config for s in latest_two] == [s.config for s in history[:2]]

    # A new checkpointer on the same database (as after a restart, or on another replica) sees the thread.
    with make_checkpointer(settings) as saver:
        graph = builder().compile(checkpointer=saver, interrupt_before=["answer"])
        state = graph.get_state(config)
        assert state.values == {"steps": ["plan", "draft", "answer"]}
        assert [s.config for s in graph.get_state_history(config)] == [s.config for s in history]
        # The thread continues: a second turn appends to the same state.
        assert graph.invoke(State(steps=["again"]), config)["steps"][:4] == ["plan", "draft", "answer", "again"]


def test_threads_are_isolated(settings: CheckpointerSettings) -> None:
    first, second = thread(), thread()
    with make_checkpointer(settings) as saver:
        graph = builder().compile(checkpointer=saver)
        graph.invoke(State(steps=["one"]), first)
        assert graph.get_state(second).values == {}
        assert list(graph.get_state_history(second)) == []
        assert graph.invoke(State(steps=["two"]), second)["steps"][0] == "two"
        assert graph.get_state(first).values["steps"][0] == "one"


def test_async_checkpointer(settings: CheckpointerSettings) -> None:
    config = thread()

    async def run() -> tuple[Any, tuple[str, ...]]:
        async with make_async_checkpointer(settings) as saver:
            graph = builder().compile(checkpointer=saver, interrupt_before=["answer"])
            await graph.ainvoke(State(steps=[]), config)
            paused = (await graph.aget_state(config)).next
            return await graph.ainvoke(None, config), paused

    result, paused = asyncio.run(run())
    assert paused == ("answer",)
    assert result == {"steps": ["plan", "draft", "answer"]}
    with make_checkpointer(settings) as saver:  # written asynchronously, read back synchronously
        assert builder().compile(checkpointer=saver).get_state(config).values == result


def test_memory_and_unknown_providers() -> None:
    with make_checkpointer(CheckpointerSettings(provider="memory")) as saver:
        graph = builder().compile(checkpointer=saver)
        assert graph.invoke(State(steps=[]), thread()) == {"steps": ["plan", "draft", "answer"]}
    bad = CheckpointerSettings.model_construct(provider="redis")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid options are memory, sqlite, postgres"), make_checkpointer(bad):
        pass
    with (
        pytest.raises(ValueError, match="SPECRAG_CHECKPOINTER__URL"),
        make_checkpointer(CheckpointerSettings(provider="postgres")),
    ):
        pass
