"""`specrag trace` and `specrag traces` on stored traces (recorded with fakes; no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from app.ask import run
from app.cli import app
from app.cli_errors import cli_errors
from app.trace.model import new_run_id
from app.trace.store import SQLiteTraceStore
from graphs.context import Context
from tests.unit.test_graph import make
from tests.unit.test_trace import QUESTION, failing_verifier_backends

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traces.sqlite"


@pytest.fixture
def ok_run(db: Path) -> str:
    backends, _, _ = make(lambda c: (-2.0, 0.5), rewrite="Paris France capital")
    result = run(
        QUESTION,
        Context(n_drafts=5, max_rounds=2, seed=3, top_n=5, retry_on="low_confidence", fallback=False),
        traces=SQLiteTraceStore(db),
        provider=lambda ctx: backends,
    )
    assert result.run_id
    return result.run_id


@pytest.fixture
def failed_run(db: Path) -> str:
    broken = failing_verifier_backends()
    run_id = new_run_id()
    with pytest.raises(RuntimeError):
        run(QUESTION, Context(n_drafts=5), traces=SQLiteTraceStore(db), run_id=run_id, provider=lambda ctx: broken)
    return run_id


def _one_line_error(result: Result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.output


def test_trace_renders_steps_passages_drafts_and_decisions(db: Path, ok_run: str) -> None:
    done = runner.invoke(app, ["trace", ok_run, "--traces", str(db)])
    assert done.exit_code == 0, done.output
    out = done.stdout
    for part in (
        f"Run {ok_run}",
        QUESTION,
        "speculative_rag",
        "status ok",
        "Steps",
        "retrieve",
        "partition",
        "verify",
        "reflect",
        "Round 1: retrieved for",
        "Round 2: retrieved for “Paris France capital”",
        "subset 1:",
        "(cluster ",
        "Round 1: drafts",
        "ρ_draft",
        "ρ_sc",
        "ρ_sr",
        "P(Yes)",
        "rank",
        "★",
        "Round 1 reflection: retry",
        'Rewritten query: "Paris France capital"',
        "Round 2 reflection: accept",
    ):
        assert part in out, part
    assert out.count("│ draft ") == 10


def test_trace_json_is_the_stored_document(db: Path, ok_run: str) -> None:
    done = runner.invoke(app, ["trace", ok_run, "--traces", str(db), "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["run_id"] == ok_run and doc["status"] == "ok" and doc["result"]["run_id"] == ok_run
    assert doc == json.loads(SQLiteTraceStore(db).get(ok_run).model_dump_json())
    verify = [s for s in doc["steps"] if s["node"] == "verify"]
    assert len(verify) == 2 and all(len(s["writes"]["scores"]) == 5 for s in verify)


def test_failed_run_renders_up_to_the_failing_node(db: Path, failed_run: str) -> None:
    done = runner.invoke(app, ["trace", failed_run, "--traces", str(db)])
    assert done.exit_code == 0, done.output
    assert "status error" in done.stdout
    assert "Failed: verify: RuntimeError: verifier backend down" in done.stdout
    assert "answer" not in [line.split("│")[2].strip() for line in done.stdout.splitlines() if line.count("│") > 3]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x" * 33, "abc"])
def test_malformed_run_id_is_one_line_error(db: Path, ok_run: str, bad: str) -> None:
    _one_line_error(runner.invoke(app, ["trace", bad, "--traces", str(db)]), "invalid run id")


def test_unknown_run_id_is_one_line_error(db: Path, ok_run: str) -> None:
    _one_line_error(runner.invoke(app, ["trace", new_run_id(), "--traces", str(db)]), "no trace for run")


def test_missing_database_is_one_line_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    _one_line_error(runner.invoke(app, ["trace", new_run_id(), "--traces", str(missing)]), "no trace database")
    assert not missing.exists()


def test_traces_lists_recent_runs(db: Path, ok_run: str, failed_run: str) -> None:
    done = runner.invoke(app, ["traces", "--traces", str(db)])
    assert done.exit_code == 0, done.output
    assert ok_run in done.stdout and failed_run in done.stdout and "error" in done.stdout
    as_json = json.loads(runner.invoke(app, ["traces", "--traces", str(db), "--json", "--limit", "1"]).stdout)
    assert [t["run_id"] for t in as_json] == [failed_run]
    none = runner.invoke(app, ["traces", "--traces", str(db), "--thread", "nope"])
    assert none.exit_code == 0 and "no traces" in none.stdout


def test_help_explains_trace_commands() -> None:
    done = runner.invoke(app, ["trace", "--help"])
    assert done.exit_code == 0 and "run id" in done.stdout.lower() and "--traces" in done.stdout
    assert runner.invoke(app, ["traces", "--help"]).exit_code == 0


def test_error_line_carries_the_run_id_note() -> None:
    cmd = typer.Typer()

    @cmd.command()
    @cli_errors
    def fails() -> None:
        exc = ValueError("backend down")
        exc.add_note("run id: abc (specrag trace abc)")
        raise exc

    _one_line_error(runner.invoke(cmd, []), "error: backend down [run id: abc (specrag trace abc)]")


def test_trace_shows_the_confidence_and_the_fallback(db: Path) -> None:
    backends, _, _ = make(lambda c: (-2.0, 0.5))
    result = run(
        QUESTION, Context(n_drafts=5, max_rounds=1, top_n=5), traces=SQLiteTraceStore(db), provider=lambda c: backends
    )
    assert result.run_id and result.decision == "fallback"
    done = runner.invoke(app, ["trace", result.run_id, "--traces", str(db)])
    assert done.exit_code == 0, done.output
    assert "reflection: fallback" in done.stdout and "Confidence 0.000 (scripted-p-yes) from agreement" in done.stdout
    steps = [line for line in done.stdout.splitlines() if "│ fallback" in line]
    assert steps, "the steps table lists the fallback node"
