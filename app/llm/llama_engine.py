"""A thin, typed wrapper over llama.cpp's low-level C API (``llama_cpp.llama_cpp`` ctypes bindings).

It owns one model, one context and one ``llama_batch``; it tokenises, detokenises, manages
per-sequence KV memory and decodes lists of ``(token, position, seq_id, want_logits)`` entries,
returning copies of the logits rows that were asked for. It holds no lock: callers serialise access.

Context layout: the context is created with ``n_ctx = n_ctx_per_seq * n_seq_max`` and
``kv_unified = False``, so llama.cpp gives every sequence its own KV stream of ``n_ctx_per_seq``
cells (``llama_n_ctx_seq``) and attention never scans other sequences' cells.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

FloatRow = npt.NDArray[np.float32]

_backend_lock = threading.Lock()
_backend_ready = False
_log_callback: Any = None  # keeps the ctypes callback alive for the whole process


def _lib() -> Any:
    """The ctypes bindings, imported on first use (importing them loads the shared library)."""
    import llama_cpp.llama_cpp as lib

    return lib


def _init_backend() -> None:
    """Initialise the llama.cpp backend once per process and silence its stderr logging."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        lib = _lib()

        def _noop(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            return None

        _log_callback = lib.llama_log_callback(_noop)
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        _backend_ready = True


class Entry(NamedTuple):
    """One token to decode."""

    token: int
    pos: int
    seq: int
    want_logits: bool


@dataclass
class EngineCounters:
    """Work done by an engine (cumulative)."""

    decode_calls: int = 0
    tokens_decoded: int = 0
    logits_rows: int = 0
    model_seconds: float = 0.0


class LlamaDecodeError(RuntimeError):
    """``llama_decode`` failed."""


class LlamaEngine:
    """One llama.cpp model + context.

    Args:
        path: GGUF file.
        n_ctx_per_seq: Context window of each sequence.
        n_seq_max: Number of independent sequences.
        n_batch: Maximum tokens per ``llama_decode`` call (also the physical micro-batch).
        n_threads: Threads for single-token decoding.
        n_threads_batch: Threads for prompt (batch) processing.
        flash_attn: Use flash attention. Off by default: on the CPU backend (0.3.36) its path for
            batches of more than ~64 tokens changed log-probabilities by up to 0.4 nats per token compared
            with smaller batches, so scores would depend on how a sequence was split into batches.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx_per_seq: int,
        n_seq_max: int,
        n_batch: int,
        n_threads: int,
        n_threads_batch: int,
        flash_attn: bool = False,
    ) -> None:
        _init_backend()
        self._lib = _lib()
        self._model: Any = None
        self._ctx: Any = None
        self._adapters: list[Any] = []
        self._batch: Any = None
        self.counters = EngineCounters()
        self._load(path, n_ctx_per_seq, n_seq_max, n_batch, n_threads, n_threads_batch, flash_attn)
        self._pieces: dict[int, bytes] = {}

    def _load(
        self,
        path: Path,
        n_ctx_per_seq: int,
        n_seq_max: int,
        n_batch: int,
        n_threads: int,
        n_threads_batch: int,
        flash_attn: bool,
    ) -> None:
        lib = self._lib
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load the model {path}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx_per_seq * n_seq_max
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads_batch
        cparams.kv_unified = False
        cparams.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise RuntimeError(f"llama.cpp could not create a context for {path} (n_ctx={cparams.n_ctx})")
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._mem = lib.llama_get_memory(self._ctx)
        self.vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_seq: int = lib.llama_n_ctx_seq(self._ctx)
        self.n_seq_max: int = lib.llama_n_seq_max(self._ctx)
        self.n_batch: int = n_batch

    # ---------------------------------------------------------------- metadata

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        size = 4096
        buf = ctypes.create_string_buffer(size)
        n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:  # longer than the buffer: retry with the exact size
            buf = ctypes.create_string_buffer(n + 1)
            self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        """The model's default chat template (``tokenizer.chat_template``), or None."""
        raw = self._lib.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    def bos(self) -> int:
        """BOS token id (-1 if none)."""
        return int(self._lib.llama_vocab_bos(self.vocab))

    def eos(self) -> int:
        """EOS token id (-1 if none)."""
        return int(self._lib.llama_vocab_eos(self.vocab))

    def adds_bos(self) -> bool:
        """Whether the tokenizer adds BOS when ``add_special`` is set."""
        return bool(self._lib.llama_vocab_get_add_bos(self.vocab))

    # ---------------------------------------------------------------- tokens

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids of ``text``."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (ctypes.c_int32 * capacity)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the required size
            capacity = -n
            buf = (ctypes.c_int32 * capacity)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
            if n < 0:
                raise RuntimeError("llama_tokenize failed")
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (special tokens render as empty unless ``special``)."""
        if not special and token in self._pieces:
            return self._pieces[token]
        size = 64
        buf = ctypes.create_string_buffer(size)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
        if n < 0:
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
        out = buf.raw[: max(n, 0)]
        if not special:
            self._pieces[token] = out
        return out

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of a token sequence (incomplete trailing UTF-8 bytes are dropped)."""
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="ignore")

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, <|im_end|>, ...)."""
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    # ---------------------------------------------------------------- KV memory

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions ``[p0, p1)`` of ``seq`` from KV memory (negative bounds are open)."""
        return bool(self._lib.llama_memory_seq_rm(self._mem, seq, p0, p1))

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy all KV cells of ``src`` to ``dst`` (across KV streams: bit-identical to decoding them again)."""
        self._lib.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def seq_clear(self, seq: int) -> None:
        """Remove a whole sequence from KV memory."""
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)

    # ---------------------------------------------------------------- decoding

    def decode(self, entries: Sequence[Entry]) -> list[FloatRow]:
        """Decode entries in chunks of ``n_batch`` and return the logits rows that were asked for, in order.

        Raises:
            LlamaDecodeError: llama.cpp refused a batch (e.g. no KV slot).
        """
        rows: list[FloatRow] = []
        for start in range(0, len(entries), self.n_batch):
            rows.extend(self._decode_chunk(entries[start : start + self.n_batch]))
        return rows

    def _decode_chunk(self, chunk: Sequence[Entry]) -> list[FloatRow]:
        batch = self._batch
        wanted: list[int] = []
        for i, e in enumerate(chunk):
            batch.token[i] = e.token
            batch.pos[i] = e.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = e.seq
            batch.logits[i] = 1 if e.want_logits else 0
            if e.want_logits:
                wanted.append(i)
        batch.n_tokens = len(chunk)
        started = time.perf_counter()
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise LlamaDecodeError(f"llama_decode returned {rc} for a batch of {len(chunk)} tokens")
        rows = [self._logits_row(i) for i in wanted]
        c = self.counters
        c.model_seconds += time.perf_counter() - started
        c.decode_calls += 1
        c.tokens_decoded += len(chunk)
        c.logits_rows += len(wanted)
        return rows

    def _logits_row(self, index: int) -> FloatRow:
        ptr = self._lib.llama_get_logits_ith(self._ctx, index)
        if not ptr:
            raise LlamaDecodeError(f"no logits for batch index {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    # ---------------------------------------------------------------- LoRA adapters

    def load_adapter(self, path: Path) -> Any:
        """Load a GGUF LoRA adapter for this model (freed with the model); it is not applied until
        :meth:`set_adapters`.

        Raises:
            RuntimeError: llama.cpp refused the file (not a LoRA for this architecture, bad file).
        """
        handle = self._lib.llama_adapter_lora_init(self._model, str(path).encode())
        if not handle:
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {path} for this model")
        self._adapters.append(handle)
        return handle

    def set_adapters(self, adapters: Sequence[tuple[Any, float]]) -> None:
        """Apply exactly these ``(adapter, scale)`` pairs to the context (none: the base model). KV memory computed
        under other adapters is stale: callers clear it."""
        lib = self._lib
        n = len(adapters)
        if n == 0:
            rc = lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            handles = (lib.llama_adapter_lora_p_ctypes * n)(*[a for a, _ in adapters])
            scales = (ctypes.c_float * n)(*[float(s) for _, s in adapters])
            rc = lib.llama_set_adapters_lora(self._ctx, handles, n, scales)
        if rc != 0:
            raise RuntimeError(f"llama_set_adapters_lora returned {rc}")

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            lib.llama_free(self._ctx)
        self._ctx = None
        self._adapters = []  # freed by llama_model_free
        if self._model:
            lib.llama_model_free(self._model)
        self._model = None


def log_softmax_at(row: FloatRow, token: int) -> float:
    """``log_softmax(row)[token]`` over the full vocabulary, with a float64 log-sum-exp."""
    x = row.astype(np.float64)
    m = float(x.max())
    return float(x[token] - m - np.log(np.exp(x - m).sum()))


def greedy(row: FloatRow) -> tuple[int, float]:
    """The argmax token of a logits row and its log-probability."""
    token = int(np.argmax(row))
    return token, log_softmax_at(row, token)
