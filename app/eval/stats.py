"""Summary statistics with uncertainty: percentile bootstrap intervals over questions (paired where compared)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A mean with a 95% percentile-bootstrap interval."""

    mean: float
    low: float
    high: float


def bootstrap_mean(values: Sequence[float], *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> Interval:
    """Mean of ``values`` with the 2.5th and 97.5th percentiles of the bootstrap distribution of the mean.

    Raises:
        ValueError: No values.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(mean=float(x.mean()), low=float(low), high=float(high))


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> Interval:
    """Mean of ``a - b`` over the same questions, with a bootstrap interval that resamples questions (paired).

    Raises:
        ValueError: Different lengths, or no values.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    return bootstrap_mean([x - y for x, y in zip(a, b, strict=True)], seed=seed)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation), NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


class IntervalOut(BaseModel):
    """A mean and its 95% bootstrap interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, i: Interval) -> IntervalOut:
        return cls(mean=i.mean, low=i.low, high=i.high)

    def pct(self) -> str:
        return f"{100 * self.mean:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"

    def signed_pct(self) -> str:
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
