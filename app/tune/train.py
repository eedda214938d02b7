"""LoRA tuning of the drafter on the CPU, from its GGUF file (``../shared/notes/drafter-tuning.md``).

* The base weights come from the GGUF through transformers' GGUF loader (dequantised to fp32), rebuilt as a plain
  model of the same architecture (a model loaded from GGUF carries a quantizer marker that blocks training and
  saving).
* Each example is tokenised exactly as the llama.cpp backend feeds the drafter (``LlamaCppModel.prompt_ids``: the
  model's own chat template from the GGUF, template text read with control tokens, message contents never), then
  the target reply after the ``Rationale:`` prefill, ended by the token that closes the assistant turn
  (``<|im_end|>``, not the GGUF's eos).
* The loss is on the target tokens only; ``logits_to_keep`` computes the output layer on those positions alone.
* AdamW, linear warmup then cosine decay, batch 1 with optional gradient accumulation; a checkpoint every N steps
  holds the adapter, optimizer, scheduler and RNG states, so ``resume`` continues exactly (the data order is a
  function of the seed and the step).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from app.llm.chat_template import ChatTemplate
from app.llm.protocol import ChatPrompt
from app.models import sha256_file
from app.tune.data import TuneExample, example_prompt

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IGNORE = -100
"""Label of a position the loss ignores (the prompt)."""

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Precision = Literal["fp32", "bf16-autocast", "bf16"]


class TuneError(RuntimeError):
    """A training run cannot start or continue (the message is one line)."""


class TrainConfig(BaseModel):
    """A training run's settings (stored in its directory; ``resume`` refuses a different one)."""

    base: str = Field(description="The base GGUF: a packaged model name or a path")
    examples: str = Field(description="examples.jsonl from `specrag tune data`")
    max_examples: int | None = Field(None, ge=1, description="Train on the first N examples of the seeded order")
    epochs: float = Field(1.0, gt=0, description="Passes over the examples (fractions allowed)")
    lr: float = Field(2e-4, gt=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="Share of the steps with linear warmup")
    weight_decay: float = 0.0
    grad_accum: int = Field(1, ge=1, description="Examples per optimizer step")
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    layers: int | None = Field(None, ge=1, description="LoRA on the last N transformer layers only (None: all)")
    precision: Precision = "fp32"
    max_tokens: int = Field(640, ge=32, description="Examples longer than this (prompt + target) are skipped")
    seed: int = 0
    checkpoint_every: int = Field(25, ge=1, description="Optimizer steps between checkpoints")
    threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default)")


class StepRecord(BaseModel):
    """One optimizer step in the loss log."""

    step: int
    loss: float
    tokens: int = Field(description="Target tokens in the step")
    seq_tokens: int = Field(description="All tokens in the step")
    lr: float
    seconds: float
    example_ids: list[str]


class TrainSummary(BaseModel):
    """What a finished (or stopped) run did."""

    config: TrainConfig
    base_path: str
    base_sha256: str
    examples_used: int
    examples_skipped_long: int
    steps: int
    total_steps: int
    planned_steps: int = Field(description="Steps the config asked for (more than total_steps if shortened)")
    horizon_set_at: int | None = Field(None, description="Step at which the run was shortened, if it was")
    seconds_per_step: float
    wall_seconds: float = Field(description="Training time summed over every session of the run (resumes included)")
    final_loss: float = Field(description="Mean loss of the last 10% of the steps (at least 1)")
    first_loss: float = Field(description="Mean loss of the first 10% of the steps")
    trainable_parameters: int
    adapter_dir: str


# ---------------------------------------------------------------------------------------------- base model


def _tune_imports() -> None:
    try:
        import gguf  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise TuneError(f"training needs the 'tune' extra (pip install -e '.[tune]'): {exc}") from None


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover (other transformers versions)
        yield
        return
    with no_init_weights():
        yield


def load_tokenizer(gguf_path: Path) -> Any:
    """The transformers tokenizer built from a GGUF (no weights loaded).

    Raises:
        TuneError: the training dependencies are missing or the file cannot be read.
    """
    _tune_imports()
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as exc:  # transformers raises many kinds here
        raise TuneError(
            f"transformers could not read the tokenizer of {gguf_path}: {str(exc).splitlines()[0]}"
        ) from None


