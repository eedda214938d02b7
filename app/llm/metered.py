"""A ``LanguageModel`` wrapper that counts what a caller spent: requests, prompt and generated tokens, and the
wall time during which at least one request was in flight (concurrent requests, e.g. parallel draft branches
coalesced into one batch, are not counted twice). Used by the evaluation harness and the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.llm.protocol import Capabilities, ChatPrompt, Generation, LanguageModel, ScoreKind, ScoreRequest, ScoreResult


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a model was asked to do, since the last reset.

    Attributes:
        calls: Requests: one per prompt generated, per continuation scored, per next-token query.
        prompt_tokens: Prompt tokens the requests carried (cached or not: the model's input size).
        generated_tokens: Tokens generated.
        busy_seconds: Wall time with at least one request in flight.
    """

    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            generated_tokens=self.generated_tokens + other.generated_tokens,
            busy_seconds=self.busy_seconds + other.busy_seconds,
        )


class MeteredModel:
    """Delegates to ``inner`` and accumulates :class:`Usage` (thread-safe).

    Args:
        inner: The model to measure.
    """

    def __init__(self, inner: LanguageModel) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._active = 0
        self._busy_since = 0.0
        self._usage = Usage()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return self.inner.count_tokens(prompt)

    def provenance(self, kind: ScoreKind) -> str:
        return self.inner.provenance(kind)

    def usage(self) -> Usage:
        """Usage since the last :meth:`reset` (requests in flight count up to now)."""
        with self._lock:
            busy = self._usage.busy_seconds + (time.perf_counter() - self._busy_since if self._active else 0.0)
            return Usage(
                calls=self._usage.calls,
                prompt_tokens=self._usage.prompt_tokens,
                generated_tokens=self._usage.generated_tokens,
                busy_seconds=busy,
            )

    def reset(self) -> Usage:
        """Start counting afresh; returns the usage up to now."""
        used = self.usage()
        with self._lock:
            self._usage = Usage()
            if self._active:
                self._busy_since = time.perf_counter()
        return used

    def _enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._busy_since = time.perf_counter()
            self._active += 1

    def _leave(self, calls: int, prompt_tokens: int, generated_tokens: int) -> None:
        with self._lock:
            self._active -= 1
            busy = self._usage.busy_seconds
            if self._active == 0:
                busy += time.perf_counter() - self._busy_since
            self._usage = Usage(
                calls=self._usage.calls + calls,
                prompt_tokens=self._usage.prompt_tokens + prompt_tokens,
                generated_tokens=self._usage.generated_tokens + generated_tokens,
                busy_seconds=busy,
            )

    def generate(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        self._enter()
        out: list[Generation] = []
        try:
            out = self.inner.generate(prompts, max_tokens=max_tokens, stop=stop)
        finally:
            self._leave(len(out), sum(g.prompt_tokens for g in out), sum(g.n_tokens for g in out))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self._enter()
        out: list[ScoreResult] = []
        try:
            out = self.inner.score(requests)
        finally:
            self._leave(len(out), sum(r.prompt_tokens for r in out), 0)
        return out

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        self._enter()
        try:
            return self.inner.next_token_logprobs(prompt, candidates)
        finally:
            self._leave(1, 0, 0)
