"""Runs chat turns through the graphs: threads from the checkpointer, bounded concurrency, a trace per run.

A thread's history is its checkpointed ``messages`` (each run appends the user's turn and the assistant's answer).
New turns are taken from the request: on a new thread, every user and assistant message of the request (a client
may start with a history of its own); on a thread that has history, the user messages after the request's last
assistant message (clients that resend the whole conversation and clients that send only the follow-up both work).

Backpressure: at most ``max_concurrent_runs`` runs go at once (the embedded models are serialised per model
anyway) and at most ``max_queued_runs`` requests wait for a slot; one more is answered 429 with ``Retry-After`` at
once, and a request that waited ``queue_timeout_s`` without getting a slot gets 503. Runs on the same thread are
serialised (waiting for the thread counts as queued).

Faults: a run still going after ``run_timeout_s`` is cancelled (504; its trace names the node that was running).
A backend call blocked in a worker thread cannot be killed, so every backend call of a run is counted
(:class:`RunWork`, through the :func:`tracked` provider the graphs are built with): a run that ended while one of
its calls is still blocked keeps its slot until the call returns, and the calls it would make after that are
refused. The slot count thus never promises capacity that a hung backend still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import statistics
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from app.ask import check_question
from app.server.errors import APIError
from app.trace.capture import EventCallback, arun_traced
from app.trace.model import RunTrace, new_run_id
from app.trace.store import TraceStore
from graphs.backends import BackendProvider, Backends
from graphs.context import Context
from graphs.state import ChatTurn, InputState, State, as_turn

log = logging.getLogger(__name__)

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


class RunAbandonedError(RuntimeError):
    """A backend call of a run that has already ended (timed out, failed, or its client left) is refused."""


class RunWork:
    """The backend calls one run has in flight, counted from the worker threads that make them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._closed: str | None = None
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def in_flight(self) -> list[str]:
        """The backend calls going on now (e.g. ``['drafter.generate', 'drafter.generate']``)."""
        with self._lock:
            return sorted(self._calls.elements())

    def enter(self, call: str) -> None:
        """A worker thread starts ``call`` (refused once the run has ended).

        Raises:
            RunAbandonedError: The run has ended; its remaining work must not occupy the backends.
        """
        with self._lock:
            if self._closed is not None:
                raise RunAbandonedError(f"{call} not started: the run has ended ({self._closed})")
            self._calls[call] += 1

    def exit(self, call: str) -> None:
        """``call`` returned (or raised); the last call of an ended run wakes :meth:`close`'s waiter."""
        with self._lock:
            self._calls[call] -= 1
            if self._calls[call] <= 0:
                del self._calls[call]
            wake, loop = (self._idle, self._loop) if not self._calls else (None, None)
        if wake is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the event loop has closed (server shutdown)
                loop.call_soon_threadsafe(wake.set)

    def close(self, reason: str) -> asyncio.Event | None:
        """End the run: refuse its further backend calls.

        Returns:
            ``None`` when no call is in flight, else an event set (on this event loop) when the last one returns.
        """
        with self._lock:
            self._closed = reason
            if not self._calls:
                return None
            self._idle = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            return self._idle


_WORK: ContextVar[RunWork | None] = ContextVar("specrag_run_work", default=None)
"""The :class:`RunWork` of the run the current code belongs to (worker threads of its nodes inherit it)."""


class _TrackedCalls:
    """A backend whose method calls are counted in the current run's :class:`RunWork` (attributes pass through)."""

    def __init__(self, target: Any, role: str) -> None:
        self._target = target
        self._role = role

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value
        call = f"{self._role}.{name}"

        @functools.wraps(value)
        def counted(*args: Any, **kwargs: Any) -> Any:
            work = _WORK.get()
            if work is None:  # not part of a chat run (e.g. the question check)
                return value(*args, **kwargs)
            work.enter(call)
            try:
                return value(*args, **kwargs)
            except Exception as exc:
                exc.add_note(f"raised by {call}")
                raise
            finally:
                work.exit(call)

        return counted

    def __repr__(self) -> str:
        return f"tracked({self._target!r})"


class TrackedBackends:
    """``Backends`` whose drafter, verifier, embedder and store calls are counted per run (see :func:`tracked`)."""

    def __init__(self, inner: Backends) -> None:
        self._inner = inner

    @property
    def drafter(self) -> Any:
        return _TrackedCalls(self._inner.drafter, "drafter")

    @property
    def verifier(self) -> Any:
        return _TrackedCalls(self._inner.verifier, "verifier")

    @property
    def embedder(self) -> Any:
        return _TrackedCalls(self._inner.embedder, "embedder")

    @property
    def store(self) -> Any:
        return _TrackedCalls(self._inner.store, "store")

    @property
    def drafter_lead(self) -> str:
        return self._inner.drafter_lead

    def __getattr__(self, name: str) -> Any:  # e.g. ``observer``
        return getattr(self._inner, name)


def tracked(provider: BackendProvider) -> BackendProvider:
    """``provider`` with every backend call counted in the calling run's :class:`RunWork` (build graphs with it)."""

    def provide(context: Context) -> Backends:
        return TrackedBackends(provider(context))

    return provide


@dataclass(eq=False)
class Lease:
    """A run slot and the thread's lock, from admission to the end of the request."""

    thread_id: str
    work: RunWork = field(default_factory=RunWork)


