"""Graph nodes: one module per step of Speculative RAG."""
