"""Speculative RAG as LangGraph graphs: state, context, nodes, and the two graphs (speculative, standard)."""
