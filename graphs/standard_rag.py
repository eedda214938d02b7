"""Standard RAG, the baseline: [condense ->] retrieve -> one answer from all passages (same nodes and backends).

``condense`` runs first in a chat run (input ``messages`` ending with a user turn), as in Speculative RAG.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs.backends import BackendProvider, configured_backends
from graphs.context import Context
from graphs.nodes._bind import bind
from graphs.nodes.answer import standard_answer
from graphs.nodes.compress import after_retrieve, compress
from graphs.nodes.condense import condense, route_start
from graphs.nodes.retrieve import retrieve
from graphs.state import InputState, State


def build(provider: BackendProvider = configured_backends) -> StateGraph[State, Context, InputState, State]:
    """The uncompiled baseline graph."""
    g = StateGraph(State, context_schema=Context, input_schema=InputState)
    g.add_node("condense", bind("condense", condense, provider))
    g.add_node("retrieve", bind("retrieve", retrieve, provider))
    g.add_node("compress", bind("compress", compress, provider))
    g.add_node("answer", bind("answer", standard_answer, provider))
    g.add_conditional_edges(START, route_start, ["condense", "retrieve"])
    g.add_edge("condense", "retrieve")
    g.add_conditional_edges("retrieve", after_retrieve("answer", "compress_answer"), ["compress", "answer"])
    g.add_edge("compress", "answer")
    g.add_edge("answer", END)
    return g


def make_graph() -> CompiledStateGraph[State, Context, InputState, State]:
    """Compiled standard RAG graph. Backends from settings."""
    return build(configured_backends).compile(name="standard_rag")
