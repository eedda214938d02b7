"""Target-only loss of drafter tuning (app/tune/train.py) on a random tiny Qwen2: prompt positions are ignored,
target positions count, and the fast path (``logits_to_keep``) equals transformers' own masked loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch  # the tune extra, which the dev group installs: a missing one is an error, not a skip
import transformers

from app.tune.train import IGNORE, lr_at, mask_prompt, reference_loss, target_loss

N_PROMPT = 12
N = 20


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    m = transformers.Qwen2ForCausalLM(config)
    m.eval()
    return m


@pytest.fixture()
def ids() -> Any:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 97, (1, N), generator=g)


def test_prompt_positions_are_masked(ids: Any) -> None:
    labels = mask_prompt(ids, N_PROMPT)
    assert (labels[0, :N_PROMPT] == IGNORE).all()
    assert torch.equal(labels[0, N_PROMPT:], ids[0, N_PROMPT:])


def test_changing_a_prompt_label_changes_nothing(model: Any, ids: Any) -> None:
    with torch.no_grad():
        base, count = target_loss(model, ids, mask_prompt(ids, N_PROMPT))
        other = ids.clone()
        other[0, 3] = (other[0, 3] + 1) % 97  # a different label source at a prompt position
        same, _ = target_loss(model, ids, mask_prompt(other, N_PROMPT))
    assert count == N - N_PROMPT
    assert torch.equal(base, same)


def test_changing_a_target_label_changes_the_loss(model: Any, ids: Any) -> None:
    with torch.no_grad():
        base, _ = target_loss(model, ids, mask_prompt(ids, N_PROMPT))
        other = ids.clone()
        other[0, N_PROMPT + 2] = (other[0, N_PROMPT + 2] + 1) % 97
        changed, _ = target_loss(model, ids, mask_prompt(other, N_PROMPT))
    assert not torch.isclose(base, changed)


def test_fast_path_equals_the_full_logits_loss(model: Any, ids: Any) -> None:
    labels = mask_prompt(ids, N_PROMPT)
    with torch.no_grad():
        fast, _ = target_loss(model, ids, labels)
        full = reference_loss(model, ids, labels)
    assert torch.allclose(fast, full, atol=1e-6)


def test_no_target_is_an_error(model: Any, ids: Any) -> None:
    with pytest.raises(ValueError):
        target_loss(model, ids, mask_prompt(ids, N))


def test_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 100, 1e-3, 0.1) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3)
    assert lrs[-1] < lrs[50] < lrs[10]
    assert min(lrs[10:]) >= 1e-4 - 1e-12
