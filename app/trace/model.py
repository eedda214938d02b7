"""The trace of one run: what every node read and produced, and when (a JSON document, one per run).

A trace holds no embeddings. Scores that are not finite (e.g. log P('Yes') = -inf) are stored as ``null``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from graphs.result import RunResult

_RUN_ID = re.compile(r"[0-9a-f]{32}")


class TraceError(Exception):
    """Base class of trace lookup errors (shown to the user as one line)."""


class InvalidRunIdError(TraceError, ValueError):
    """A run id that is not 32 lowercase hex digits (e.g. a path)."""


class TraceNotFoundError(TraceError, LookupError):
    """No trace with this run id."""


def new_run_id() -> str:
    """A fresh run id: a uuid4 as 32 lowercase hex digits."""
    return uuid.uuid4().hex


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is 32 lowercase hex digits.

    Raises:
        InvalidRunIdError: Anything else (empty, too long, path-like, upper case).
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        shown = repr(run_id) if len(str(run_id)) <= 40 else repr(str(run_id)[:40]) + "..."
        raise InvalidRunIdError(f"invalid run id {shown}: expected 32 lowercase hex digits (as `specrag ask` prints)")
    return run_id


class Step(BaseModel):
    """One node execution (each parallel ``draft`` branch is its own step)."""

    index: int = Field(description="Position in the run, in the order the steps started")
    node: str = Field(description="Node name")
    round: int = Field(description="Retrieval round (0-based) the node worked on")
    task_id: str = Field(description="LangGraph task id")
    started_at: datetime
    ended_at: datetime
    seconds: float = Field(description="Wall time of the node")
    reads: dict[str, Any] = Field(default_factory=dict, description="Summary of what the node read")
    writes: dict[str, Any] = Field(default_factory=dict, description="What the node produced")
    error: str | None = Field(None, description="One line when the node failed (or never finished)")


class RunTrace(BaseModel):
    """Everything one run did, step by step."""

    run_id: str = Field(description="32 hex digits (uuid4)")
    thread_id: str | None = None
    graph: str = Field(description="Graph name, e.g. 'speculative_rag'")
    question: str
    context: dict[str, Any] = Field(description="The run's Context (every knob)")
    started_at: datetime
    ended_at: datetime
    status: Literal["ok", "error"]
    error: str | None = Field(None, description="'node: ErrorType: message' (one line) when status is 'error'")
    failed_node: str | None = Field(None, description="The node that raised, when known")
    steps: list[Step] = Field(default_factory=list)
    result: RunResult | None = Field(None, description="What `ask --json` printed (None when the run failed)")

    def drafts(self) -> list[dict[str, Any]]:
        """Every draft of the run in (round, subset) order (= ``State.drafts`` order), merged with its scores
        from the verify steps (a run that failed before ``verify`` has drafts without ``scores``)."""
        by_key: dict[tuple[int, int], dict[str, Any]] = {}
        for s in self.steps:
            if s.node == "draft" and "draft" in s.writes:
                d = s.writes["draft"]
                by_key[(d["round"], d["subset"])] = {**d}
        for s in self.steps:
            if s.node == "verify":
                for sc in s.writes.get("scores", []):
                    key = (sc["round"], sc["subset"])
                    by_key.setdefault(key, {"round": sc["round"], "subset": sc["subset"]})["scores"] = sc
        return [by_key[k] for k in sorted(by_key)]

    @property
    def seconds(self) -> float:
        """Wall time of the whole run."""
        return (self.ended_at - self.started_at).total_seconds()


class TraceSummary(BaseModel):
    """One line of a trace listing."""

    run_id: str
    thread_id: str | None
    graph: str
    question: str
    status: Literal["ok", "error"]
    started_at: datetime
    ended_at: datetime
    answer: str | None = None

    @property
    def seconds(self) -> float:
        """Wall time of the run."""
        return (self.ended_at - self.started_at).total_seconds()
