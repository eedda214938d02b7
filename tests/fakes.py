"""Scripted fakes for testing graph logic (never a stand-in for the real-model tests)."""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.llm.protocol import Capabilities, ChatPrompt, Generation, ScoreKind, ScoreRequest, ScoreResult
from app.store.protocol import Chunk, Hit, StoreStats


@dataclass
class FakeLLM:
    """Generates ``reply(prompt)``; scores continuations with ``judge(text) -> (logprob, p_yes)``, where text is the
    assistant turn as scored: the prompt's prefill (the rationale, when ρ_sc is the answer given it) + continuation."""

    reply: Callable[[ChatPrompt], str]
    judge: Callable[[str], tuple[float, float]] = lambda c: (-float(len(c.split())), 0.9)
    name: str = "fake"
    capabilities: Capabilities = field(default_factory=Capabilities)
    context_window: int = 4096
    calls: list[str] = field(default_factory=list)
    scored: list[ScoreRequest] = field(default_factory=list)
    """Every scoring request, in order."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return sum(len(m.content.split()) for m in prompt.messages)

    def generate(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        with self._lock:
            self.calls.append(f"generate x{len(prompts)}")
        out = []
        for p in prompts:
            text = self.reply(p)
            words = text.split()[:max_tokens]
            out.append(
                Generation(
                    text=" ".join(words),
                    token_logprobs=tuple(-0.1 for _ in words),
                    finish_reason="stop",
                    prompt_tokens=self.count_tokens(p),
                )
            )
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        with self._lock:
            self.calls.append(f"score x{len(requests)}")
            self.scored.extend(requests)
        out = []
        for r in requests:
            lp, p_yes = self.judge(r.prompt.prefill + r.continuation)  # the assistant turn as scored
            cands = {"Yes": math.log(p_yes), "No": math.log(max(1e-9, 1 - p_yes))}
            out.append(
                ScoreResult(
                    logprob=lp,
                    n_tokens=len(r.continuation.split()),
                    candidate_logprobs={c: cands.get(c, -20.0) for c in r.candidates},
                )
            )
        return out

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        return {c: -1.0 for c in candidates}

    def provenance(self, kind: ScoreKind) -> str:
        return f"scripted {kind} ({self.name})"


class FakeEmbedder:
    """Hashed bag of words, 64-d, unit length: texts sharing words are close."""

    name = "fake-bow-64"
    dim = 64

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else out[i]
        return out


class FakeStore:
    """In-memory store with exact cosine search."""

    def __init__(self, embedder: FakeEmbedder, docs: Sequence[tuple[str, str]]) -> None:
        vecs = embedder.embed([t for _, t in docs])
        self.chunks = [
            Chunk(id=f"c{i}", doc_id=f"d{i}", title=title, text=text, vector=tuple(map(float, v)))
            for i, ((title, text), v) in enumerate(zip(docs, vecs, strict=True))
        ]
        self.searches: list[tuple[str, tuple[str, ...]]] = []

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {c.id for c in self.chunks} & set(ids)

    def add(self, chunks: Sequence[Chunk]) -> int:
        raise NotImplementedError

    def search(
        self,
        query: str,
        vector: Sequence[float],
        *,
        k: int,
        mode: str = "hybrid",
        exclude_ids: Sequence[str] = (),
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        self.searches.append((query, tuple(exclude_ids)))
        q = np.asarray(vector)
        cands = [c for c in self.chunks if c.id not in set(exclude_ids)]
        cands = [c for c in cands if all(getattr(c, key) == value for key, value in (where or {}).items())]
        scored = sorted(cands, key=lambda c: (-float(np.dot(q, c.vector)), c.id))
        return [Hit(chunk=c, score=float(np.dot(q, c.vector))) for c in scored[:k]]

    def optimize(self) -> None:
        pass

    def stats(self) -> StoreStats:
        return StoreStats(
            path=":memory:",
            documents=len(self.chunks),
            chunks=len(self.chunks),
            embedder="fake",
            vector_index="none",
            text_index="none",
        )


def p_yes_confidence(
    directory: Path, *, threshold: float = 0.85, closed_book: bool = False, open_book: bool = False
) -> str:
    """A scripted confidence model file: confidence is a steep logistic of the best draft's P(Yes), 0.5 at
    ``threshold`` (about 0 below threshold - 0.1, about 1 above threshold + 0.1), for drafts scored as the default
    context scores them. Returns its path (for ``Context.confidence_model``), so graph tests decide on the scores
    they script. With ``closed_book`` (``open_book``) it also reads the closed-book (open-book) inputs (weight 0),
    so the graph computes them."""
    from app.confidence.features import CLOSED_BOOK_FEATURES, FEATURES, OPEN_BOOK_FEATURES
    from app.confidence.model import ConfidenceModel
    from graphs.context import Context

    skip = (() if closed_book else CLOSED_BOOK_FEATURES) + (() if open_book else OPEN_BOOK_FEATURES)
    read = [f for f in FEATURES if f not in skip]  # else no extra verifier request
    coef = [0.0] * len(read)
    coef[read.index("p_yes")] = 60.0
    model = ConfidenceModel(
        name="scripted-p-yes",
        features=read,
        mean=[0.0] * len(read),
        scale=[1.0] * len(read),
        coef=coef,
        intercept=-60.0 * threshold,
        accept_confidence=0.5,
        self_consistency_of=Context().self_consistency_of,
    )
    path = directory / f"scripted-confidence{'-cb' if closed_book else ''}{'-ob' if open_book else ''}.json"
    path.write_text(model.model_dump_json(), encoding="utf-8")
    return str(path)
