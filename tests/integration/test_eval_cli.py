"""`specrag eval` end to end on real models (SmolLM2-135M as drafter and verifier: plumbing, not quality) and the
shared dev questions: every system runs, the report is written, and an interrupted run resumes without redoing
finished questions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.confidence.features import answer_key
from app.eval.diagnostics import ABLATIONS
from app.eval.systems import SYSTEMS, DraftRecord, draft_signal
from tests.conftest import REPO
from tests.environment import subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.devdata]

MODEL = "smollm2-135m-instruct"
ARGS = ["--limit", "3", "--top-n", "4", "--drafts", "3", "-q"]


def _env(tmp: Path) -> dict[str, str]:
    return subprocess_env(
        {
            "SPECRAG_DRAFTER__MODEL": MODEL,
            "SPECRAG_VERIFIER__MODEL": MODEL,
            "SPECRAG_TRACES__PATH": str(tmp / "traces.sqlite"),
        }
    )


def _ids(out: Path) -> list[str]:
    path = out / "results.jsonl"
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.exists() else []


def test_eval_runs_every_system_and_resumes_after_an_interrupt(
    dev_dir: Path, tmp_path: Path, packaged_model: Callable[[str], Path]
) -> None:
    packaged_model(MODEL)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "app.cli", "eval", str(dev_dir / "questions.jsonl"), "--out", str(out), *ARGS]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (``make test &``, some CI runners) ignores SIGINT, and a child
        # inherits that: Python then never raises KeyboardInterrupt. Ctrl-C's default is what is under test.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # SIGINT as soon as the first question's results are written: every question runs every system, so the next
    # one cannot also finish within one poll; the interrupt must land mid-run, or nothing below tests a resume.
    deadline = time.monotonic() + 900
    while len(_ids(out)) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.communicate()[1][-3000:]
    assert _ids(out), "no question finished within 900 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    done_before = _ids(out)
    assert proc.returncode == 130, f"the interrupt did not land mid-run (exit {proc.returncode}):\n{err[-3000:]}"
    assert "interrupted" in err and "Traceback" not in err
    assert 1 <= len(done_before) < 3, done_before

    resumed = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already done" in resumed.stderr
    ids = _ids(out)
    assert ids[: len(done_before)] == done_before and sorted(ids) == sorted(set(ids)) and len(ids) == 3
    assert {i.split("-")[0] for i in ids} == {"popqa", "arcc", "hotpot"}  # round-robin across tasks

    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 3 and [s["system"] for s in summary["systems"]] == list(SYSTEMS)
    for s in summary["systems"]:
        assert 0.0 <= s["accuracy"]["low"] <= s["accuracy"]["mean"] <= s["accuracy"]["high"] <= 1.0
        assert s["errors"] == 0 and s["latency_p50"] > 0
    for record in map(json.loads, (out / "results.jsonl").read_text().splitlines()):
        spec = record["systems"]["speculative"]
        assert len(spec["drafts"]) == 3 and spec["run_id"]
        drafts_ = [DraftRecord.model_validate(d) for d in spec["drafts"]]
        answering = [d for d in drafts_ if d.outcome != "abstain"]
        if answering and all(d.total is None for d in answering):
            # the paper's graph leaves a round unverified only when its answering drafts all give one answer
            assert len({answer_key(draft_signal(d)) for d in answering}) == 1
            assert all(d.self_reflection is None and d.draft is not None for d in answering)
        else:
            assert all(d.self_reflection is not None and d.self_reflection <= 0 for d in drafts_)
    drafts = {d["system"]: d for d in summary["drafts"]}  # every draft scored, also on the resumed questions
    drafting = {
        "speculative",
        "speculative-base",
        "speculative-verifier-drafts",
        "random-subsets",
        "speculative+compress",
    }
    assert set(drafts) == drafting  # the systems that run the speculative graph
    assert all(d["questions"] == 3 and d["oracle"]["mean"] >= d["selected"]["mean"] for d in drafts.values())
    assert [a["system"] for a in summary["ablations"]] == list(ABLATIONS)
    assert "| speculative |" in resumed.stdout  # the report is printed
    assert "## Drafts" in resumed.stdout and "## Ablations against speculative" in resumed.stdout
    for name in ("report.md", "accuracy_vs_latency.png", "accuracy_vs_drafts.png"):
        assert (out / name).stat().st_size > 0
