"""Continual-learning scores from the accuracy matrix (Lopez-Paz and Ranzato 2017; Chaudhry et al. 2018).

a[i][j] is the macro-AUROC on stage j's test records of the model after training stage i (j <= i), over the
classes known at stage j that have both label values among those records (simulator.core.metrics leaves the
others out). With T stages:
- average accuracy after stage i: A_i = mean_{j <= i} a[i][j]; the run's is A_{T-1};
- backward transfer: BWT = mean_{j < T-1} (a[T-1][j] - a[j][j]); negative = the later stages made it worse;
- forgetting: F = mean_{j < T-1} max_{i in [j, T-2]} (a[i][j] - a[T-1][j]); the drop from the best it ever was.
NaN entries (a stage whose test records define no class) are left out of each mean.
"""
from __future__ import annotations

import math

import numpy as np


def _mean(values: list[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return float(np.mean(ok)) if ok else math.nan


def average_accuracy(a: np.ndarray, after: int | None = None) -> float:
    """A_i for i = `after` (default: the last stage)."""
    i = a.shape[0] - 1 if after is None else after
    return _mean([a[i, j] for j in range(i + 1)])


def backward_transfer(a: np.ndarray) -> float:
    T = a.shape[0]
    return _mean([a[T - 1, j] - a[j, j] for j in range(T - 1)])


def forgetting(a: np.ndarray) -> float:
    T = a.shape[0]
    drops = []
    for j in range(T - 1):
        best = [a[i, j] for i in range(j, T - 1) if math.isfinite(a[i, j])]
        if best and math.isfinite(a[T - 1, j]):
            drops.append(max(best) - a[T - 1, j])
    return _mean(drops)


def summary(a: np.ndarray) -> dict[str, float]:
    return {"avg_accuracy": average_accuracy(a), "bwt": backward_transfer(a), "forgetting": forgetting(a)}
