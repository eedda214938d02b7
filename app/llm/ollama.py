"""``LanguageModel`` on an Ollama server (official ``ollama`` client; Ollama >= 0.12.11 for log-probabilities).

What Ollama can compute, and what it cannot:

* ``generate``: ``/api/chat`` with ``logprobs: true``, temperature 0: the log-probability of every generated token
  (https://docs.ollama.com/api/chat, ``Logprob`` in docs/openapi.yaml). A ``ChatPrompt.prefill`` is sent as a final
  assistant message, which Ollama continues instead of starting a new turn (ollama/ollama#6778; this relies on the
  model's template closing only non-final assistant turns, as the library templates do).
* ``next_token_logprobs``: one generated token with ``top_logprobs: k`` (k <= 20). A candidate is matched by the
  exact token text; a candidate outside the top k gets ``-inf`` (a lower bound), so ``exact_candidates`` is False.
* ``score`` (teacher-forced log-probabilities of a given continuation): impossible, Ollama returns no
  log-probabilities of prompt tokens. It raises ``NotSupportedError``; run the verifier on llamacpp or openai (vLLM).
* ``count_tokens``: Ollama has no tokenizer endpoint; the count is an upper-bound estimate (UTF-8 bytes / 2 plus
  a per-message allowance) used only for the "question too long" pre-check.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import httpx

from app.llm._http import model_not_found, unavailable
from app.llm.protocol import (
    BackendUnavailableError,
    Capabilities,
    ChatPrompt,
    Generation,
    NotSupportedError,
    ScoreKind,
    ScoreRequest,
    ScoreResult,
)

if TYPE_CHECKING:
    import ollama

DEFAULT_HOST = "http://127.0.0.1:11434"
_WHAT = "Ollama"


def default_host() -> str:
    """``$OLLAMA_HOST`` (as the official client reads it) or http://127.0.0.1:11434."""
    host = os.environ.get("OLLAMA_HOST", "").strip()
    if not host:
        return DEFAULT_HOST
    from ollama._client import _parse_host

    return str(_parse_host(host))


def make_client(base_url: str, *, timeout_s: float, api_key: str | None = None) -> ollama.Client:
    """An ``ollama.Client`` for ``base_url`` with a timeout (imported lazily)."""
    import ollama

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return ollama.Client(host=base_url, timeout=httpx.Timeout(timeout_s), headers=headers)


def call(base_url: str, model: str, timeout_s: float, fn: Any, /, **kwargs: Any) -> Any:
    """Run one client call, mapping connection errors, timeouts and a missing model to ``BackendUnavailableError``."""
    import ollama

    try:
        return fn(model=model, **kwargs)
    except (httpx.TransportError, ConnectionError) as exc:
        raise unavailable(exc, what=_WHAT, url=base_url, model=model, timeout_s=timeout_s) from exc
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise model_not_found(
                what=_WHAT, url=base_url, model=model, detail=exc.error, hint=f"run `ollama pull {model}` there"
            ) from exc
        raise BackendUnavailableError(
            f"{_WHAT} at {base_url} refused the request ({exc.status_code}): {exc.error}"
        ) from exc


