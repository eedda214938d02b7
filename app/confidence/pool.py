"""The calibration set: held-out pool questions with retriever-like passage lists.

The drafter's tuning data (``app.tune.data``) draws, per pool source, a seeded permutation: the first
``questions_per_source`` questions are trained on and the next ``distractor_reservoir`` lend their passages as
distractors. Calibration takes its questions from the rest of each permutation (never seen in training, and never
the dev set), and gives each question a list of passages like a retriever's top-n: its own passages (1-3 in the
pool) plus the nearest passages of other pool questions, all in order of TF-IDF similarity to the question (scikit-
learn), so the drafts see on-topic distractors as they do on the dev set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from app.eval.dataset import EvalPassage, EvalQuestion


class PoolSetConfig(BaseModel):
    """How the calibration set is drawn (recorded beside it in ``pool_set.json``)."""

    per_source: int = Field(35, ge=1, description="Held-out questions per pool source (popqa, nq, arcc)")
    passages: int = Field(10, ge=1, le=50, description="Passages per question (own + nearest of other questions)")
    seed: int = Field(0, description="Seed of the drafter's tuning data whose questions are held out")
    trained_per_source: int = Field(300, ge=0, description="questions_per_source of that tuning data")
    reservoir_per_source: int = Field(400, ge=0, description="distractor_reservoir of that tuning data")
    sample_seed: int = Field(1, description="Seed of the draw among the held-out questions")


def held_out(pool: Sequence[EvalQuestion], config: PoolSetConfig) -> dict[str, list[int]]:
    """Per source, indices (file order) of the questions the tuning data neither trained on nor took distractors
    from: the rest of ``app.tune.data``'s seeded permutation, by the same function."""
    from app.tune.data import DataConfig, select_questions

    data = DataConfig(
        seed=config.seed,
        questions_per_source=config.trained_per_source,
        distractor_reservoir=config.reservoir_per_source,
    )
    by_source: dict[str, list[int]] = {}
    for i, q in enumerate(pool):
        by_source.setdefault(q.id.split("-", 1)[0], []).append(i)
    used = {source: set(a) | set(b) for source, (a, b) in select_questions(pool, data).items()}
    return {source: [i for i in ids if i not in used[source]] for source, ids in sorted(by_source.items())}


def build_pool_set(pool_path: Path, config: PoolSetConfig) -> list[EvalQuestion]:
    """The calibration questions, each with ``config.passages`` passages in retriever-like order.

    Raises:
        app.tune.data.DataError: The pool file is missing, malformed or under eval/dev.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    from app.tune.data import load_pool

    pool = load_pool(pool_path)
    rng = np.random.default_rng(config.sample_seed)
    chosen: list[EvalQuestion] = []
    for _source, indices in held_out(pool, config).items():
        take = rng.permutation(len(indices))[: config.per_source]
        chosen.extend(pool[indices[j]] for j in sorted(take))
    corpus = [(q.id, p) for q in pool for p in q.passages]
    texts = [f"{p.title} {p.text}" for _, p in corpus]
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(texts)
    matrix = vectorizer.transform(texts)
    out: list[EvalQuestion] = []
    for q in chosen:
        sims = (matrix @ vectorizer.transform([q.question]).T).toarray().ravel()
        own = [i for i, (qid, _) in enumerate(corpus) if qid == q.id]
        others = [i for i in np.argsort(-sims, kind="stable") if corpus[i][0] != q.id]
        seen: set[str] = {corpus[i][1].text for i in own}
        picked = list(own)
        for i in others:
            if len(picked) >= config.passages:
                break
            if corpus[i][1].text not in seen:
                seen.add(corpus[i][1].text)
                picked.append(int(i))
        picked.sort(key=lambda i: -sims[i])
        passages = [
            EvalPassage(title=p.title, text=p.text, score=None, origin=_origin(q.id, owner))
            for owner, p in (corpus[i] for i in picked)
        ]
        out.append(q.model_copy(update={"passages": passages}))
    return out


def _origin(question_id: str, owner: str) -> str:
    return "own" if owner == question_id else f"distractor:{owner}"


def write_pool_set(questions: Sequence[EvalQuestion], path: Path, config: PoolSetConfig) -> None:
    """Write the set as a dataset of the shared format, with its config beside it (``<path>.config.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for q in questions:
            f.write(q.model_dump_json(exclude_none=True) + "\n")
    path.with_suffix(".config.json").write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
