"""PNG figures of an evaluation: accuracy against latency per system, accuracy against the number of drafts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.eval.report import Summary
from app.eval.systems import GENERATING


def write_plots(summary: Summary, out: Path) -> list[Path]:
    """Write ``accuracy_vs_latency.png`` and (when there are drafts) ``accuracy_vs_drafts.png`` into ``out``.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for x in summary.systems:
        acc = 100 * x.accuracy.mean
        err = [[acc - 100 * x.accuracy.low], [100 * x.accuracy.high - acc]]
        generating = x.system in GENERATING
        ax.errorbar(
            x.latency_p50, acc, yerr=err, fmt="o" if generating else "s", capsize=3, alpha=0.9 if generating else 0.6
        )
        ax.annotate(x.system, (x.latency_p50, acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("latency per question, median (s)")
    ax.set_ylabel("accuracy (%) with 95% bootstrap interval")
    ax.set_title(f"Accuracy vs latency ({summary.questions} questions)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "accuracy_vs_latency.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    if summary.curves:
        fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
        for name, curve in summary.curves.items():
            ax.plot(range(1, len(curve) + 1), [100 * c for c in curve], marker="o", label=name)
        base = next((x for x in summary.systems if x.system == "standard"), None)
        if base is not None:
            ax.axhline(100 * base.accuracy.mean, linestyle="--", color="grey", label="standard")
        ax.set_xlabel("number of drafts (m)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs number of drafts (same scored drafts)")
        ax.set_xticks(range(1, max(len(c) for c in summary.curves.values()) + 1))
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "accuracy_vs_drafts.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if summary.calibration is not None:
        written += _calibration_plots(summary, out, plt)
    return written


def _calibration_plots(summary: Summary, out: Path, plt: Any) -> list[Path]:
    """``reliability.png`` (accuracy against confidence per bin) and ``fallback_curve.png`` (accuracy against mean
    latency over the fallback threshold, with speculative and standard)."""
    c = summary.calibration
    assert c is not None
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    bins = [b for b in c.overall.bins if b.count]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.bar(
        [(b.low + b.high) / 2 for b in bins],
        [b.accuracy for b in bins],
        width=[0.9 * (b.high - b.low) for b in bins],
        alpha=0.6,
        label="accuracy in the bin",
    )
    ax.plot([b.mean_confidence for b in bins], [b.accuracy for b in bins], "o-", color="black", label="mean confidence")
    for b in bins:
        ax.annotate(str(b.count), ((b.low + b.high) / 2, (b.accuracy or 0) + 0.02), ha="center", fontsize=7)
    auroc = "n/a" if c.overall.auroc is None else f"{c.overall.auroc:.3f}"
    ax.set_title(f"{c.model}: ECE {c.overall.ece:.3f}, AUROC {auroc} ({c.overall.n} q)", fontsize=9)
    ax.set_xlabel("confidence of the selected draft")
    ax.set_ylabel("accuracy (questions per bin annotated)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    reliability = out / "reliability.png"
    fig.savefig(reliability)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.plot([p.mean_seconds for p in c.curve], [100 * p.accuracy for p in c.curve], "o-", label="accept if conf ≥ t")
    for p in c.curve[::2]:
        label = "all" if p.threshold > 1 else f"{p.threshold:.1f}"
        ax.annotate(label, (p.mean_seconds, 100 * p.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7)
    d = c.at_default
    ax.plot([d.mean_seconds], [100 * d.accuracy], "r*", markersize=14, label=f"default t = {c.accept_confidence:.2f}")
    ax.plot([c.speculative_mean_seconds], [100 * c.speculative_accuracy], "s", label="speculative")
    ax.plot([c.standard_mean_seconds], [100 * c.standard_accuracy], "D", label="standard")
    ax.set_xlabel("mean seconds per question")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Fallback threshold: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    curve = out / "fallback_curve.png"
    fig.savefig(curve)
    plt.close(fig)
    return [reliability, curve]