class OllamaModel:
    """A model served by Ollama.

    Args:
        model: The Ollama model name (``qwen2.5-coder:1.5b``).
        base_url: Server URL (default: ``$OLLAMA_HOST`` or http://127.0.0.1:11434).
        timeout_s: Per-request timeout.
        max_concurrency: Requests in flight at once (``generate`` over several prompts runs them in parallel).
        top_logprobs: Alternatives requested for ``next_token_logprobs`` (1..20).
        context_window: ``num_ctx`` sent with every request.
        api_key: Optional bearer token.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 4,
        top_logprobs: int = 20,
        context_window: int = 4096,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url or default_host()
        self.timeout_s = timeout_s
        self.top_logprobs = top_logprobs
        self._context_window = context_window
        self._client = make_client(self.base_url, timeout_s=timeout_s, api_key=api_key)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._max_concurrency = max_concurrency

    @property
    def name(self) -> str:
        """``ollama:<model>``."""
        return f"ollama:{self.model}"

    @property
    def capabilities(self) -> Capabilities:
        """Generation log-probabilities and top-k next-token log-probabilities; no teacher forcing."""
        return Capabilities(
            generate_logprobs=True, score_continuation=False, next_token_logprobs=True, exact_candidates=False
        )

    def provenance(self, kind: ScoreKind) -> str:
        """How each kind of log-probability is obtained (see the module docstring)."""
        where = f"Ollama /api/chat, model {self.model} at {self.base_url}"
        match kind:
            case "generate":
                return f"sum of generated-token log-probabilities (logprobs: true, temperature 0), {where}"
            case "candidates":
                return (
                    f"top_logprobs (k={self.top_logprobs}) of the first generated token, {where}; a candidate outside "
                    "the top k gets -inf (a lower bound)"
                )
            case "score":
                raise self._no_teacher_forcing()

    @property
    def context_window(self) -> int:
        """``num_ctx`` sent with every request."""
        return self._context_window

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """An upper-bound estimate (no tokenizer endpoint): UTF-8 bytes / 2 + 8 per message."""
        parts = [m.content for m in prompt.messages] + [prompt.prefill]
        return sum(len(p.encode("utf-8")) // 2 + 8 for p in parts)

    def _messages(self, prompt: ChatPrompt) -> list[dict[str, str]]:
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        if prompt.prefill:
            msgs.append({"role": "assistant", "content": prompt.prefill})
        return msgs

    def _chat(self, prompt: ChatPrompt, *, options: dict[str, Any], top_logprobs: int | None) -> Any:
        with self._slots:
            return call(
                self.base_url,
                self.model,
                self.timeout_s,
                self._client.chat,
                messages=self._messages(prompt),
                stream=False,
                logprobs=True,
                top_logprobs=top_logprobs,
                options={"temperature": 0, "num_ctx": self._context_window, **options},
            )

    def generate(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        """Greedy completions with per-token log-probabilities (prompts run in parallel, bounded)."""
        options: dict[str, Any] = {"num_predict": max_tokens}
        if stop:
            options["stop"] = list(stop)

        def one(prompt: ChatPrompt) -> Generation:
            return self._to_generation(self._chat(prompt, options=options, top_logprobs=None))

        if len(prompts) <= 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(len(prompts), self._max_concurrency)) as pool:
            return list(pool.map(one, prompts))

    def _to_generation(self, resp: Any) -> Generation:
        if resp.logprobs is None:
            raise self._no_logprobs()
        text = resp.message.content or ""
        tokens = [(lp.token, float(lp.logprob)) for lp in resp.logprobs]
        kept = _align(text, tokens)
        finish: Literal["stop", "length"] = "length" if resp.done_reason == "length" else "stop"
        return Generation(
            text=text,
            token_logprobs=tuple(lp for _, lp in kept),
            finish_reason=finish,
            prompt_tokens=int(resp.prompt_eval_count or 0),
        )

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        """log P(candidate) from the top-k alternatives of the first generated token (-inf outside the top k)."""
        resp = self._chat(prompt, options={"num_predict": 1}, top_logprobs=self.top_logprobs)
        if not resp.logprobs:
            raise self._no_logprobs()
        top = {t.token: float(t.logprob) for t in (resp.logprobs[0].top_logprobs or [])}
        first = resp.logprobs[0]
        top.setdefault(first.token, float(first.logprob))
        return {c: top.get(c, -math.inf) for c in candidates}

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Not possible on Ollama (no prompt log-probabilities).

        Raises:
            NotSupportedError: always.
        """
        raise self._no_teacher_forcing()

    def _no_teacher_forcing(self) -> NotSupportedError:
        return NotSupportedError(
            f"Ollama ({self.model} at {self.base_url}) cannot compute teacher-forced log-probabilities: it returns "
            "log-probabilities of generated tokens only, never of prompt tokens"
        )

    def _no_logprobs(self) -> NotSupportedError:
        return NotSupportedError(
            f"Ollama at {self.base_url} returned no logprobs for {self.model}: log-probabilities need Ollama >= 0.12.11"
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client._client.close()

    def __repr__(self) -> str:
        return f"OllamaModel(model={self.model!r}, base_url={self.base_url!r})"


def _align(text: str, tokens: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The tokens that make up ``text``: when the server cut a stop string from the text but reported its tokens,
    drop every token reaching past the text (as the llama.cpp backend does); otherwise keep them all."""
    joined = "".join(t for t, _ in tokens)
    if joined == text or not joined.startswith(text):
        return tokens
    kept: list[tuple[str, float]] = []
    length = 0
    for tok, lp in tokens:
        if length + len(tok) > len(text):
            break
        kept.append((tok, lp))
        length += len(tok)
    return kept
