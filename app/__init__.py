"""Speculative RAG as a LangGraph application."""
