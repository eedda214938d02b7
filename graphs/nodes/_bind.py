"""Binds node functions to a backend provider and records each node's wall time in the state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from graphs.backends import BackendProvider, Backends, NodeObserver
from graphs.context import Context
from graphs.state import NodeTiming

NodeFn = Callable[[Any, Context, Backends], dict[str, Any]]


def bind(name: str, fn: NodeFn, provider: BackendProvider) -> Any:
    """Wrap ``fn(state, context, backends)`` as a LangGraph node ``(state, runtime)`` that also times itself.

    Args:
        name: Node name (recorded with the timing).
        fn: The node logic.
        provider: Maps the run's context to backends.

    Returns:
        The node callable (typed ``Any``: LangGraph's node protocols are overloads mypy cannot match to a
        wrapper whose state argument is either ``State`` or a ``Send`` payload).
    """

    def node(state: Any, runtime: Runtime[Context], config: RunnableConfig) -> dict[str, Any]:
        start = time.time()
        t0 = time.perf_counter()
        context = context_of(runtime)
        backends = provider(context)
        # Runs no driver traces (Studio / langgraph dev) are recorded from here (see app.trace.live).
        observer: NodeObserver | None = getattr(backends, "observer", None)
        task_id = str((config.get("metadata") or {}).get("langgraph_checkpoint_ns") or uuid.uuid4().hex)
        if observer is not None:
            observer.started(config, name, task_id, state, context)
        try:
            update = fn(state, context, backends)
        except Exception as exc:
            if observer is not None:
                observer.finished(config, name, task_id, state, None, exc)
            raise
        seconds = time.perf_counter() - t0
        timing = NodeTiming(node=name, round=getattr(state, "round", 0), start=start, seconds=seconds)
        earlier = update.get("timings")
        if isinstance(earlier, Overwrite):  # a node that resets the timings (condense) keeps its own
            update = {**update, "timings": Overwrite([*earlier.value, timing])}
        else:
            update = {**update, "timings": [timing]}
        if observer is not None:
            observer.finished(config, name, task_id, state, update)
        return update

    node.__name__ = name
    node.__doc__ = fn.__doc__
    return node


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's context as a validated ``Context`` (defaults when none was given, a dict from the API coerced)."""
    ctx: Any = runtime.context
    if ctx is None:
        return Context()
    if isinstance(ctx, Context):
        return ctx
    return Context.model_validate(ctx)
