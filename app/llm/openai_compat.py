"""``LanguageModel`` on an OpenAI-compatible server (httpx); teacher-forced scoring needs vLLM's extensions.

* ``generate``: ``POST /v1/chat/completions`` with ``logprobs: true``, temperature 0. A prefill is sent as a final
  assistant message with vLLM's ``continue_final_message: true, add_generation_prompt: false``.
* ``score`` (why this design): the chat template is applied by the server, so the prompt is sent as chat messages
  with the scored text as the final assistant message (``continue_final_message``) and vLLM's
  ``prompt_logprobs: 0``, which returns, for every prompt token, its own log-probability keyed by token id
  (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html, extra parameters of the Chat API). The
  continuation's token span is found with vLLM's ``POST /tokenize`` (same ``messages`` and flags): the tokens of the
  prompt + prefill and of prompt + prefill + continuation are prefixes of the scored sequence. ``/v1/completions``
  with ``echo`` would need the chat template client-side; this way the server's own template is used throughout.
* Candidates after a follow-up (ρ_sr): the conversation is closed, the follow-up appended, and each candidate is
  sent as the beginning of the next assistant turn; its first token's prompt log-probability is exact (one request
  per candidate; vLLM's prefix caching makes the shared prefix cheap). The first request also yields the span.
* A server without these extensions (not vLLM) answers without ``prompt_logprobs``: ``NotSupportedError``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx

from app.llm._http import model_not_found, unavailable
from app.llm.protocol import (
    BackendUnavailableError,
    Capabilities,
    ChatPrompt,
    Generation,
    Message,
    NotSupportedError,
    ScoreKind,
    ScoreRequest,
    ScoreResult,
)

_WHAT = "OpenAI-compatible server"
Msgs = list[dict[str, str]]


def _msgs(messages: Sequence[Message]) -> Msgs:
    return [{"role": m.role, "content": m.content} for m in messages]


_UNKNOWN = -1
"""Id of the first prompt token, for which vLLM reports no log-probability (null): it matches any id."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and (a[i] == b[i] or _UNKNOWN in (a[i], b[i])):
        i += 1
    return i


