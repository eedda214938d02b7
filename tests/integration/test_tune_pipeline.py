"""The drafter-tuning pipeline end to end on a tiny model (the packaged SmolLM2-135M GGUF): a few training steps,
an exact resume, conversion to a GGUF LoRA adapter, and loading it back into llama.cpp through the backend (logits
change; removing the adapter restores the base logits exactly)."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.models import resolve_adapter
from app.tune.convert import convert
from app.tune.data import DataConfig, build_examples
from app.tune.train import TrainConfig, read_log, train
from tests.conftest import unavailable
from tests.fakes import FakeEmbedder
from tests.unit.test_tune_data import _pool

pytestmark = pytest.mark.integration

TINY = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def base(packaged_model: Callable[[str], Path]) -> Path:
    for module in ("peft", "gguf", "transformers", "sentencepiece", "torch"):
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is not installed (the 'tune' extra; `make install` installs the dev group)")
    return packaged_model(TINY)


def _config(examples: Path) -> TrainConfig:
    return TrainConfig(
        base=TINY,
        examples=str(examples),
        max_examples=3,
        lr=2e-3,
        warmup=0.0,
        checkpoint_every=2,
        threads=1,  # one thread: with two, a busy machine makes each step several times slower
        max_tokens=1024,
        seed=5,
    )


def test_train_resume_convert_and_load(base: Path, tmp_path: Path) -> None:
    from app.llm.llamacpp import LlamaCppModel
    from app.tune.train import load_base

    loaded = load_base(base, threads=1)

    def loader(_path: Path, _threads: int | None) -> tuple[Any, Any]:
        return copy.deepcopy(loaded[0]), loaded[1]

    examples, _ = build_examples(_pool(), FakeEmbedder(), DataConfig(questions_per_source=3, distractor_reservoir=6))
    config = _config(tmp_path / "examples.jsonl")

    straight = train(config, tmp_path / "a", base_path=base, examples=examples, loader=loader)
    assert straight.steps == straight.total_steps == 3
    assert (tmp_path / "a" / "loss_curve.png").stat().st_size > 0

    # Stopped after 2 steps, then resumed: the same losses and the same adapter as the uninterrupted run.
    part = train(config, tmp_path / "b", base_path=base, examples=examples, stop_after=2, loader=loader)
    assert part.steps == 2 and part.adapter_dir == ""
    resumed = train(config, tmp_path / "b", base_path=base, examples=examples, resume=True, loader=loader)
    assert resumed.steps == 3
    losses_a = [r.loss for r in read_log(tmp_path / "a" / "loss.jsonl")]
    losses_b = [r.loss for r in read_log(tmp_path / "b" / "loss.jsonl")]
    assert losses_a == pytest.approx(losses_b, abs=1e-5)

    out = tmp_path / "adapter.gguf"
    done = convert(
        tmp_path / "a" / "adapter", tmp_path / "a" / "base_config.json", out, cache_dir=Path(".specrag/tune")
    )
    assert out.is_file() and done.size > 0
    adapter = resolve_adapter(str(out))  # checked against the .sha256 written beside it
    assert adapter.sha256 == done.sha256

    tuned = LlamaCppModel(base, n_ctx=512, n_seq_max=2, n_threads=1, adapter=adapter)
    plain = LlamaCppModel(base, n_ctx=512, n_seq_max=2, n_threads=1)
    try:
        assert "LoRA adapter.gguf" in tuned.name
        assert "sha256" in tuned.provenance("generate")
        ids = tuned.tokenize(
            "The capital of France is Paris. The capital of Italy is", add_special=True, parse_special=False
        )
        positions = list(range(len(ids)))
        with_adapter = np.stack(tuned.score_ids(ids, positions)[0])
        base_rows = np.stack(plain.score_ids(ids, positions)[0])
        assert float(np.abs(with_adapter - base_rows).max()) > 1e-3
        tuned.set_adapter_enabled(False)
        removed = np.stack(tuned.score_ids(ids, positions)[0])
        assert np.array_equal(removed, base_rows)
        assert "LoRA" not in tuned.name
        tuned.set_adapter_enabled(True)
        again = np.stack(tuned.score_ids(ids, positions)[0])
        assert np.array_equal(again, with_adapter)
    finally:
        tuned.close()
        plain.close()
