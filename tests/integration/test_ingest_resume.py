"""Kill ``specrag ingest`` with SIGKILL at random points, ten times over, on a real LanceDB store with the real MiniLM
embedder: after every kill, every chunk the ingest reported as stored is in the store (and nothing else is), the
store opens and counts right; a final re-run completes it with exactly the expected number of documents."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.store.chunking import chunk_id
from app.store.lancedb_store import LanceDBStore
from app.store.protocol import StoreNotFoundError
from tests.conftest import require_embedding_model
from tests.environment import subprocess_env

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
N_PASSAGES = 800
BATCH = 16
ROUNDS = 10
OVERRUN = 2  # a run is killed at once when it reports this many batches past its kill point (fast machines)
SEED = 3  # the kill points are drawn from random.Random(SEED); the timing around them is the machine's own
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
    return subprocess_env(PYTHONUNBUFFERED="1")


def _stored_ids(store_path: Path, ids: list[str]) -> set[str]:
    try:
        store = LanceDBStore.open(store_path, embedder=None, create=False)
    except StoreNotFoundError:
        return set()
    present = store.existing_ids(ids)
    assert store.count() == len(present), "the store holds rows that are not the corpus's chunks (or duplicates)"
    return present


@dataclass
class Round:
    """One ingest run killed at a drawn point: after ``reports`` progress lines, plus ``delay`` seconds (or as
    soon as it reports :data:`OVERRUN` more batches, so that no machine is fast enough to finish the corpus)."""

    reports: int
    delay: float
    todo: int = 0
    reported: int = 0
    killed: bool = False
    stored_after: int = 0
    lines: list[str] = field(default_factory=list)


def _run_and_kill(cmd: list[str], plan: Round) -> None:
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    stderr = proc.stderr
    seen, overrun = threading.Event(), threading.Event()
    if plan.reports == 0:
        seen.set()

    def read() -> None:  # every line the process wrote, up to its death (the pipe keeps what was written)
        for line in stderr:
            plan.lines.append(line)
            reports = sum(1 for x in plan.lines if STORED.search(x))
            if reports >= plan.reports:
                seen.set()
            if reports >= plan.reports + OVERRUN:
                overrun.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not seen.wait(0.05):
            assert proc.poll() is None, "ingest exited before the kill point:\n" + "".join(plan.lines[-20:])
        overrun.wait(plan.delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            plan.killed = True
    finally:
        proc.wait(timeout=120)
        reader.join(timeout=60)
    assert not plan.killed or proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(1200)
def test_kill_at_random_points_ten_times_then_resume(tmp_path: Path) -> None:
    require_embedding_model()
    corpus = tmp_path / "generated.jsonl"
    rows = _passages(corpus)
    expected_ids = [chunk_id(r["id"], r["text"]) for r in rows]  # one chunk each, in ingest order
    assert len(set(expected_ids)) == N_PASSAGES
    store_path = tmp_path / "kb"
    rng = random.Random(SEED)
    rounds: list[Round] = []

    for _ in range(ROUNDS):
        # 0 progress lines: a kill during start-up (imports, model load, store creation) or the first batches.
        reports = rng.randint(0, 2)
        plan = Round(reports=reports, delay=rng.uniform(0.5, 12.0) if reports == 0 else rng.uniform(0.0, 0.5))
        before = _stored_ids(store_path, expected_ids)
        todo = [i for i in expected_ids if i not in before]  # what this run will embed, in its order
        plan.todo = len(todo)
        _run_and_kill(_ingest_cmd(corpus, store_path), plan)
        totals = set()
        for line in plan.lines:
            if match := STORED.search(line):
                plan.reported = max(plan.reported, int(match.group(1).replace(",", "")))
                totals.add(int(match.group(2).replace(",", "")))
        assert totals <= {len(todo)}, "the run planned a different set of chunks than the store lacked"
        after = _stored_ids(store_path, expected_ids)
        plan.stored_after = len(after)
        # Nothing reported as stored is lost; what was stored before is still there.
        assert set(todo[: plan.reported]) <= after, f"chunks reported stored were lost: {plan}"
        assert before <= after
        assert len(after) < N_PASSAGES, "the corpus was fully ingested before the last kill: make it larger"
        rounds.append(plan)

    summary = [(r.reports, round(r.delay, 2), r.killed, r.reported, r.stored_after) for r in rounds]
    print("\nrounds (reports awaited, delay s, killed, reported stored, in store after):", summary)
    assert sum(r.killed for r in rounds) == ROUNDS
    assert sum(r.reported > 0 for r in rounds) >= 5, "too few kills came after a reported batch"

    stored_before = rounds[-1].stored_after
    done = subprocess.run(_ingest_cmd(corpus, store_path), cwd=REPO, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        f"ingested 1 file: {N_PASSAGES:,} chunks ({N_PASSAGES - stored_before:,} new, {stored_before:,} already stored)"
        in done.stdout
    ), done.stdout
    store = LanceDBStore.open(store_path, embedder=None, create=False)
    assert store.count() == N_PASSAGES
    assert store.existing_ids(expected_ids) == set(expected_ids)
    stats = store.stats()
    assert stats.documents == N_PASSAGES
    assert stats.text_index.endswith("up to date")