class OpenAICompatModel:
    """A model on an OpenAI-compatible server (vLLM for scoring).

    Args:
        model: Model name as the server knows it.
        base_url: The API root including ``/v1`` (e.g. http://gpu:8000/v1); ``/tokenize`` is looked up next to it.
        api_key: Bearer token, if the server needs one.
        timeout_s: Per-request timeout.
        max_concurrency: Requests in flight at once.
        context_window: Maximum tokens per sequence (the server's ``--max-model-len``).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 4,
        context_window: int = 4096,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._context_window = context_window
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self._tokenize_url = f"{root}/tokenize"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._max_concurrency = max_concurrency

    # ---------------------------------------------------------------- protocol properties

    @property
    def name(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self.model}"

    @property
    def capabilities(self) -> Capabilities:
        """Everything, exactly, provided the server is vLLM (others fail with ``NotSupportedError`` when scoring)."""
        return Capabilities()

    def provenance(self, kind: ScoreKind) -> str:
        """How each kind of log-probability is obtained (see the module docstring)."""
        where = f"model {self.model} at {self.base_url}"
        match kind:
            case "generate":
                return f"sum of generated-token log-probabilities (chat completions, logprobs: true), {where}"
            case "score":
                return f"teacher-forced prompt log-probabilities via vLLM prompt_logprobs, {where}"
            case "candidates":
                return (
                    "teacher-forced log-probability of each candidate's first token at the start of the next "
                    f"assistant turn via vLLM prompt_logprobs (exact), {where}"
                )

    @property
    def context_window(self) -> int:
        """Tokens per sequence (from settings)."""
        return self._context_window

    # ---------------------------------------------------------------- HTTP

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._slots:
            try:
                resp = self._http.post(url, json=body)
            except httpx.TransportError as exc:
                raise unavailable(
                    exc, what=_WHAT, url=self.base_url, model=self.model, timeout_s=self.timeout_s
                ) from exc
        if resp.status_code == 404:
            raise model_not_found(
                what=_WHAT,
                url=self.base_url,
                model=self.model,
                detail=f"404 on {url}: {resp.text[:200]}",
                hint="check the model setting (e.g. SPECRAG_VERIFIER__MODEL) and base_url (it must end in /v1)",
            )
        if resp.status_code >= 400:
            raise BackendUnavailableError(
                f"{_WHAT} at {self.base_url} refused the request ({resp.status_code}): {resp.text[:300]}"
            )
        data: dict[str, Any] = resp.json()
        return data

    def _chat(self, messages: Msgs, *, prefill: str, extra: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": 0, **extra}
        if prefill:
            body["messages"].append({"role": "assistant", "content": prefill})
            body |= {"add_generation_prompt": False, "continue_final_message": True}
        return self._post(f"{self.base_url}/chat/completions", body)

    def _tokenize(self, messages: Msgs, prefill: str) -> list[int]:
        """Token ids of the rendered messages (+ the open assistant turn with ``prefill``), via vLLM ``/tokenize``."""
        body: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if prefill:
            body["messages"].append({"role": "assistant", "content": prefill})
            body |= {"add_generation_prompt": False, "continue_final_message": True}
        else:
            body["add_generation_prompt"] = True
        data = self._post(self._tokenize_url, body)
        return [int(t) for t in data["tokens"]]

    def _prompt_logprobs(self, messages: Msgs, prefill: str) -> tuple[list[int], list[float]]:
        """Token ids and per-token log-probabilities of the rendered prompt (the first token has none: nan)."""
        data = self._chat(messages, prefill=prefill, extra={"max_tokens": 1, "prompt_logprobs": 0})
        entries = data.get("prompt_logprobs")
        if not entries:
            raise NotSupportedError(
                f"{_WHAT} at {self.base_url} returned no prompt_logprobs: teacher-forced scoring needs vLLM's "
                "prompt_logprobs extension; use a vLLM server or SPECRAG_VERIFIER__PROVIDER=llamacpp"
            )
        ids: list[int] = []
        lps: list[float] = []
        for entry in entries:
            if entry is None:
                ids.append(_UNKNOWN)
                lps.append(math.nan)
                continue
            if len(entry) != 1:
                raise ValueError(f"expected one prompt logprob per position (prompt_logprobs: 0), got {len(entry)}")
            (tid, info), *_ = entry.items()
            ids.append(int(tid))
            lps.append(float(info["logprob"]))
        return ids, lps

    # ---------------------------------------------------------------- protocol operations

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """Tokens of the rendered prompt (vLLM ``/tokenize``)."""
        return len(self._tokenize(_msgs(prompt.messages), prompt.prefill))

    def generate(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        """Greedy completions with per-token log-probabilities (prompts run in parallel, bounded)."""
        extra: dict[str, Any] = {"max_tokens": max_tokens, "logprobs": True}
        if stop:
            extra["stop"] = list(stop)

        def one(prompt: ChatPrompt) -> Generation:
            data = self._chat(_msgs(prompt.messages), prefill=prompt.prefill, extra=extra)
            choice = data["choices"][0]
            content = (choice.get("logprobs") or {}).get("content")
            if content is None:
                raise NotSupportedError(f"{_WHAT} at {self.base_url} returned no logprobs for {self.model}")
            finish: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
            return Generation(
                text=choice["message"].get("content") or "",
                token_logprobs=tuple(float(t["logprob"]) for t in content),
                finish_reason=finish,
                prompt_tokens=int((data.get("usage") or {}).get("prompt_tokens", 0)),
            )

        if len(prompts) <= 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(len(prompts), self._max_concurrency)) as pool:
            return list(pool.map(one, prompts))

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced log-probabilities (see the module docstring for how spans are located).

        Raises:
            NotSupportedError: the server does not return ``prompt_logprobs`` (not vLLM).
            ValueError: a candidate is the empty string.
        """
        return [self._score_one(r) for r in requests]

    def _score_one(self, req: ScoreRequest) -> ScoreResult:
        if any(not c for c in req.candidates):
            raise ValueError("empty candidate")
        base = _msgs(req.prompt.messages)
        answer = req.prompt.prefill + req.continuation
        cands: dict[str, float] = {}
        if req.candidates:
            if req.followup:
                conv = [*base, {"role": "assistant", "content": answer}, *_msgs(req.followup)]
                conv_prefix = ""
            else:
                conv, conv_prefix = base, answer
            turn = self._tokenize(conv, conv_prefix)
            first: tuple[list[int], list[float]] | None = None
            for c in req.candidates:
                ids, lps = self._prompt_logprobs(conv, conv_prefix + c)
                first = first or (ids, lps)
                pos = _common_prefix(turn, ids)
                cands[c] = lps[pos] if pos < len(lps) else -math.inf
            assert first is not None
            ids, lps = first
        else:
            ids, lps = self._prompt_logprobs(base, answer)
        start = _common_prefix(self._tokenize(base, req.prompt.prefill), ids)
        end = _common_prefix(self._tokenize(base, answer), ids) if req.continuation else start
        span = [lp for lp in lps[max(start, 1) : end] if not math.isnan(lp)]
        return ScoreResult(
            logprob=float(sum(span)), n_tokens=end - start, candidate_logprobs=cands, prompt_tokens=len(ids)
        )

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        """log P(candidate's first token | prompt), exact (teacher-forced)."""
        request = ScoreRequest(prompt=prompt, continuation="", candidates=tuple(candidates))
        return self.score([request])[0].candidate_logprobs

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __repr__(self) -> str:
        return f"OpenAICompatModel(model={self.model!r}, base_url={self.base_url!r})"
