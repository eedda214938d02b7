"""``LanguageModel`` on llama.cpp's low-level API: batched greedy generation, teacher-forced scoring.

* ``generate`` decodes several prompts in one ``llama_batch`` (distinct seq_ids; logits only at each
  prompt's last token, then one token per live sequence per step) and records the full-vocabulary
  log-softmax of every chosen token. A token prefix shared by all prompts of a batch is decoded once
  and its KV cells copied to the other sequences (``llama_memory_seq_cp``). Concurrent single-prompt
  callers (LangGraph ``Send`` branches
  run in threads) are coalesced into one batched run (see ``app.llm.batching``).
* ``score`` concatenates token ids of separately tokenised segments (prompt + prefill, continuation,
  tail that closes the turn + follow-up + new assistant turn), asks for logits only where needed,
  and reuses the longest common token prefix of the previous request kept in a dedicated sequence.
* One lock serialises every llama.cpp call; tokenisation has its own lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from app.llm.batching import Coalescer
from app.llm.chat_template import ChatTemplate
from app.llm.llama_engine import Entry, FloatRow, LlamaEngine, greedy, log_softmax_at
from app.llm.protocol import (
    Capabilities,
    ChatPrompt,
    ContextOverflowError,
    Generation,
    ScoreKind,
    ScoreRequest,
    ScoreResult,
)
from app.models import ResolvedAdapter

FinishReason = Literal["stop", "length"]

# Batched prompts sharing at least this many leading tokens decode them once (KV copied to the others).
_MIN_SHARED_PREFIX = 8


@dataclass
class LlamaStats:
    """Cumulative counters for benchmarks and traces.

    Attributes:
        prompt_tokens: Prompt tokens decoded (generation prefill and scoring; cached tokens excluded).
        generated_tokens: Tokens produced by ``generate``.
        cached_tokens: Scoring tokens reused from the prefix cache.
        decode_calls: ``llama_decode`` calls.
        model_seconds: Wall time spent inside ``llama_decode`` and reading logits.
        generate_calls: ``generate`` calls.
        generate_runs: Batched generation runs (fewer than calls when concurrent calls were coalesced).
        score_requests: Scored requests.
        shared_prefix_tokens: Prompt tokens not decoded because batched prompts shared a prefix (copied KV).
    """

    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int = 0
    decode_calls: int = 0
    model_seconds: float = 0.0
    generate_calls: int = 0
    generate_runs: int = 0
    score_requests: int = 0
    shared_prefix_tokens: int = 0


@dataclass(frozen=True)
class _GenJob:
    """One prompt to complete, already tokenised and checked against the context window."""

    ids: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...]


@dataclass
class _SeqState:
    """A sequence being generated."""

    seq: int
    job: _GenJob
    row: FloatRow | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: FinishReason | None = None
    text: str = ""

    @property
    def next_pos(self) -> int:
        """Position of the last generated token (the one to decode next)."""
        return len(self.job.ids) + len(self.tokens) - 1


class LlamaCppModel:
    """A GGUF model run in-process by llama.cpp.

    Args:
        path: GGUF file.
        n_ctx: Context window per sequence (prompt + generation).
        n_seq_max: Sequences decoded together (the context holds ``n_ctx * n_seq_max`` cells).
        n_batch: Tokens per ``llama_decode`` call.
        n_threads: CPU threads (generation and prompt processing).
        batch_generation: Decode several prompts together (False: one prompt at a time).
        prefix_cache: Reuse the KV state of the longest common token prefix between ``score`` requests.
        batch_window_s: How long concurrent ``generate`` calls are collected before a batched run.
        flash_attn: Use flash attention (off: see ``LlamaEngine``; it made scores batch-size dependent).
        adapter: A LoRA adapter (sha256 already checked, ``app.models.resolve_adapter``) applied with scale 1;
            the model's ``name`` and provenance then name it.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        n_seq_max: int = 8,
        n_batch: int = 512,
        n_threads: int = 2,
        batch_generation: bool = True,
        prefix_cache: bool = True,
        batch_window_s: float = 0.03,
        flash_attn: bool = False,
        adapter: ResolvedAdapter | None = None,
    ) -> None:
        self._engine: LlamaEngine | None = LlamaEngine(
            path,
            n_ctx_per_seq=n_ctx,
            n_seq_max=n_seq_max,
            n_batch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            flash_attn=flash_attn,
        )
        self.path = path
        self.batch_generation = batch_generation
        self.prefix_cache = prefix_cache
        self.stats = LlamaStats()
        self._lock = threading.Lock()
        self._tok_lock = threading.Lock()
        engine = self._engine
        self.base_name = engine.meta("general.name") or path.stem
        self.adapter = adapter
        self._adapter_handle: object | None = None
        self._name = self.base_name
        if adapter is not None:
            try:
                self._adapter_handle = engine.load_adapter(adapter.path)
                engine.set_adapters([(self._adapter_handle, 1.0)])
            except RuntimeError:
                self.close()
                raise
            self._name = f"{self.base_name} + LoRA {adapter.label}"
        self._template = self._load_template(engine)
        self._score_seq = engine.n_seq_max - 1
        self._cached_ids: list[int] = []
        self._coalescer: Coalescer[_GenJob, Generation] = Coalescer(
            self._run_jobs, window_s=batch_window_s, max_items=engine.n_seq_max
        )

    @staticmethod
    def _load_template(engine: LlamaEngine) -> ChatTemplate:
        source = engine.chat_template()
        if not source:
            raise ValueError("the GGUF has no tokenizer.chat_template; chat prompts need one")
        bos, eos = engine.bos(), engine.eos()
        bos_text = engine.piece(bos, special=True).decode("utf-8", "ignore") if bos >= 0 else ""
        eos_text = engine.piece(eos, special=True).decode("utf-8", "ignore") if eos >= 0 else ""
        return ChatTemplate(source, bos_token=bos_text, eos_token=eos_text)

    # ---------------------------------------------------------------- protocol properties

    @property
    def name(self) -> str:
        """The GGUF ``general.name`` (or the file stem)."""
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """Everything is computed genuinely."""
        return Capabilities(batched_generation=True, prefix_cache=True)

    def provenance(self, kind: ScoreKind) -> str:
        """How each kind of log-probability is computed (in-process, full-vocabulary log-softmax)."""
        lora = f", LoRA {self.adapter.path.name} sha256 {self.adapter.sha256[:12]}" if self.adapter else ""
        where = f"llama.cpp in-process ({self._name}, {self.path.name}{lora})"
        match kind:
            case "generate":
                return f"sum of generated-token log-probabilities, full-vocabulary log-softmax, {where}"
            case "score":
                return f"teacher-forced log-probability from the logits of one forward pass, {where}"
            case "candidates":
                return f"next-token log-probability of each candidate's first token, exact over the vocabulary, {where}"

    @property
    def context_window(self) -> int:
        """Tokens per sequence."""
        return self._require_engine().n_ctx_seq

    @property
    def template(self) -> ChatTemplate:
        """The model's chat template."""
        return self._template

    def _require_engine(self) -> LlamaEngine:
        if self._engine is None:
            raise RuntimeError("the model has been closed")
        return self._engine

    # ---------------------------------------------------------------- tokenisation

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids of ``text`` (thread-safe)."""
        with self._tok_lock:
            return self._require_engine().tokenize(text, add_special=add_special, parse_special=parse_special)

    def prompt_ids(self, prompt: ChatPrompt) -> list[int]:
        """Token ids of the rendered prompt + prefill (BOS added only if the template did not write it).

        The template's own text is read with its control tokens; message contents (questions, retrieved
        passages) never are: ``<|im_end|>`` inside a document is text, not the end of a turn.
        """
        parts = self._template.prefix_parts(prompt)
        bos_text = self._template.bos_token
        add_bos = not (bos_text and parts and parts[0][0].startswith(bos_text))
        ids: list[int] = []
        for i, (text, is_content) in enumerate(parts):
            ids += self.tokenize(text, add_special=add_bos and i == 0, parse_special=not is_content)
        return ids

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """Number of tokens of the rendered prompt."""
        return len(self.prompt_ids(prompt))

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens omitted)."""
        with self._tok_lock:
            return self._require_engine().detokenize(ids)

    # ---------------------------------------------------------------- generation

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        *,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """Greedy completions with per-token log-probabilities (see the module docstring).

        Raises:
            ContextOverflowError: a prompt plus ``max_tokens`` does not fit ``context_window``.
        """
        jobs = [self._prepare(p, max_tokens, stop) for p in prompts]
        if not jobs:
            return []
        self.stats.generate_calls += 1
        if not self.batch_generation:
            return self._run_sequential(jobs)
        return self._coalescer.submit(jobs)

    def generate_sequential(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        """Like ``generate`` but one prompt at a time (no batching, no coalescing): a baseline."""
        jobs = [self._prepare(p, max_tokens, stop) for p in prompts]
        self.stats.generate_calls += 1
        return self._run_sequential(jobs)

    def _prepare(self, prompt: ChatPrompt, max_tokens: int, stop: Sequence[str]) -> _GenJob:
        ids = self.prompt_ids(prompt)
        window = self.context_window
        if len(ids) + max_tokens > window:
            raise ContextOverflowError(
                f"{self._name}: prompt of {len(ids)} tokens + max_tokens {max_tokens} "
                f"exceeds the context window of {window} tokens per sequence"
            )
        return _GenJob(ids=tuple(ids), max_tokens=max(0, max_tokens), stop=tuple(s for s in stop if s))

    def _run_sequential(self, jobs: Sequence[_GenJob]) -> list[Generation]:
        with self._lock:
            self.stats.generate_runs += len(jobs)
            return [self._generate_group([job])[0] for job in jobs]

    def _run_jobs(self, jobs: list[_GenJob]) -> list[Generation]:
        """Run jobs in groups of ``n_seq_max`` sequences (the coalescer's batch function)."""
        with self._lock:
            self.stats.generate_runs += 1
            n = self._require_engine().n_seq_max
            out: list[Generation] = []
            for start in range(0, len(jobs), n):
                out.extend(self._generate_group(jobs[start : start + n]))
            return out

    def _generate_group(self, jobs: Sequence[_GenJob]) -> list[Generation]:
        engine = self._require_engine()
        states = [_SeqState(seq=i, job=job) for i, job in enumerate(jobs)]
        if len(states) > self._score_seq:
            self._drop_score_cache()
        for st in states:
            engine.seq_clear(st.seq)
        try:
            self._prefill(states)
            live = self._step(states)
            while live:
                rows = self._decode([Entry(st.tokens[-1], st.next_pos, st.seq, True) for st in live])
                for st, row in zip(live, rows, strict=True):
                    st.row = row
                live = self._step(live)
        finally:
            for st in states:
                engine.seq_clear(st.seq)
        self.stats.generated_tokens += sum(len(st.tokens) for st in states)
        return [self._to_generation(st) for st in states]

    def _prefill(self, states: Sequence[_SeqState]) -> None:
        """Decode the prompts; a token prefix that all prompts share is decoded once and its KV copied."""
        engine = self._require_engine()
        shared = _shared_prefix([st.job.ids for st in states]) if len(states) > 1 else 0
        if shared >= _MIN_SHARED_PREFIX:
            first = states[0]
            self._decode([Entry(tok, pos, first.seq, False) for pos, tok in enumerate(first.job.ids[:shared])])
            for st in states[1:]:
                engine.seq_cp(first.seq, st.seq)
            self.stats.shared_prefix_tokens += shared * (len(states) - 1)
        else:
            shared = 0
        entries = [
            Entry(tok, pos, st.seq, pos == len(st.job.ids) - 1)
            for st in states
            for pos, tok in enumerate(st.job.ids)
            if pos >= shared
        ]
        self.stats.prompt_tokens += shared + len(entries)
        rows = self._decode(entries)
        for st, row in zip(states, rows, strict=True):
            st.row = row

    def _step(self, states: Sequence[_SeqState]) -> list[_SeqState]:
        """Pick the next token of each live sequence; return those that continue."""
        engine = self._require_engine()
        live: list[_SeqState] = []
        for st in states:
            if len(st.tokens) >= st.job.max_tokens:
                st.finish = "length"
                continue
            assert st.row is not None
            token, logprob = greedy(st.row)
            st.row = None
            if engine.is_eog(token):
                st.finish = "stop"
                continue
            st.tokens.append(token)
            st.logprobs.append(logprob)
            if self._apply_stop(st):
                st.finish = "stop"
            elif len(st.tokens) >= st.job.max_tokens:
                st.finish = "length"
            else:
                live.append(st)
        return live

    def _apply_stop(self, st: _SeqState) -> bool:
        """If a stop string appeared, drop it and every token that reaches into it; return whether it did.

        A token that straddles the start of the stop string is dropped too, so the text is always
        exactly the detokenised kept tokens and ``token_logprobs`` covers exactly those tokens.
        """
        if not st.job.stop:
            return False
        engine = self._require_engine()
        text = engine.detokenize(st.tokens)
        hits = [i for i in (text.find(s) for s in st.job.stop) if i >= 0]
        if not hits:
            return False
        cut = min(hits)
        keep = len(st.tokens)
        while keep > 0 and len(engine.detokenize(st.tokens[:keep])) > cut:
            keep -= 1
        del st.tokens[keep:]
        del st.logprobs[keep:]
        st.text = engine.detokenize(st.tokens)
        return True

    def _to_generation(self, st: _SeqState) -> Generation:
        text = st.text if st.text else self._require_engine().detokenize(st.tokens)
        return Generation(
            text=text,
            token_logprobs=tuple(st.logprobs),
            finish_reason=st.finish or "length",
            prompt_tokens=len(st.job.ids),
        )

    def _decode(self, entries: Sequence[Entry]) -> list[FloatRow]:
        engine = self._require_engine()
        before = engine.counters.decode_calls, engine.counters.model_seconds
        rows = engine.decode(entries)
        self.stats.decode_calls += engine.counters.decode_calls - before[0]
        self.stats.model_seconds += engine.counters.model_seconds - before[1]
        return rows

    # ---------------------------------------------------------------- scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced log-probabilities; see ``ScoreRequest``.

        Candidates are scored by their FIRST token (tokenised without BOS): for a multi-token candidate
        this is the probability that the answer starts with that token.

        Raises:
            ContextOverflowError: a request does not fit ``context_window``.
            ValueError: a candidate is the empty string.
        """
        return [self._score_one(req) for req in requests]

    def next_token_logprobs(self, prompt: ChatPrompt, candidates: Sequence[str]) -> dict[str, float]:
        """log P(candidate's first token | prompt) for each candidate."""
        request = ScoreRequest(prompt=prompt, continuation="", candidates=tuple(candidates))
        return self.score([request])[0].candidate_logprobs

    def candidate_token(self, candidate: str) -> int:
        """The token id that stands for ``candidate`` (its first token)."""
        ids = self.tokenize(candidate, add_special=False, parse_special=False)
        if not ids:
            raise ValueError("empty candidate")
        return ids[0]

    def score_ids(self, ids: Sequence[int], positions: Sequence[int]) -> tuple[list[FloatRow], int]:
        """Decode ``ids`` in the scoring sequence and return the logits rows at ``positions``.

        Reuses the longest common prefix with the previous call when the prefix cache is on.

        Returns:
            The logits rows (in the order of ``positions``) and the number of reused tokens.
        """
        if not positions:
            return [], 0
        with self._lock:
            return self._score_ids_locked(list(ids), sorted(set(positions)), list(positions))

    def _score_ids_locked(self, ids: list[int], needed: list[int], order: list[int]) -> tuple[list[FloatRow], int]:
        engine = self._require_engine()
        seq = self._score_seq
        start = _common_prefix(self._cached_ids, ids) if self.prefix_cache else 0
        start = min(start, needed[0])
        if start == 0 or not engine.seq_rm(seq, start, -1):
            engine.seq_clear(seq)
            start = 0
        self._cached_ids = []
        need = set(needed)
        entries = [Entry(ids[p], p, seq, p in need) for p in range(start, len(ids))]
        self.stats.prompt_tokens += len(entries)
        self.stats.cached_tokens += start
        rows = self._decode(entries)
        if self.prefix_cache:
            self._cached_ids = ids
        else:
            engine.seq_clear(seq)
        by_pos = dict(zip(needed, rows, strict=True))
        return [by_pos[p] for p in order], start

    def _score_one(self, req: ScoreRequest) -> ScoreResult:
        prefix = self.prompt_ids(req.prompt)
        cont = self.tokenize(req.continuation, add_special=False, parse_special=False)
        tail = (
            self.tokenize(self._template.tail(req.prompt, req.followup), add_special=False, parse_special=True)
            if req.followup
            else []
        )
        ids = prefix + cont + tail
        if len(ids) > self.context_window:
            raise ContextOverflowError(
                f"{self._name}: scoring needs {len(ids)} tokens, more than the context window "
                f"of {self.context_window} tokens per sequence"
            )
        cand_ids = {c: self.candidate_token(c) for c in req.candidates}
        positions = [len(prefix) - 1 + j for j in range(len(cont))]
        if cand_ids:
            positions.append(len(ids) - 1)
        self.stats.score_requests += 1
        rows, cached = self.score_ids(ids, positions)
        logprob = sum(log_softmax_at(rows[j], tok) for j, tok in enumerate(cont))
        candidate_logprobs = {c: log_softmax_at(rows[-1], t) for c, t in cand_ids.items()}
        return ScoreResult(
            logprob=float(logprob),
            n_tokens=len(cont),
            candidate_logprobs=candidate_logprobs,
            prompt_tokens=len(ids),
            cached_tokens=cached,
        )

    def reset_prefix_cache(self) -> None:
        """Forget the cached scoring prefix (the next ``score`` starts cold)."""
        with self._lock:
            self._drop_score_cache()

    def _drop_score_cache(self) -> None:
        if self._cached_ids:
            self._require_engine().seq_clear(self._score_seq)
        self._cached_ids = []

    # ---------------------------------------------------------------- adapter

    def set_adapter_enabled(self, enabled: bool) -> None:
        """Apply the loaded LoRA adapter (``enabled``) or run the base model; the scoring cache is dropped, since
        KV computed under the other weights is stale. No-op without an adapter."""
        if self._adapter_handle is None:
            return
        with self._lock:
            self._drop_score_cache()
            engine = self._require_engine()
            engine.set_adapters([(self._adapter_handle, 1.0)] if enabled else [])
            self._name = f"{self.base_name} + LoRA {self.adapter.label}" if enabled and self.adapter else self.base_name

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Free llama.cpp resources (idempotent; the model cannot be used afterwards)."""
        with self._lock:
            engine, self._engine = self._engine, None
            if engine is not None:
                engine.close()

    def __del__(self) -> None:
        try:
            engine = getattr(self, "_engine", None)
            if engine is not None:
                self._engine = None
                engine.close()
        except Exception:  # interpreter shutdown: the bindings may already be gone
            pass

    def __repr__(self) -> str:
        lora = f", adapter={str(self.adapter.path)!r}" if self.adapter else ""
        return f"LlamaCppModel(name={self._name!r}, path={str(self.path)!r}{lora})"


def _shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token of its own to decode."""
    n = min(_common_prefix(prompts[0], p) for p in prompts[1:])
    return min(n, min(len(p) for p in prompts) - 1)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
