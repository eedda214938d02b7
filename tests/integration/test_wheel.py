"""A wheel install (not editable) finds its prompts, adapters and confidence model.

The wheel is built from this checkout without build isolation (offline), installed without its dependencies into
a fresh virtual environment by that environment's own pip (bundled, offline: the test environment's pip would
uninstall the editable specrag it runs from), and that environment borrows the test environment's dependencies
through a ``.pth`` line. Python then runs from a folder outside the checkout, so ``app`` and ``graphs`` can only
come from the wheel.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from app.models import ADAPTER_REGISTRY
from tests.conftest import REPO

pytestmark = pytest.mark.integration

PROBE = """
import json, app, graphs
from app.confidence.model import load_model
from app.models import ADAPTER_REGISTRY, ADAPTERS_DIR, resolve_adapter
from graphs import prompting
print(json.dumps({
    "app": app.__file__,
    "prompts": str(prompting.PROMPTS_DIR),
    "templates": sorted(p.stem for p in prompting.PROMPTS_DIR.glob("*.md")),
    "drafter_sections": sorted(prompting.load("drafter").sections),
    "adapters": str(ADAPTERS_DIR),
    "resolved": [str(resolve_adapter(name).path) for name in sorted(ADAPTER_REGISTRY)],
    "confidence": load_model().name,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (found,) = out.glob("specrag-*.whl")
    return found


def test_wheel_carries_the_data_folders(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "specrag-0.1.0.data/data/share/specrag"
    prompts = {p.name for p in (REPO / "prompts").glob("*.md")}
    assert prompts and {f"{data}/prompts/{name}" for name in prompts} <= names
    for name in ADAPTER_REGISTRY:
        assert f"{data}/adapters/{name}/adapter.gguf" in names
        assert f"{data}/adapters/{name}/README.md" in names
    bundled = {p.name for p in (REPO / "app" / "confidence").glob("*.json")}
    assert bundled and {f"app/confidence/{name}" for name in bundled} <= names


def test_installed_wheel_runs_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The test environment's site-packages after the wheel's own (a plain path: its .pth files, the editable
    # install's among them, are not processed).
    Path(purelib, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=tmp_path, env={"PATH": ""}
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    share = env_dir / "share" / "specrag"
    assert Path(seen["app"]).is_relative_to(Path(purelib))
    assert Path(seen["prompts"]) == share / "prompts"
    assert set(seen["templates"]) == {p.stem for p in (REPO / "prompts").glob("*.md")}
    assert {"system", "user"} <= set(seen["drafter_sections"])
    assert Path(seen["adapters"]) == share / "adapters"
    assert seen["resolved"] == [str(share / "adapters" / name / "adapter.gguf") for name in sorted(ADAPTER_REGISTRY)]
    assert seen["confidence"] == "specrag-confidence-v5"
    # The test environment's own install (editable, this checkout) is untouched: still registered in its
    # site-packages (an uninstall raises PackageNotFoundError here), its `specrag` command still there.
    here = [sysconfig.get_paths()["purelib"]]
    assert [d.name for d in importlib.metadata.distributions(path=here) if d.name == "specrag"] == ["specrag"]
    assert (Path(sys.executable).parent / "specrag").is_file()
