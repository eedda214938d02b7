"""condense: the question of a chat turn; a follow-up is rewritten into a standalone question before retrieval.

Runs first when the input carries ``messages`` ending with a user turn. Without earlier turns, the question is that
turn as written; with them, the verifier rewrites it from the history ("and when was he born?" becomes "When was
Champollion born?"). Under a checkpointer a thread's earlier run left its per-run state behind, so this node also
resets it (the ``messages`` history is kept).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from langgraph.types import Overwrite

from graphs import prompting
from graphs.backends import Backends
from graphs.context import Context
from graphs.state import ChatTurn, State, as_turn

HISTORY_TURNS = 6
"""Earlier turns shown to the verifier at most (the most recent ones)."""
TURN_CHARS = 600
"""Characters of each earlier turn shown at most."""

_LABEL = re.compile(r"^\s*(standalone question|question|user|assistant)\s*:\s*", re.IGNORECASE)


def turns_of(state: State) -> list[ChatTurn]:
    """The state's conversation as ``ChatTurn`` objects (API and Studio callers send JSON objects)."""
    return [as_turn(m) for m in state.messages]


def pending_question(state: State) -> bool:
    """Whether the conversation ends with a user turn (a chat run, which ``condense`` prepares)."""
    return bool(state.messages) and as_turn(state.messages[-1]).role == "user"


def route_start(state: State) -> Literal["condense", "retrieve"]:
    """Route from START: ``condense`` for a chat run, or when an earlier run on this thread left per-run state
    behind (it must be reset, or old drafts would compete); straight to ``retrieve`` for a fresh plain question."""
    leftovers = bool(state.timings or state.drafts or state.rounds or state.all_passages)
    return "condense" if pending_question(state) or leftovers else "retrieve"


def history_of(messages: list[ChatTurn]) -> list[ChatTurn]:
    """The user and assistant turns before the last user turn."""
    return [m for m in messages[:-1] if m.role in ("user", "assistant") and m.content.strip()]


def format_history(turns: list[ChatTurn]) -> str:
    """The most recent earlier turns, one 'User: ...' / 'Assistant: ...' line each, long ones shortened."""
    lines = []
    for m in turns[-HISTORY_TURNS:]:
        text = " ".join(m.content.split())
        if len(text) > TURN_CHARS:
            text = text[:TURN_CHARS].rstrip() + " ..."
        lines.append(f"{'User' if m.role == 'user' else 'Assistant'}: {text}")
    return "\n".join(lines)


def clean_rewrite(text: str) -> str:
    """The first line of the verifier's rewrite without a label ('Standalone question:', 'User:') or quotes."""
    line = text.strip().split("\n", 1)[0]
    return _LABEL.sub("", line).strip().strip('"').strip()


def _reset() -> dict[str, Any]:
    """Per-run channels back to their initial values (a thread's earlier run left them set)."""
    return {
        "query": "",
        "round": 0,
        "passages": [],
        "all_passages": Overwrite([]),
        "quarantined": Overwrite([]),
        "compression": [],
        "clusters": [],
        "subsets": [],
        "drafts": Overwrite([]),
        "rounds": Overwrite([]),
        "chosen": None,
        "confidence": None,
        "decision": None,
        "answer": "",
        "rationale": "",
        "timings": Overwrite([]),
    }


def condense(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Set ``question`` from the last user turn, rewritten with the history when there is one.

    Returns:
        ``question`` (standalone), ``original_question`` (as written) and the per-run channels reset.
    """
    turns = turns_of(state)
    original = turns[-1].content.strip() if pending_question(state) else state.question.strip()
    history = history_of(turns)
    question = original
    if history and original:
        prompt = prompting.load("condense_question").chat(history=format_history(history), question=original)
        gen = backends.verifier.generate([prompt], max_tokens=context.condense_max_tokens, stop=["\n"])[0]
        question = clean_rewrite(gen.text) or original
    return {**_reset(), "question": question, "original_question": original}


def reply_turn(state: State, text: str) -> dict[str, Any]:
    """The assistant's turn to append to ``messages`` in a chat run (nothing for a plain question)."""
    if not state.messages:
        return {}
    return {"messages": [ChatTurn(role="assistant", content=text)]}
