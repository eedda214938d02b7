"""`specrag ask` end to end on the default drafter and verifier, against the shared HotpotQA dev corpus."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphs.context import ACCEPT_CONFIDENCE
from tests.conftest import REPO
from tests.environment import subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.devdata]

SPECRAG = [sys.executable, "-m", "app.cli"]
# A bridge question whose two supporting paragraphs are in the corpus (read from the shared data, by id).
QUESTION_ID = "hotpot-5a7180205542994082a3e856"


TRACES: dict[str, Path] = {}


def specrag(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = subprocess_env({"SPECRAG_TRACES__PATH": str(TRACES["path"])})
    return subprocess.run([*SPECRAG, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module", autouse=True)
def traces_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Runs of this module keep their traces in a temporary database, not in the repo's .specrag/."""
    TRACES["path"] = tmp_path_factory.mktemp("traces") / "traces.sqlite"
    yield TRACES["path"]
    TRACES.clear()


@pytest.fixture(scope="module")
def hotpot_store(dev_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("hotpot") / "store"
    done = specrag("ingest", str(dev_dir / "hotpotqa_reflexion100_corpus.jsonl"), "--store", str(store))
    assert done.returncode == 0, done.stderr
    return store


@pytest.fixture(scope="module")
def question(dev_dir: Path) -> dict:
    with open(dev_dir / "questions.jsonl", encoding="utf-8") as f:
        return next(q for q in map(json.loads, f) if q["id"] == QUESTION_ID)


def test_ask_json_returns_five_drafts_verifies_the_answers_and_picks_the_highest_total(
    hotpot_store: Path, question: dict
) -> None:
    # the paper's graph (no fallback): the highest-total draft is the answer
    done = specrag(
        "ask",
        question["question"],
        "--store",
        str(hotpot_store),
        "--json",
        "--max-rounds",
        "1",
        "--no-fallback",
        "--drafts",
        "5",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["drafts"]) == 5
    totals: dict[int, float] = {}
    for i, d in enumerate(out["drafts"]):
        assert d["outcome"] in ("answer", "abstain", "unparsed") and len(d["passage_ids"]) == 2
        assert d["tokens"]["draft"] > 0
        if d["outcome"] == "abstain":  # not verified
            assert d["scores"] is None and d["answer"] == "unknown"
            continue
        s = d["scores"]
        for key in ("draft", "self_consistency", "self_reflection", "total"):
            assert s[key] is not None and math.isfinite(s[key]), (key, s)
        assert s["draft"] < 0 and s["self_consistency"] < 0 and s["self_reflection"] <= 0
        assert s["total"] == pytest.approx(s["draft"] + s["self_consistency"] + s["self_reflection"], abs=1e-6)
        assert d["tokens"]["self_consistency"] > 0
        totals[i] = s["total"]
    # Both supporting paragraphs are in the corpus: the shipped drafter answers from at least one subset.
    assert totals, [d["answer"] for d in out["drafts"]]
    assert out["chosen"] == max(totals, key=lambda i: (totals[i], -i))
    assert out["answer"] == out["drafts"][out["chosen"]]["answer"]
    assert [s["id"] for s in out["sources"]] == out["drafts"][out["chosen"]]["passage_ids"]
    assert len(out["rounds"]) == 1 and out["rounds"][0]["decision"] == "accept" and out["rounds"][0]["reason"]
    assert len(out["rounds"][0]["passage_ids"]) == 10
    assert set(out["timings"]) == {"retrieve", "partition", "draft", "verify", "reflect", "answer"}
    # Five distinct subsets of two passages that together cover all ten (m·k = n).
    r = out["rounds"][0]
    assert len({tuple(s) for s in r["subsets"]}) == 5
    assert all(len(set(s)) == 2 for s in r["subsets"])
    assert {pid for s in r["subsets"] for pid in s} == set(r["passage_ids"])
    # The run left a trace with the same drafts and scores.
    assert len(out["run_id"]) == 32
    shown = specrag("trace", out["run_id"], "--json", timeout=120)
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    assert trace["status"] == "ok" and trace["result"] == out
    steps = trace["steps"]
    assert [st["node"] for st in steps] == ["retrieve", "partition", *["draft"] * 5, "verify", "reflect", "answer"]
    assert [st["writes"]["draft"]["answer"] for st in steps if st["node"] == "draft"] == [
        d["answer"] for d in out["drafts"]
    ]
    scores = {sc["index"]: sc for sc in steps[7]["writes"]["scores"]}
    assert set(scores) == set(totals)  # the verifier scored the answers, not the abstentions
    for i in totals:
        assert scores[i]["total"] == pytest.approx(out["drafts"][i]["scores"]["total"])
        assert scores[i]["p_yes"] == pytest.approx(out["drafts"][i]["scores"]["p_yes"])


def test_ask_default_rounds_records_every_decision(hotpot_store: Path, question: dict) -> None:
    done = specrag("ask", question["question"], "--store", str(hotpot_store), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert 1 <= len(out["rounds"]) <= 2
    assert len(out["drafts"]) == 3 * len(out["rounds"])  # the default m
    for r in out["rounds"][:-1]:
        assert r["decision"] == "retry" and r["rewritten_query"]
        # a retry must search differently (the verifier once echoed the question back verbatim)
        assert r["rewritten_query"].strip().lower() != r["query"].strip().lower()
        # the default retries only when no draft answered (retry_on='no_answer')
        assert all(d["outcome"] == "abstain" for d in out["drafts"] if d["round"] == r["index"])
    last = out["rounds"][-1]
    assert last["decision"] in ("accept", "fallback") and out["decision"] == last["decision"]
    conf = out["confidence"]
    assert conf == last["confidence"] and 0.0 <= conf["value"] <= 1.0 and conf["model"].startswith("specrag-confidence")
    if last["decision"] == "accept":  # the calibrated confidence reached the default threshold
        assert conf["value"] >= ACCEPT_CONFIDENCE and out["chosen"] == conf["draft"] and out["answer"]
    else:  # below the threshold (or no draft answered): the verifier answered from all passages
        assert (
            conf["value"] < ACCEPT_CONFIDENCE
            and out["chosen"] is None
            and out["answer"]
            and "all passages" in last["reason"]
        )
    seen = [pid for r in out["rounds"] for pid in r["passage_ids"]]
    assert len(seen) == len(set(seen)), "a retry must retrieve new passages only"


def test_standard_graph_answers_from_all_passages(hotpot_store: Path, question: dict) -> None:
    done = specrag("ask", question["question"], "--store", str(hotpot_store), "--json", "--graph", "standard")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["graph"] == "standard_rag" and out["answer"] and out["drafts"] == []
    assert len(out["sources"]) == 10


def test_human_output_has_answer_sources_and_drafts_table(hotpot_store: Path, question: dict) -> None:
    done = specrag("ask", question["question"], "--store", str(hotpot_store), "--max-rounds", "1")
    assert done.returncode == 0, done.stderr
    for part in ("Answer", "Sources:", "Drafts", "ρ_sc", "Round 1"):
        assert part in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   "], "question is empty"),
        (["ask", ""], "question is empty"),
        (["ask", "What?", "--store", "/nonexistent/specrag-store"], "no store"),
        (["ask", "word " * 6000], "too long"),
        (["ask", "What?", "--drafts", "0"], "drafts"),
    ],
)
def test_bad_input_gives_one_line_error(args: list[str], message: str, hotpot_store: Path) -> None:
    if "--store" not in args:
        args = [*args, "--store", str(hotpot_store)]
    done = specrag(*args, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert message in lines[0].lower()
    assert not Path("/nonexistent/specrag-store").exists()