def load_base(gguf_path: Path, *, threads: int | None = None) -> tuple[Any, Any]:
    """The base model (fp32, a plain ``*ForCausalLM`` without the GGUF quantizer marker) and its tokenizer.

    Raises:
        TuneError: the training dependencies are missing or the file cannot be loaded.
    """
    _tune_imports()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds here
        raise TuneError(f"transformers could not load {gguf_path}: {str(exc).splitlines()[0]}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(loaded).__name__]
    with _no_init():  # every weight is overwritten below: skip the random initialisation
        model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise TuneError(f"state dict mismatch rebuilding {type(loaded).__name__}: {real_missing[:3]} {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    del loaded
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- tokenisation


@dataclass(frozen=True)
class Encoded:
    """An example as token ids: the prompt (what the backend feeds, prefill included), then the target."""

    example_id: str
    prompt: list[int]
    target: list[int]

    @property
    def ids(self) -> list[int]:
        """Prompt then target."""
        return self.prompt + self.target


class PromptTokenizer:
    """Tokenises chat prompts the way ``app.llm.llamacpp.LlamaCppModel.prompt_ids`` does, with the transformers
    tokenizer built from the same GGUF.

    Args:
        tokenizer: The transformers tokenizer (``load_base``).
        gguf_path: The GGUF (chat template, BOS rules).
    """

    def __init__(self, tokenizer: Any, gguf_path: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(str(gguf_path))

        def field(key: str) -> Any:
            f = reader.fields.get(key)
            return f.contents() if f is not None else None

        source = field("tokenizer.chat_template")
        if not source:
            raise TuneError(f"{gguf_path} has no tokenizer.chat_template")
        self.tok = tokenizer
        bos_id, eos_id = field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")
        self.adds_bos = bool(field("tokenizer.ggml.add_bos_token"))
        self.bos_id = int(bos_id) if bos_id is not None else None
        bos_text = tokenizer.convert_ids_to_tokens(int(bos_id)) if bos_id is not None else ""
        eos_text = tokenizer.convert_ids_to_tokens(int(eos_id)) if eos_id is not None else ""
        self.template = ChatTemplate(str(source), bos_token=bos_text, eos_token=eos_text)

    def encode(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text``; control tokens are read only when ``special``."""
        return list(self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def prompt_ids(self, prompt: ChatPrompt) -> list[int]:
        """As ``LlamaCppModel.prompt_ids``: template parts with control tokens, message contents without; BOS only
        when the tokenizer adds one and the template did not write it."""
        parts = self.template.prefix_parts(prompt)
        bos_text = self.template.bos_token
        add_bos = self.adds_bos and not (bos_text and parts and parts[0][0].startswith(bos_text))
        ids: list[int] = [self.bos_id] if add_bos and self.bos_id is not None else []
        for text, is_content in parts:
            ids += self.encode(text, special=not is_content)
        return ids

    def end_of_turn(self, prompt: ChatPrompt) -> int:
        """The token that closes the assistant turn (the first token of the template's tail: ``<|im_end|>``)."""
        tail = self.template.tail(prompt, [])
        ids = self.encode(tail, special=True)
        if not ids:
            raise TuneError("the chat template writes nothing after the assistant turn")
        return ids[0]

    def encode_example(self, example: TuneExample) -> Encoded:
        """Prompt ids (prefill included) and target ids (the reply, then the end-of-turn token)."""
        prompt = example_prompt(example)
        target = [*self.encode(example.target, special=False), self.end_of_turn(prompt)]
        return Encoded(example_id=example.id, prompt=self.prompt_ids(prompt), target=target)


# ---------------------------------------------------------------------------------------------- loss


def mask_prompt(ids: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Labels for ``ids``: a copy with the first ``n_prompt`` positions set to ``IGNORE``."""
    labels = ids.clone()
    labels[..., :n_prompt] = IGNORE
    return labels


def target_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the labelled positions (``labels != IGNORE``), the output layer computed only from the
    first labelled position on (``logits_to_keep``); returns the loss and the number of labelled tokens.

    Args:
        model: A causal LM that accepts ``logits_to_keep``.
        input_ids: Shape (1, n).
        labels: Shape (1, n); position i is the label of token i (predicted from positions < i).
    """
    import torch.nn.functional as F

    labelled = (labels[0] != IGNORE).nonzero()
    if len(labelled) == 0:
        raise ValueError("no labelled position")
    first = int(labelled[0])
    if first == 0:
        raise ValueError("the first token cannot be a target (nothing predicts it)")
    n = input_ids.shape[1]
    keep = n - first + 1
    logits = model(input_ids=input_ids, logits_to_keep=keep).logits[:, :-1, :]  # predictions of positions first..n-1
    target = labels[:, first:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    count = int((target != IGNORE).sum())
    return loss / max(count, 1), count


def reference_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same loss from the full logits (transformers' own shifted cross-entropy): for tests."""
    out = model(input_ids=input_ids, labels=labels)
    return out.loss


# ---------------------------------------------------------------------------------------------- LoRA


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` with a LoRA adapter (peft) on ``config.target_modules``, optionally on the last N layers."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config, int(model.config.num_hidden_layers)))


def trainable_parameters(model: Any) -> int:
    """Number of parameters that require a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lr_at(step: int, total: int, base_lr: float, warmup: float) -> float:
    """Linear warmup over ``warmup * total`` steps, then cosine decay to 10% of ``base_lr``."""
    n_warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < n_warm:
        return base_lr * (step + 1) / n_warm
    progress = (step - n_warm) / max(1, total - n_warm)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@contextlib.contextmanager
def precision_context(precision: Precision) -> Iterator[None]:
    """bf16 autocast on the CPU for ``bf16-autocast``; nothing otherwise."""
    import torch

    if precision == "bf16-autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


# ---------------------------------------------------------------------------------------------- the run


class RunPaths:
    """Files of a training run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.json"
        self.checkpoint = root / "checkpoint.pt"
        self.log = root / "loss.jsonl"
        self.curve = root / "loss_curve.png"
        self.adapter = root / "adapter"
        self.summary = root / "summary.json"
        self.base_config = root / "base_config.json"
        self.horizon = root / "horizon.json"


class Horizon(BaseModel):
    """A run shortened after it started (``train(total_steps=...)``)."""

    total_steps: int = Field(ge=1)
    set_at_step: int | None = Field(None, description="The step at which the schedule switched to the new horizon")


def _horizon(paths: RunPaths, resume: bool, total_steps: int | None) -> Horizon | None:
    """The run's shortened horizon: a new one (``total_steps``), else the stored one on resume."""
    if total_steps is not None:
        return Horizon(total_steps=total_steps)
    if resume and paths.horizon.is_file():
        return Horizon.model_validate_json(paths.horizon.read_text(encoding="utf-8"))
    return None


def _data_order(n: int, seed: int, total: int) -> list[int]:
    """Example index of every training example slot: seeded permutations, one per epoch."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < total:
        order += [int(i) for i in rng.permutation(n)]
    return order[:total]


def read_log(path: Path) -> list[StepRecord]:
    """The loss log (one record per optimizer step)."""
    if not path.is_file():
        return []
    return [StepRecord.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_curve(records: Sequence[StepRecord], path: Path, *, title: str = "drafter LoRA: training loss") -> None:
    """Loss per step and its moving average, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    steps = [r.step for r in records]
    losses = [r.loss for r in records]
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss per step")
    ax.plot(steps[window - 1 :], smooth, lw=2, label=f"moving average ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on target tokens (nats)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


StepCallback = Callable[[int, int, float, float], None]
"""(step done, total steps, loss, seconds for the step)."""


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    base_path: Path,
    examples: Sequence[TuneExample],
    resume: bool = False,
    stop_after: int | None = None,
    on_start: Callable[[int, int], None] = lambda _done, _total: None,
    on_step: StepCallback = lambda _s, _t, _l, _sec: None,
    loader: Callable[[Path, int | None], tuple[Any, Any]] | None = None,
    total_steps: int | None = None,
) -> TrainSummary:
    """Train (or continue training) a LoRA adapter and save it under ``run_dir/adapter``.

    Args:
        config: The run's settings.
        run_dir: Its directory (config, checkpoint, loss log, curve, adapter, summary).
        base_path: The base GGUF file (``config.base`` resolved).
        examples: The examples (``read_examples(config.examples)``).
        resume: Continue from the checkpoint (the config must be the stored one).
        stop_after: Stop after this many optimizer steps in this call (a checkpoint is written): for measuring.
        on_start: Called with (steps already done, total steps) once the model is ready.
        on_step: Called after every optimizer step.
        total_steps: Shorten the run to this many optimizer steps (a run that would not end in time): the data
            order is unchanged (its first steps), the learning-rate schedule decays over the new horizon from the
            step where it was set on; recorded in ``horizon.json`` and kept by later resumes.
        loader: Loads (model, tokenizer) from the base path and a thread count (default ``load_base``; tests pass
            copies of one loaded model).

    Raises:
        TuneError: an existing run without ``resume``, a config mismatch, nothing to train on.
    """
    import torch

    paths = RunPaths(run_dir)
    if paths.config.exists() and not resume:
        raise TuneError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    if resume:
        if not paths.config.exists():
            raise TuneError(f"nothing to resume in {run_dir}")
        stored = TrainConfig.model_validate_json(paths.config.read_text(encoding="utf-8"))
        if stored.model_copy(update={"threads": config.threads}) != config:
            raise TuneError(
                f"{run_dir} was started with other settings; resume with the same ones (--threads may differ)"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    horizon = _horizon(paths, resume, total_steps)

    torch.manual_seed(config.seed)
    if loader is not None:
        model, tokenizer = loader(base_path, config.threads)
    else:
        model, tokenizer = load_base(base_path, threads=config.threads)
    model.config.to_json_file(str(paths.base_config))
    ptok = PromptTokenizer(tokenizer, base_path)
    encoded: list[Encoded] = []
    skipped = 0
    for ex in examples:
        enc = ptok.encode_example(ex)
        if len(enc.ids) > config.max_tokens:
            skipped += 1
            continue
        encoded.append(enc)
    if config.max_examples is not None:
        pick = _data_order(len(encoded), config.seed, len(encoded))[: config.max_examples]
        encoded = [encoded[i] for i in sorted(pick)]
    if not encoded:
        raise TuneError("no example fits max_tokens")
    n_slots = max(1, round(config.epochs * len(encoded)))
    planned = math.ceil(n_slots / config.grad_accum)
    total = min(planned, horizon.total_steps) if horizon is not None else planned
    order = _data_order(len(encoded), config.seed + 1, total * config.grad_accum)

    if config.precision == "bf16":
        model = model.to(torch.bfloat16)
    model = add_lora(model, config)
    if config.precision == "bf16":
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total, config.lr, config.warmup) / config.lr
    )

    done = 0
    elapsed = 0.0
    if resume and paths.checkpoint.exists():
        from peft import set_peft_model_state_dict

        state = torch.load(paths.checkpoint, weights_only=True)
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        done, elapsed = int(state["step"]), float(state["elapsed"])
    if horizon is not None and horizon.set_at_step is None:
        horizon = Horizon(total_steps=total, set_at_step=done)
        paths.horizon.write_text(horizon.model_dump_json() + "\n", encoding="utf-8")
    if total <= done:
        raise TuneError(f"the run has done {done} steps: --total-steps must be larger")
    records = [r for r in read_log(paths.log) if r.step <= done]
    paths.log.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    on_start(done, total)

    def checkpoint(step: int) -> None:
        from peft import get_peft_model_state_dict

        _atomic_save(
            {
                "step": step,
                "elapsed": elapsed,
                "adapter": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            paths.checkpoint,
        )

    this_call = 0
    with paths.log.open("a", encoding="utf-8") as log_file:
        while done < total and (stop_after is None or this_call < stop_after):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            slots = order[done * config.grad_accum : (done + 1) * config.grad_accum]
            loss_sum, tok_sum, seq_sum = 0.0, 0, 0
            for slot in slots:
                enc = encoded[slot]
                ids = torch.tensor([enc.ids], dtype=torch.long)
                labels = mask_prompt(ids, len(enc.prompt))
                with precision_context(config.precision):
                    loss, count = target_loss(model, ids, labels)
                (loss / len(slots)).backward()
                loss_sum += float(loss.detach()) / len(slots)
                tok_sum += count
                seq_sum += len(enc.ids)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            seconds = time.perf_counter() - start
            elapsed += seconds
            done += 1
            this_call += 1
            record = StepRecord(
                step=done,
                loss=loss_sum,
                tokens=tok_sum,
                seq_tokens=seq_sum,
                lr=lr,
                seconds=seconds,
                example_ids=[encoded[s].example_id for s in slots],
            )
            records.append(record)
            log_file.write(record.model_dump_json() + "\n")
            log_file.flush()
            on_step(done, total, loss_sum, seconds)
            if done % config.checkpoint_every == 0 or done == total:
                checkpoint(done)
        if this_call and done % config.checkpoint_every != 0 and done != total:
            checkpoint(done)

    plot_curve(records, paths.curve)
    if done == total:
        model.save_pretrained(str(paths.adapter))
    tenth = max(1, len(records) // 10)
    secs = [r.seconds for r in records]
    summary = TrainSummary(
        config=config,
        base_path=str(base_path),
        base_sha256=sha256_file(base_path),
        examples_used=len(encoded),
        examples_skipped_long=skipped,
        steps=done,
        total_steps=total,
        planned_steps=planned,
        horizon_set_at=horizon.set_at_step if horizon is not None else None,
        seconds_per_step=float(np.median(secs)) if secs else 0.0,
        wall_seconds=elapsed,
        final_loss=float(np.mean([r.loss for r in records[-tenth:]])) if records else math.nan,
        first_loss=float(np.mean([r.loss for r in records[:tenth]])) if records else math.nan,
        trainable_parameters=trainable_parameters(model),
        adapter_dir=str(paths.adapter) if done == total else "",
    )
    paths.summary.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return summary


def lora_config(config: TrainConfig, n_layers: int) -> Any:
    """The peft ``LoraConfig`` of a run (as ``add_lora`` builds it)."""
    from peft import LoraConfig

    layers = list(range(n_layers - config.layers, n_layers)) if config.layers and config.layers < n_layers else None
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )


def export_checkpoint(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the adapter of a run's latest checkpoint as a peft adapter directory (``adapter_config.json`` and
    ``adapter_model.safetensors``) without loading the base model: a stopped or unfinished run can be converted
    and tried.

    Returns:
        The adapter directory (default ``run_dir/adapter-step<N>``).

    Raises:
        TuneError: no checkpoint or no stored config.
    """
    import torch
    from safetensors.torch import save_file

    paths = RunPaths(run_dir)
    if not paths.checkpoint.is_file() or not paths.config.is_file() or not paths.base_config.is_file():
        raise TuneError(f"{run_dir} holds no checkpoint of a training run")
    config = TrainConfig.model_validate_json(paths.config.read_text(encoding="utf-8"))
    base = json.loads(paths.base_config.read_text(encoding="utf-8"))
    state = torch.load(paths.checkpoint, weights_only=True)
    target = out_dir if out_dir is not None else run_dir / f"adapter-step{int(state['step'])}"
    target.mkdir(parents=True, exist_ok=True)
    lora = lora_config(config, int(base["num_hidden_layers"]))
    lora.base_model_name_or_path = config.base
    lora.inference_mode = True
    lora.save_pretrained(str(target))
    tensors = {k: v.detach().contiguous().float() for k, v in state["adapter"].items()}
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    return target


def save_json(obj: BaseModel, path: Path) -> None:
    """Write a pydantic model as indented JSON."""
    path.write_text(obj.model_dump_json(indent=2) + "\n", encoding="utf-8")


def load_json_lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a file (for reports)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
