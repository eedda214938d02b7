"""The packaged model registry (no model is loaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.models import (
    GGUF_MAGIC,
    REGISTRY,
    ModelNotInstalledError,
    PackagedModel,
    assemble,
    check_gguf,
    get_spec,
    is_assembled,
    resolve_model,
)


def test_registry_names() -> None:
    assert set(REGISTRY) == {
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
    }
    for spec in REGISTRY.values():
        assert len(spec.sha256) == 64
        assert spec.size > 0
        assert len(spec.modules) == len(spec.packages) == spec.n_parts
    assert get_spec("qwen2.5-coder-1.5b-instruct").n_parts == 22


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("no-such-model", tmp_path)


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="not a GGUF"):
        resolve_model(str(bogus), tmp_path)


def test_existing_gguf_path_is_returned_as_is(tmp_path: Path) -> None:
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00")
    check_gguf(fake)
    assert resolve_model(str(fake), tmp_path / "cache") == fake


def _fake_parts(root: Path, prefix: str, chunks: list[bytes]) -> None:
    for i, chunk in enumerate(chunks, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('part code must never be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)


def _fake_spec(prefix: str, payload: bytes, n: int) -> PackagedModel:
    return PackagedModel(
        name="fake",
        filename="fake.gguf",
        packages=tuple(f"fake-part{i}" for i in range(1, n + 1)),
        modules=tuple(f"{prefix}{i}" for i in range(1, n + 1)),
        part_glob="data/part*.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )


def test_assemble_concatenates_checks_and_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [GGUF_MAGIC + b"a" * 10, b"b" * 7, b"c" * 3]
    _fake_parts(tmp_path / "site", "specrag_fake_ok_part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _fake_spec("specrag_fake_ok_part", b"".join(chunks), len(chunks))
    cache = tmp_path / "cache"
    path = assemble(spec, cache)
    assert path.read_bytes() == b"".join(chunks)
    assert is_assembled(spec, cache)
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.sha256-ok"]
    mtime = path.stat().st_mtime_ns
    assert assemble(spec, cache) == path
    assert path.stat().st_mtime_ns == mtime


def test_assemble_rejects_a_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [GGUF_MAGIC + b"x", b"y"]
    _fake_parts(tmp_path / "site", "specrag_fake_bad_part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _fake_spec("specrag_fake_bad_part", b"something else", 2)
    spec = PackagedModel(**{**spec.__dict__, "size": sum(map(len, chunks))})
    with pytest.raises(ValueError, match="sha256"):
        assemble(spec, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_missing_part_package_says_make_install(tmp_path: Path) -> None:
    spec = _fake_spec("specrag_fake_missing_part", b"abc", 2)
    with pytest.raises(ModelNotInstalledError, match="make install"):
        assemble(spec, tmp_path / "cache")
