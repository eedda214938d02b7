"""Ship a trained adapter: ``adapters/<name>/`` with the GGUF LoRA, its model card, the data card and the loss
curve. The registry entry (``app.models.ADAPTER_REGISTRY``: name, base, sha256, size) is added by hand from what
this prints, so that a packaged adapter's hash is reviewed in the diff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import BaseModel

from app.tune.check import SampleDraft, TokenCheck
from app.tune.convert import Converted
from app.tune.data import DataCard, card_markdown
from app.tune.train import Horizon, TrainSummary, read_log


class ShipInfo(BaseModel):
    """What ``ship`` wrote."""

    directory: str
    adapter: Converted
    base: str
    base_sha256: str


def model_card(
    name: str,
    summary: TrainSummary,
    data: DataCard,
    adapter: Converted,
    *,
    horizon: Horizon | None = None,
    tokens: TokenCheck | None = None,
    drafts: list[SampleDraft] | None = None,
    notes: list[str] | None = None,
) -> str:
    """The adapter's model card (Markdown)."""
    c = summary.config
    records = read_log(Path(summary.adapter_dir).parent / "loss.jsonl") if summary.adapter_dir else []
    target_tokens = sum(r.tokens for r in records)
    seq_tokens = sum(r.seq_tokens for r in records)
    lines = [
        f"# {name}: a LoRA adapter for the specrag drafter",
        "",
        f"A LoRA adapter (GGUF, {adapter.size / 1e6:.1f} MB f16) for the drafter `{c.base}`, tuned to write drafts in "
        "the reply format of `graphs/drafting.py` (`Rationale: <at most two sentences>` then `Answer: <letter | "
        "short span>`) and to abstain (`Answer: unknown`) when its subset of passages does not hold the answer.",
        "",
        "```bash",
        f"SPECRAG_DRAFTER__LORA={name} specrag ask ...      # sha256 checked at load (app/models.py registry)",
        "```",
        "",
        "With Ollama, build a model from the same base weights plus the adapter (a Modelfile `ADAPTER` line; "
        "not tried here: no Ollama server on this machine), then "
        "name it as the drafter (`SPECRAG_DRAFTER__PROVIDER=ollama SPECRAG_DRAFTER__MODEL=specrag-drafter`):",
        "",
        "```",
        f"FROM {Path(summary.base_path).name}   # the base GGUF (app/models.py assembles it)",
        "ADAPTER ./adapter.gguf",
        "```",
        "",
        "Not the default drafter: that is decided after the dev evaluation (`docs/eval`).",
        "",
        "## Files",
        "",
        f"- `adapter.gguf`: sha256 `{adapter.sha256}`, {adapter.size} bytes (converted with llama.cpp's "
        "`convert_lora_to_gguf.py` from the llama-cpp-python 0.3.36 sdist, `--outtype f16`)",
        "- `loss_curve.png`: training loss per step",
        "- `data_card.md`, `data_card.json`: the training data",
        "",
        "## Base model",
        "",
        f"- `{c.base}` (`{Path(summary.base_path).name}`), sha256 `{summary.base_sha256}`",
        "- loaded with transformers' GGUF loader (dequantised), rebuilt as a plain model; the frozen base weights "
        + ("were cast to bf16 for training (LoRA weights fp32)" if c.precision == "bf16" else f"in {c.precision}"),
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| examples | {summary.examples_used} selected (of {data.examples} built; {summary.examples_skipped_long} "
        f"longer than {c.max_tokens} tokens skipped), {summary.steps * c.grad_accum} seen |",
        f"| steps | {summary.steps} optimizer steps, batch 1"
        + (f" × {c.grad_accum} accumulated" if c.grad_accum > 1 else "")
        + f", {c.epochs:g} epoch planned ({summary.planned_steps} steps) |",
        f"| tokens | {target_tokens:,} target tokens (loss) of {seq_tokens:,} |",
        f"| LoRA | r={c.rank}, alpha={c.alpha}, dropout={c.dropout}, on {', '.join(c.target_modules)}; "
        + ("all layers" if c.layers is None else f"last {c.layers} layers")
        + f"; {summary.trainable_parameters:,} trainable parameters |",
        f"| optimizer | AdamW, lr {c.lr:g}, warmup {c.warmup:.0%}, cosine decay to 10% |",
        "| loss | cross-entropy on the target tokens only (the reply after the `Rationale:` prefill, ended by "
        "`<\\|im_end\\|>`) |",
        f"| seed | {c.seed} |",
        f"| precision | {c.precision} |",
        f"| s/step | {summary.seconds_per_step:.1f} (median) on 2 shared CPU cores |",
        f"| wall time | {summary.wall_seconds / 60:.0f} min of training (model loading excluded) |",
        f"| loss | {summary.first_loss:.3f} (first 10% of steps) → {summary.final_loss:.3f} (last 10%) |",
        "",
    ]
    if horizon is not None and horizon.set_at_step is not None:
        lines += [
            f"The run was planned for {summary.planned_steps} steps and shortened to {horizon.total_steps} at step "
            f"{horizon.set_at_step} (why: the notes below, where given): the data order is "
            "unchanged, the learning rate decays over the new horizon from that step on, "
            f"so {summary.planned_steps - horizon.total_steps} of the selected examples were never seen.",
            "",
        ]
    lines += ["![training loss](loss_curve.png)", ""]
    if tokens is not None:
        lines += [
            "## Checks",
            "",
            f"- Tokenisation: transformers' GGUF tokenizer (training) against llama.cpp's (the backend) on "
            f"{tokens.examples} examples, {tokens.tokens:,} tokens: {tokens.mismatches} mismatches.",
        ]
    if drafts:
        fmt = sum(d.follows_format for d in drafts)
        abst = [d for d in drafts if d.expected_outcome == "abstain"]
        lines += [
            f"- Drafting {len(drafts)} training-pool examples through the llamacpp backend with the adapter (greedy): "
            f"{fmt}/{len(drafts)} follow the reply format, {sum(d.correct for d in drafts)} are right; "
            f"{sum(d.outcome == 'abstain' for d in abst)}/{len(abst)} abstain where the subset lacks the answer. "
            "These are training-pool questions this run never trained on (not dev): a format check on a small "
            "sample, not an accuracy figure.",
            "",
            "| example | expected | reply |",
            "|---|---|---|",
        ]
        for d in drafts:
            reply = " ".join(d.reply.split()).replace("|", "\\|")
            lines.append(f"| {d.example_id} | {d.expected_outcome}: {d.expected_answer} | {reply} |")
        lines.append("")
    lines += [
        "## Data",
        "",
        "Rationales were **extracted** from the passages (the sentence(s) holding the gold alias; for multiple choice "
        "the best-overlapping sentence, else a sentence naming the gold choice); the teacher mode "
        "(`--rationale teacher`, the verifier model) was too slow for this CPU (about 5 s per example)."
        if data.config.rationale == "extract"
        else f"Rationales: {data.teacher}."
        if data.config.rationale == "mixed"
        else f"Rationales were written by a teacher: {data.teacher}.",
        "",
        *card_markdown(data).splitlines()[2:],
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def ship(
    name: str,
    run_dir: Path,
    data_dir: Path,
    adapter: Converted,
    *,
    dest_root: Path,
    tokens: TokenCheck | None = None,
    drafts: list[SampleDraft] | None = None,
    notes: list[str] | None = None,
) -> ShipInfo:
    """Copy the adapter, curve and data card into ``dest_root/name`` and write its README (the model card)."""
    summary = TrainSummary.model_validate_json((run_dir / "summary.json").read_text(encoding="utf-8"))
    data = DataCard.model_validate_json((data_dir / "data_card.json").read_text(encoding="utf-8"))
    horizon_path = run_dir / "horizon.json"
    horizon = Horizon.model_validate_json(horizon_path.read_text(encoding="utf-8")) if horizon_path.is_file() else None
    dest = dest_root / name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(adapter.path, dest / "adapter.gguf")
    shutil.copyfile(run_dir / "loss_curve.png", dest / "loss_curve.png")
    shutil.copyfile(data_dir / "data_card.md", dest / "data_card.md")
    shutil.copyfile(data_dir / "data_card.json", dest / "data_card.json")
    (dest / "training_summary.json").write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if drafts:
        (dest / "sanity_drafts.json").write_text(
            json.dumps([d.model_dump() for d in drafts], indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    (dest / "README.md").write_text(
        model_card(name, summary, data, adapter, horizon=horizon, tokens=tokens, drafts=drafts, notes=notes),
        encoding="utf-8",
    )
    return ShipInfo(directory=str(dest), adapter=adapter, base=summary.config.base, base_sha256=summary.base_sha256)
