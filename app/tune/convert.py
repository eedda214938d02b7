"""A peft LoRA adapter to a GGUF LoRA adapter (f16) that llama.cpp loads beside the base GGUF.

The converter is ``vendor/llama.cpp/convert_lora_to_gguf.py`` from the llama-cpp-python sdist of the installed
version (0.3.36), with the ``gguf-py`` and ``conversion`` packages beside it: the sdist is fetched once with
``pip download --no-deps --no-binary :all:`` into ``.specrag/tune/sdist`` and the converter unpacked next to it.
``--base`` is a directory holding only the base model's ``config.json`` (with ``architectures``), so nothing is
looked up on a model hub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pydantic import BaseModel

from app.models import sha256_file

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
_VENDOR = "vendor/llama.cpp/"
_FORBIDDEN = ("lm_head", "embed_tokens", "wte", "output")


class ConvertError(RuntimeError):
    """The adapter cannot be converted (the message is one line)."""


class Converted(BaseModel):
    """A converted adapter."""

    path: str
    sha256: str
    size: int


def _wanted(name: str, root: str) -> str | None:
    """The path under the unpack directory of an sdist member the converter needs, or None."""
    prefix = f"{root}/{_VENDOR}"
    if not name.startswith(prefix):
        return None
    rel = name[len(prefix) :]
    top = rel.split("/", 1)[0]
    if (top.startswith("convert_") and top.endswith(".py") and "/" not in rel) or top in ("gguf-py", "conversion"):
        return rel
    return None


def ensure_converter(cache_dir: Path, *, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The path of ``convert_lora_to_gguf.py``, unpacked from the cached sdist (downloaded with pip if absent).

    Raises:
        ConvertError: the sdist cannot be fetched or does not hold the converter.
    """
    dest = cache_dir / f"llama.cpp-{version}"
    script = dest / "convert_lora_to_gguf.py"
    if script.is_file():
        return script
    sdist_dir = cache_dir / "sdist"
    tarball = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not tarball.is_file():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += [f"llama-cpp-python=={version}", "-d", str(sdist_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not tarball.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConvertError(f"could not fetch the llama-cpp-python {version} sdist: {tail[0]}")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            root = f"llama_cpp_python-{version}"
            for member in tar.getmembers():
                rel = _wanted(member.name, root)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                target = tmp / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is not None:
                    target.write_bytes(src.read())
        if not (tmp / "convert_lora_to_gguf.py").is_file():
            raise ConvertError(f"{tarball} holds no {_VENDOR}convert_lora_to_gguf.py")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return script


def check_adapter(adapter_dir: Path) -> dict[str, object]:
    """The adapter's peft config, checked: a LoRA that touches no output layer or embeddings.

    Raises:
        ConvertError: missing files, or a forbidden target module.
    """
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ConvertError(f"{adapter_dir} is not a peft adapter (adapter_config.json + adapter_model.safetensors)")
    cfg: dict[str, object] = json.loads(cfg_path.read_text(encoding="utf-8"))
    targets = cfg.get("target_modules") or []
    names = [targets] if isinstance(targets, str) else list(targets)  # type: ignore[call-overload]
    bad = [str(t) for t in names if any(f in str(t) for f in _FORBIDDEN)]
    if bad or cfg.get("modules_to_save"):
        what = bad or cfg["modules_to_save"]
        raise ConvertError(f"the adapter must not touch the output layer or embeddings: {what}")
    return cfg


def convert(adapter_dir: Path, base_config: Path, out: Path, *, cache_dir: Path, outtype: str = "f16") -> Converted:
    """Convert a peft adapter to a GGUF LoRA adapter and write ``<out>.sha256`` beside it.

    Args:
        adapter_dir: ``save_pretrained`` output of the peft model.
        base_config: The base model's ``config.json`` (it must name ``architectures``).
        out: The GGUF file to write.
        cache_dir: Where the sdist and the unpacked converter are kept.
        outtype: f16 (default), f32, bf16 or q8_0.

    Raises:
        ConvertError: bad adapter or config, or the converter failed.
    """
    check_adapter(adapter_dir)
    config = json.loads(base_config.read_text(encoding="utf-8"))
    if not config.get("architectures"):
        raise ConvertError(f"{base_config} names no architectures")
    script = ensure_converter(cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lora-base-") as base_dir:
        (Path(base_dir) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        cmd = [sys.executable, str(script), str(adapter_dir), "--outfile", str(out), "--outtype", outtype]
        cmd += ["--base", base_dir]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("NO_LOCAL_GGUF", None)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not out.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise ConvertError(f"convert_lora_to_gguf.py failed: {lines[-1]}")
    digest = sha256_file(out)
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n", encoding="utf-8")
    return Converted(path=str(out), sha256=digest, size=out.stat().st_size)
