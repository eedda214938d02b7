"""The one small protocol that Speculative RAG needs from a language model.

Three operations, each with genuine log-probabilities (natural log):

1. ``generate``: several completions at once, with the log-probability of every generated token
   (the drafter writes its drafts and ρ_draft falls out of it).
2. ``score``: teacher-forced log-probability of a given continuation after a given prompt, and,
   in the same forward pass, the probabilities of candidate next tokens after an optional follow-up
   turn (the verifier's ρ_sc and ρ_sr, as in Sec. 3.3 of the paper).
3. ``next_token_logprobs``: log-probabilities of candidate next tokens after a prompt.

Prompts are chat messages plus an optional pre-filled beginning of the assistant turn; each
backend renders them with its own chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, kw_only=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, kw_only=True)
class ChatPrompt:
    """Chat messages, then the start of the assistant's reply.

    Attributes:
        messages: The conversation so far (system and user turns).
        prefill: Text the assistant turn starts with; generation or scoring continues after it.
    """

    messages: tuple[Message, ...]
    prefill: str = ""


@dataclass(frozen=True, kw_only=True)
class Generation:
    """One completion and the log-probability of each of its tokens under the model (temperature 1).

    Attributes:
        text: The generated text (after the prefill, without the end-of-turn token).
        token_logprobs: Natural-log probability of each generated token, in order.
        finish_reason: ``"stop"`` (end of turn or a stop string) or ``"length"`` (max_tokens reached).
        prompt_tokens: Number of prompt tokens the model read.
    """

    text: str
    token_logprobs: tuple[float, ...]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int

    @property
    def logprob(self) -> float:
        """Sum of the token log-probabilities: log P(text | prompt)."""
        return float(sum(self.token_logprobs))

    @property
    def n_tokens(self) -> int:
        """Number of generated tokens."""
        return len(self.token_logprobs)


@dataclass(frozen=True, kw_only=True)
class ScoreRequest:
    """Teacher-forced scoring of ``continuation`` after ``prompt``.

    If ``followup`` is given, the assistant turn (prefill + continuation) is closed, the follow-up
    messages are appended, a new assistant turn is opened, and the log-probabilities of
    ``candidates`` as the first token of that turn are returned too: all in one forward pass.
    """

    prompt: ChatPrompt
    continuation: str
    followup: tuple[Message, ...] = ()
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ScoreResult:
    """What ``score`` measured.

    Attributes:
        logprob: log P(continuation | prompt), the sum over its tokens.
        n_tokens: Number of tokens in the continuation.
        candidate_logprobs: log P(candidate as next token) over the full vocabulary, per candidate.
        prompt_tokens: Tokens read in total for this request.
        cached_tokens: Tokens whose KV state was reused from an earlier request (0 if none).
    """

    logprob: float
    n_tokens: int
    candidate_logprobs: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a backend can compute genuinely (never substituted silently).

    Attributes:
        generate_logprobs: ``generate`` returns the log-probability of every generated token.
        score_continuation: ``score`` computes teacher-forced log-probabilities of a given continuation
            (and of candidates after a follow-up turn): what the verifier needs for ρ_sc and ρ_sr.
        next_token_logprobs: ``next_token_logprobs`` returns log-probabilities of candidate next tokens.
        exact_candidates: candidate log-probabilities are exact for every candidate; False when they are
            read from a top-k list (a candidate outside the top k gets ``-inf``, a lower bound).
        batched_generation: several prompts are decoded together.
        prefix_cache: a shared prompt prefix is computed once.
    """

    generate_logprobs: bool = True
    score_continuation: bool = True
    next_token_logprobs: bool = True
    exact_candidates: bool = True
    batched_generation: bool = False
    prefix_cache: bool = False


ScoreKind = Literal["generate", "score", "candidates"]
"""What a log-probability measures: generated tokens, a teacher-forced continuation, candidate next tokens."""


class ContextOverflowError(ValueError):
    """A prompt does not fit in the model's context window."""


class BackendUnavailableError(RuntimeError):
    """A model server cannot be reached, timed out, or does not serve the model (the message says which)."""


class NotSupportedError(NotImplementedError):
    """The backend cannot compute this genuinely (see ``Capabilities``); nothing is approximated."""


@runtime_checkable
class LanguageModel(Protocol):
    """A model backend for drafting and verifying."""

    @property
    def name(self) -> str:
        """A human-readable model name (for traces)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this backend computes genuinely."""
        ...

    @property
    def context_window(self) -> int:
        """Maximum tokens per sequence (prompt + generation)."""
        ...

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """Number of tokens the rendered prompt takes."""
        ...

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        *,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """Greedy completions for several prompts, with per-token log-probabilities.

        Raises:
            ContextOverflowError: a prompt plus ``max_tokens`` does not fit the context window.
        """
        ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced log-probabilities (see ``ScoreRequest``).

        Raises:
            NotSupportedError: the backend cannot compute them (``capabilities.score_continuation`` is False).
        """
        ...

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        """log P(candidate as the next token) after the prompt, for each candidate."""
        ...

    def provenance(self, kind: ScoreKind) -> str:
        """How this backend obtains log-probabilities of ``kind``, in words (written into traces).

        Raises:
            NotSupportedError: the backend cannot compute ``kind``.
        """
        ...
