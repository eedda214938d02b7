"""What the nodes run on: drafter, verifier, embedder and store, resolved per run context.

Nodes never build backends themselves; a ``BackendProvider`` maps a ``Context`` to ``Backends``. The default
provider loads the configured backends lazily (a model is loaded on first use and shared by later runs);
tests pass a provider with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig

from app.embed.protocol import Embedder
from app.llm.protocol import LanguageModel
from app.store.protocol import VectorStore
from graphs.context import Context


class Backends(Protocol):
    """The four backends a run uses."""

    @property
    def drafter(self) -> LanguageModel: ...
    @property
    def verifier(self) -> LanguageModel: ...
    @property
    def embedder(self) -> Embedder: ...
    @property
    def store(self) -> VectorStore: ...
    @property
    def drafter_lead(self) -> str:
        """The opening the drafter was tuned to write before an answer ("The documents say:"; "" for none): with
        it, ``Context.abstain_threshold`` can weigh answering against abstaining (``graphs.drafting.AbstainChoice``)."""
        ...


BackendProvider = Callable[[Context], Backends]


class NodeObserver(Protocol):
    """Hears every node start and end (backends may offer one as ``observer``; ``app.trace.live`` records
    the runs that no driver traces, e.g. from LangGraph Studio)."""

    def started(
        self, config: RunnableConfig | None, node: str, task_id: str, task_input: Any, context: Context
    ) -> None: ...

    def finished(
        self,
        config: RunnableConfig | None,
        node: str,
        task_id: str,
        task_input: Any,
        update: Mapping[str, Any] | None,
        error: BaseException | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class StaticBackends:
    """Backends given up front (tests, benchmarks, embedding the graph in another program)."""

    drafter: LanguageModel
    verifier: LanguageModel
    embedder: Embedder
    store: VectorStore
    drafter_lead: str = ""


class ConfiguredBackends:
    """Backends from process settings, each loaded on first access (standard RAG never loads the drafter)."""

    def __init__(self, store_path: Path) -> None:
        self._store_path = store_path

    @cached_property
    def drafter(self) -> LanguageModel:
        from app.llm.factory import get_llm
        from app.settings import get_settings

        s = get_settings()
        return get_llm(s.drafter, threads=s.llm_threads, cache_dir=s.model_cache)

    @cached_property
    def drafter_lead(self) -> str:
        from app.models import answer_lead
        from app.settings import get_settings

        return answer_lead(get_settings().drafter)

    @cached_property
    def verifier(self) -> LanguageModel:
        from app.llm.factory import get_llm
        from app.settings import get_settings

        s = get_settings()
        return get_llm(s.verifier, threads=s.llm_threads, cache_dir=s.model_cache)

    @cached_property
    def embedder(self) -> Embedder:
        from app.embed.factory import get_embedder
        from app.settings import get_settings

        return get_embedder(get_settings().embedder)

    @cached_property
    def observer(self) -> NodeObserver:
        """Records runs that no driver traces (Studio, ``langgraph dev``) into the trace store from settings."""
        from app.trace.live import LiveTraces
        from app.trace.store import open_trace_store

        return LiveTraces(open_trace_store())

    @cached_property
    def store(self) -> VectorStore:
        from app.settings import get_settings
        from app.store.factory import open_store

        return open_store(get_settings().store, path=self._store_path, embedder=self.embedder, create=False)


_configured: dict[Path, ConfiguredBackends] = {}


def configured_backends(context: Context) -> Backends:
    """The default provider: settings' backends, the store from ``context.store`` (or settings)."""
    from app.settings import get_settings

    path = Path(context.store).expanduser() if context.store else get_settings().store.path
    path = path.resolve()
    if path not in _configured:
        _configured[path] = ConfiguredBackends(path)
    return _configured[path]