class ChatRunner:
    """Prepares and executes chat turns.

    Args:
        graphs: Compiled graph per graph name ('speculative', 'standard'), with a checkpointer; build them with a
            :func:`tracked` provider so that a hung backend call keeps its slot (see the module docstring).
        traces: Where run traces go.
        provider: Backends (to check a question before the run).
        max_concurrent_runs: Runs at once.
        max_queued_runs: Requests that may wait for a slot (one more gets 429).
        queue_timeout_s: How long a request waits for a slot (503 after).
        run_timeout_s: Longest run (504 after); ``None``: no limit.
        stream_chunk_chars: About how many characters each streamed content delta holds.
    """

    def __init__(
        self,
        graphs: Mapping[str, Graph],
        traces: TraceStore,
        provider: BackendProvider,
        *,
        max_concurrent_runs: int = 1,
        max_queued_runs: int = 8,
        queue_timeout_s: float = 600.0,
        run_timeout_s: float | None = None,
        stream_chunk_chars: int = 24,
    ) -> None:
        self.graphs = dict(graphs)
        self.traces = traces
        self.provider = provider
        self.max_concurrent_runs = max_concurrent_runs
        self.max_queued_runs = max_queued_runs
        self.queue_timeout_s = queue_timeout_s
        self.run_timeout_s = run_timeout_s
        self.stream_chunk_chars = stream_chunk_chars
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._thread_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._queued = 0
        self._running = 0
        self._stuck: set[asyncio.Task[None]] = set()
        self._recent_runs_s: deque[float] = deque(maxlen=8)

    def load(self) -> dict[str, int]:
        """Runs going, requests queued, and slots held by ended runs whose backend calls have not returned."""
        return {"running": self._running, "queued": self._queued, "stuck": len(self._stuck)}

    def retry_after_s(self) -> int:
        """The ``Retry-After`` of a refused request: about one run's duration, when a queue place frees up (the
        median of the last 8 runs, robust to a cold first run; 5 s before any run has ended)."""
        return max(1, math.ceil(statistics.median(self._recent_runs_s) if self._recent_runs_s else 5.0))

    def _busy(self, retry_after: int, message: str, *, status: int, code: str) -> APIError:
        return APIError(status, message, code=code, headers={"Retry-After": str(retry_after)})

    @asynccontextmanager
    async def lease(self, thread_id: str) -> AsyncIterator[Lease]:
        """Hold the thread's lock and a run slot; on exit, give the slot back once the run's backend calls have.

        Raises:
            APIError: 429 at once when the request would have to wait and ``max_queued_runs`` requests already
                do; 503 when no slot became free within ``queue_timeout_s``. Both carry ``Retry-After``.
        """
        lock = self._thread_locks.get(thread_id)
        if lock is None:
            lock = asyncio.Lock()
            self._thread_locks[thread_id] = lock
        if (self._slots.locked() or lock.locked()) and self._queued >= self.max_queued_runs:
            wait = self.retry_after_s()
            raise self._busy(
                wait,
                f"the server is busy: {self.max_concurrent_runs} run(s) going and {self._queued} request(s) waiting, "
                f"the most it queues (SPECRAG_SERVER__MAX_QUEUED_RUNS); retry after {wait} s",
                status=429,
                code="queue_full",
            )
        self._queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await lock.acquire()
                try:
                    await self._slots.acquire()
                except BaseException:
                    lock.release()
                    raise
        except TimeoutError:
            wait = self.retry_after_s()
            raise self._busy(
                wait,
                f"the server is busy: no run slot became free within {self.queue_timeout_s:g} s; retry later",
                status=503,
                code="server_busy",
            ) from None
        finally:
            self._queued -= 1
        lease = Lease(thread_id)
        self._running += 1
        try:
            yield lease
        finally:
            self._running -= 1
            lock.release()
            self._give_back(lease)

    def _give_back(self, lease: Lease) -> None:
        """Release the slot now, or, while a backend call of the ended run is still blocked, when it returns."""
        calls = lease.work.in_flight()
        idle = lease.work.close("ended")
        if idle is None:
            self._slots.release()
            return
        log.warning(
            "a run on thread %s ended while %s had not returned: its run slot is held until they do",
            lease.thread_id,
            ", ".join(calls) or "a backend call",
        )

        async def settle() -> None:
            try:
                await idle.wait()
                log.info("the blocked backend calls of a run on thread %s returned: slot free", lease.thread_id)
            finally:
                self._slots.release()

        task = asyncio.get_running_loop().create_task(settle())
        self._stuck.add(task)
        task.add_done_callback(self._stuck.discard)

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

    async def execute(
        self, run: ChatRun, on_event: EventCallback | None = None, *, lease: Lease | None = None
    ) -> RunTrace:
        """Run the turn through its graph on its thread and save the trace (call it holding ``lease``).

        Args:
            run: The prepared turn.
            on_event: Progress callback (see :func:`arun_traced`).
            lease: The lease held for the run: its backend calls are counted there (see :meth:`lease`).

        Raises:
            RunTimeoutError: The run took longer than ``run_timeout_s`` (its partial trace is saved).
            Exception: Whatever the graph raised (its partial trace is saved; a note names the run id).
        """
        token = _WORK.set(lease.work if lease is not None else None)
        t0 = time.monotonic()
        try:
            return await arun_traced(
                self.graphs[run.graph],
                run.question,
                run.context,
                traces=self.traces,
                run_id=run.run_id,
                thread_id=run.thread_id,
                input=InputState(messages=list(run.turns)),
                on_event=on_event,
                timeout_s=self.run_timeout_s,
            )
        finally:
            _WORK.reset(token)
            self._recent_runs_s.append(time.monotonic() - t0)
