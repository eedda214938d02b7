"""Runs chat turns through the graphs: threads from the checkpointer, bounded concurrency, a trace per run.

A thread's history is its checkpointed ``messages`` (each run appends the user's turn and the assistant's answer).
New turns are taken from the request: on a new thread, every user and assistant message of the request (a client
may start with a history of its own); on a thread that has history, the user messages after the request's last
assistant message (clients that resend the whole conversation and clients that send only the follow-up both work).

Runs on the same thread are serialised, and at most ``max_concurrent_runs`` run at once (the embedded models are
serialised per model anyway); a request that cannot get a slot within ``queue_timeout_s`` gets 503.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from app.ask import check_question
from app.server.errors import APIError
from app.trace.capture import EventCallback, arun_traced
from app.trace.model import RunTrace, new_run_id
from app.trace.store import TraceStore
from graphs.backends import BackendProvider
from graphs.context import Context
from graphs.state import ChatTurn, InputState, State, as_turn

Graph = CompiledStateGraph[State, Context, InputState, State]


@dataclass(frozen=True, kw_only=True)
class ChatRun:
    """One prepared chat turn."""

    model: str
    """The model id requested (selects the graph)."""
    graph: Literal["speculative", "standard"]
    """Which graph."""
    thread_id: str
    """The thread it belongs to."""
    question: str
    """The user's last message as written (the trace's question; ``condense`` makes it standalone)."""
    turns: list[ChatTurn]
    """The new turns appended to the thread."""
    context: Context
    """Per-run knobs."""
    run_id: str
    """The run id (trace id)."""
    created: int = field(default_factory=lambda: int(time.time()))
    """When the request was accepted (seconds since the epoch)."""


def new_turns(request_turns: Sequence[ChatTurn], history: Sequence[ChatTurn]) -> list[ChatTurn]:
    """The turns of a request that the thread does not have yet (see the module docstring)."""
    if not history:
        return list(request_turns)
    last_assistant = max((i for i, t in enumerate(request_turns) if t.role == "assistant"), default=-1)
    return [t for t in request_turns[last_assistant + 1 :] if t.role == "user"]


class ChatRunner:
    """Prepares and executes chat turns.

    Args:
        graphs: Compiled graph per graph name ('speculative', 'standard'), with a checkpointer.
        traces: Where run traces go.
        provider: Backends (to check a question before the run).
        max_concurrent_runs: Runs at once.
        queue_timeout_s: How long a request waits for a slot.
        stream_chunk_chars: About how many characters each streamed content delta holds.
    """

    def __init__(
        self,
        graphs: Mapping[str, Graph],
        traces: TraceStore,
        provider: BackendProvider,
        *,
        max_concurrent_runs: int = 1,
        queue_timeout_s: float = 600.0,
        stream_chunk_chars: int = 24,
    ) -> None:
        self.graphs = dict(graphs)
        self.traces = traces
        self.provider = provider
        self.queue_timeout_s = queue_timeout_s
        self.stream_chunk_chars = stream_chunk_chars
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._thread_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def lease(self, thread_id: str) -> AsyncIterator[None]:
        """Hold the thread's lock and a run slot.

        Raises:
            APIError: 503 when no slot became free within ``queue_timeout_s``.
        """
        lock = self._thread_locks.get(thread_id)
        if lock is None:
            lock = asyncio.Lock()
            self._thread_locks[thread_id] = lock
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await lock.acquire()
                try:
                    await self._slots.acquire()
                except BaseException:
                    lock.release()
                    raise
        except TimeoutError:
            raise APIError(
                503,
                f"the server is busy: no run slot became free within {self.queue_timeout_s:g} s; retry later",
                code="server_busy",
            ) from None
        try:
            yield
        finally:
            self._slots.release()
            lock.release()

    def _config(self, thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    async def history(self, graph: str, thread_id: str) -> list[ChatTurn]:
        """The thread's checkpointed conversation (empty for a new thread)."""
        snapshot = await self.graphs[graph].aget_state(self._config(thread_id))
        messages: list[Any] = list((snapshot.values or {}).get("messages", []))
        return [as_turn(m) for m in messages]

    async def prepare(
        self,
        *,
        model: str,
        graph: Literal["speculative", "standard"],
        thread_id: str,
        request_turns: Sequence[ChatTurn],
        context: Context,
    ) -> ChatRun:
        """Work out the new turns and check the question (call it holding :meth:`lease`).

        Raises:
            APIError: 400 when the request adds no user turn to the thread.
            BadQuestionError, ContextOverflowError, StoreNotFoundError: From the question check.
        """
        turns = new_turns(request_turns, await self.history(graph, thread_id))
        if not turns or turns[-1].role != "user":
            raise APIError(400, "the last message must be a new user message", param="messages")
        question = turns[-1].content.strip()
        await asyncio.to_thread(check_question, question, context, graph, self.provider)
        return ChatRun(
            model=model,
            graph=graph,
            thread_id=thread_id,
            question=question,
            turns=turns,
            context=context,
            run_id=new_run_id(),
        )

    async def execute(self, run: ChatRun, on_event: EventCallback | None = None) -> RunTrace:
        """Run the turn through its graph on its thread and save the trace (call it holding :meth:`lease`).

        Raises:
            Exception: Whatever the graph raised (its partial trace is saved; a note names the run id).
        """
        return await arun_traced(
            self.graphs[run.graph],
            run.question,
            run.context,
            traces=self.traces,
            run_id=run.run_id,
            thread_id=run.thread_id,
            input=InputState(messages=list(run.turns)),
            on_event=on_event,
        )
