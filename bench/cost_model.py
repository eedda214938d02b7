"""Token-work cost model of an evaluation run: what each model read and wrote per question, and the time ratio to
standard RAG it predicts against the one measured.

    .venv/bin/python bench/cost_model.py docs/eval/dev150-reflect [--systems speculative,speculative+reflect]

Reads ``results.jsonl`` of a ``specrag eval`` run (no model runs). Per question and system it takes each model's
prompt and generated tokens and busy seconds (``usage``), and reports:

* tokens read and written per model (means), and parameter·tokens: Σ_models params × (read + written), with the
  drafter's and verifier's parameter counts below;
* **predicted ratio** to ``standard``, two ways: by parameter·tokens (the issue's floor model: every token costs its
  model's parameters), and by per-model rates fitted on the run itself (least squares of each model's busy seconds
  on its prompt and generated tokens: prefill and decode cost differently on a CPU);
* **measured ratio**: the median of per-question latency ratios (the report's "× standard").

A change that removes tokens moves the predicted ratio; the gap between predicted and measured is what the
orchestration, batching and waiting cost on top.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.eval.runner import RESULTS, QuestionRecord, load_records

PARAMS = {"drafter": 0.494e9, "verifier": 1.54e9}
"""Parameters of the default models (Qwen2.5-0.5B: 0.49 B, Qwen2.5-1.5B: 1.54 B, their model cards)."""


def fit_rates(records: Sequence[QuestionRecord], systems: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Per model role, (seconds per prompt token, seconds per generated token) by non-negative least squares."""
    from scipy.optimize import nnls

    rates: dict[str, tuple[float, float]] = {}
    for role in PARAMS:
        rows, secs = [], []
        for r in records:
            for name in systems:
                u = r.systems[name].usage.get(role) if name in r.systems else None
                if u is not None and u.calls:
                    rows.append([u.prompt_tokens, u.generated_tokens])
                    secs.append(u.seconds)
        if rows:
            coef, _ = nnls(np.array(rows, dtype=float), np.array(secs))
            rates[role] = (float(coef[0]), float(coef[1]))
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A specrag eval --out directory (or an exported copy)")
    parser.add_argument("--systems", default="speculative,speculative+reflect", help="Systems compared to standard")
    args = parser.parse_args(argv)
    path = args.run / RESULTS
    if not path.is_file():
        print(f"error: {path} not found: not a specrag eval run", file=sys.stderr)
        return 1
    wanted = [s for s in args.systems.split(",") if s]
    records = [r for r in load_records(path).values() if "standard" in r.systems]
    systems = ["standard", *[s for s in wanted if any(s in r.systems for r in records)]]
    rates = fit_rates(records, systems)
    print(f"{args.run}: {len(records)} questions; fitted rates (ms per prompt token / per generated token): ")
    for role, (p, g) in rates.items():
        print(f"  {role}: {1000 * p:.2f} / {1000 * g:.1f}")
    print()
    print(
        "| system | drafter read / written | verifier read / written | param·tokens (G) | predicted × standard "
        "(param·tokens / fitted rates) | measured × standard |"
    )
    print("|---|---|---|---|---|---|")
    for name in systems:
        rows = [r for r in records if name in r.systems and not r.systems[name].error]
        if not rows:
            continue

        def mean(role: str, field: str, rows: list[QuestionRecord] = rows, name: str = name) -> float:
            return statistics.fmean(
                getattr(r.systems[name].usage[role], field, 0) if role in r.systems[name].usage else 0 for r in rows
            )

        def work(r: QuestionRecord, system: str) -> float:
            u = r.systems[system].usage
            return sum(PARAMS[k] * (v.prompt_tokens + v.generated_tokens) for k, v in u.items() if k in PARAMS)

        def fitted(r: QuestionRecord, system: str) -> float:
            u = r.systems[system].usage
            return sum(
                rates[k][0] * v.prompt_tokens + rates[k][1] * v.generated_tokens for k, v in u.items() if k in rates
            )

        by_work = statistics.median(work(r, name) / work(r, "standard") for r in rows if work(r, "standard"))
        by_rate = statistics.median(fitted(r, name) / fitted(r, "standard") for r in rows if fitted(r, "standard"))
        measured = statistics.median(
            r.systems[name].seconds / r.systems["standard"].seconds for r in rows if r.systems["standard"].seconds
        )
        print(
            f"| {name} | {mean('drafter', 'prompt_tokens'):,.0f} / {mean('drafter', 'generated_tokens'):,.0f} "
            f"| {mean('verifier', 'prompt_tokens'):,.0f} / {mean('verifier', 'generated_tokens'):,.0f} "
            f"| {statistics.fmean(work(r, name) for r in rows) / 1e9:,.0f} | {by_work:.2f} / {by_rate:.2f} "
            f"| {measured:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
