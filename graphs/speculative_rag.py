"""The Speculative RAG graph (reads like the diagram in the README).

[condense] -> retrieve -> partition -> draft x m (Send, parallel) -> verify -> reflect -> answer
                ^                                                               |  \
                +------------------- retry: rewritten query, new passages ------+   fallback (low confidence:
                                                                                    the verifier reads all passages)

``condense`` runs first in a chat run (input ``messages`` ending with a user turn): it turns a follow-up into a
standalone question. A plain ``question`` input starts at ``retrieve``.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from graphs.backends import BackendProvider, configured_backends
from graphs.context import Context
from graphs.nodes._bind import NodeFn, bind
from graphs.nodes.answer import answer, fallback
from graphs.nodes.compress import after_retrieve, compress
from graphs.nodes.condense import condense, route_start
from graphs.nodes.draft import draft
from graphs.nodes.partition import partition
from graphs.nodes.reflect import after_reflect, reflect
from graphs.nodes.retrieve import retrieve
from graphs.nodes.verify import verify
from graphs.state import DraftTask, InputState, State


def fan_out(state: State) -> list[Send] | Literal["reflect"]:
    """One ``draft`` branch per subset; straight to ``reflect`` when there is nothing to draft from."""
    if not state.subsets:
        return "reflect"
    by_id = {p.id: p for p in state.passages}
    return [
        Send(
            "draft",
            DraftTask(
                question=state.question,
                round=state.round,
                subset=i,
                passages=[by_id[x] for x in s],
                choices=dict(state.choices),
            ),
        )
        for i, s in enumerate(state.subsets)
    ]


def build(provider: BackendProvider = configured_backends) -> StateGraph[State, Context, InputState, State]:
    """The uncompiled graph, its nodes bound to ``provider``."""
    g = StateGraph(State, context_schema=Context, input_schema=InputState)
    nodes: list[tuple[str, NodeFn]] = [
        ("condense", condense),
        ("retrieve", retrieve),
        ("compress", compress),
        ("partition", partition),
        ("draft", draft),
        ("verify", verify),
        ("reflect", reflect),
        ("answer", answer),
        ("fallback", fallback),
    ]
    for name, fn in nodes:
        g.add_node(name, bind(name, fn, provider))
    g.add_conditional_edges(START, route_start, ["condense", "retrieve"])
    g.add_edge("condense", "retrieve")
    g.add_conditional_edges("retrieve", after_retrieve("partition", "compress"), ["compress", "partition"])
    g.add_edge("compress", "partition")
    g.add_conditional_edges("partition", fan_out, ["draft", "reflect"])
    g.add_edge("draft", "verify")
    g.add_edge("verify", "reflect")
    g.add_conditional_edges("reflect", after_reflect, ["retrieve", "fallback", "answer"])
    g.add_edge("answer", END)
    g.add_edge("fallback", END)
    return g


def make_graph() -> CompiledStateGraph[State, Context, InputState, State]:
    """Compiled Speculative RAG graph with backends from settings (langgraph.json, CLI and server entry point)."""
    return build(configured_backends).compile(name="speculative_rag")
