"""The shared evaluation format (``eval/dev/questions.jsonl``; see its README): one question per line, with gold
answers and the passages a retriever returned for it."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from graphs.question import with_choices


class DatasetError(ValueError):
    """The dataset file is missing or a line does not match the format (the message names the line)."""


class EvalPassage(BaseModel):
    """A passage given with a question."""

    title: str = ""
    text: str
    score: float | None = Field(None, description="The retriever's score, when the dataset gives one")
    origin: str | None = None
    is_gold: bool | None = None


class EvalQuestion(BaseModel):
    """One question of the shared format."""

    id: str
    question: str
    answers: list[str] = Field(min_length=1, description="Gold aliases; for multiple choice, the gold letter")
    task: str = Field(description="short_qa, multihop_qa or mcq")
    choices: dict[str, str] | None = Field(None, description="Multiple choice: letter -> choice text")
    passages: list[EvalPassage] = Field(default_factory=list)
    source: str = ""

    @property
    def is_mcq(self) -> bool:
        """Whether the answer is a choice letter."""
        return self.task == "mcq" or bool(self.choices)

    def prompt_question(self) -> str:
        """The question as the graphs receive it: for multiple choice, with the choices and the letter instruction
        (``graphs.question.with_choices``)."""
        return with_choices(self.question, self.choices if self.is_mcq else None)


def load_questions(
    path: Path, *, tasks: Sequence[str] = (), limit: int | None = None, per_task: int | None = None
) -> list[EvalQuestion]:
    """Read a dataset, optionally restricted to some tasks and to a balanced sample.

    Args:
        path: A JSONL file in the shared format.
        tasks: Keep only these tasks (all when empty).
        limit: At most this many questions in all, taken round-robin across tasks in file order (``--limit 30`` on
            the dev set gives 10 per task).
        per_task: At most this many questions of each task (file order).

    Returns:
        The questions, ordered round-robin across tasks (so a partial run covers every task evenly).

    Raises:
        DatasetError: Missing file, bad JSON, a line not in the format, duplicate ids, or nothing left to evaluate.
    """
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    by_task: dict[str, list[EvalQuestion]] = defaultdict(list)
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                q = EvalQuestion.model_validate(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "line"
                raise DatasetError(f"{path}:{number}: {where}: {first['msg']}") from None
            if q.id in seen:
                raise DatasetError(f"{path}:{number}: duplicate question id {q.id!r}")
            seen.add(q.id)
            if not tasks or q.task in tasks:
                by_task[q.task].append(q)
    if not by_task:
        known = "" if not tasks else f" of task(s) {', '.join(tasks)}"
        raise DatasetError(f"{path}: no questions{known}")
    lists = [qs[:per_task] if per_task else qs for qs in by_task.values()]
    ordered = [q for row in _round_robin(lists) for q in row]
    return ordered[:limit] if limit else ordered


def _round_robin(lists: list[list[EvalQuestion]]) -> list[list[EvalQuestion]]:
    longest = max(len(x) for x in lists)
    return [[x[i] for x in lists if i < len(x)] for i in range(longest)]
