"""Intervals for the numbers the book reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["Interval", "bootstrap_ci"]


@dataclass(frozen=True)
class Interval:
    """A statistic with its confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(
    values,
    statistic: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, Ch. 13) of ``statistic``.

    Args:
        values: 1-D sample (tensor, list or array); resampled with replacement.
        statistic: reduces a 1-D tensor to a scalar (default: the mean).
        level: coverage of the interval.
        resamples: bootstrap replicates.
        seed: the resampling's randomness.

    Raises:
        ValueError: empty sample or a level outside (0, 1).
    """
    if isinstance(values, torch.Tensor):
        sample = values.detach().to("cpu", torch.float64).flatten()
    else:  # a copy: pandas hands out read-only arrays, which torch.as_tensor warns about
        sample = torch.tensor(np.asarray(values, dtype=np.float64)).flatten()
    if sample.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, sample.numel(), (resamples, sample.numel()), generator=generator)
    replicates = torch.stack([statistic(row) for row in sample[index]]) if statistic is not torch.mean else sample[index].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(replicates, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Interval(float(statistic(sample)), low, high, sample.numel())
