"""PNG figures of an evaluation: accuracy against latency per system, accuracy against the number of drafts."""

from __future__ import annotations

from pathlib import Path

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
    return written
