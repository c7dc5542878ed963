"""Test sets with enough positives of every class.

A patient's 100 i.i.d. test records can hold 0-2 positives of a rare class, and one patient's macro-AUROC then
swings by 0.05-0.08 between bootstrap draws. `top_up` picks which test records to redraw, and with which
labels, so that every class has at least `k` positives: each redraw takes a record whose classes all have more
than `k` positives (or a normal one) and gives it a record of the most lacking class instead. The set keeps its
size, every class that already had `k` keeps them, and no record with a lacking class is ever taken."""
from __future__ import annotations

import numpy as np

from simulator.data.synthetic import sample_labels_given
from simulator.errors import MuprivError


def top_up(labels: np.ndarray, k: int, weights: np.ndarray, combo_prob: float,
           rng: np.random.Generator) -> dict[int, np.ndarray]:
    """{row: new multi-hot labels} for the rows of `labels` (n, 6) to redraw so that every class has >= k positives.
    `weights` (7,) over "none" + CLASSES and `combo_prob` draw a redrawn record's second class as the patient's
    other records draw theirs. Needs 6 k <= n (each class's k positives could need a record of its own)."""
    y = (np.asarray(labels) > 0.5).astype(np.float32)
    n, n_classes = y.shape
    if k < 0 or n_classes * k > n:
        raise MuprivError(f"cannot give {n} test records {k} positives of each of {n_classes} classes: "
                          f"need k >= 0 and {n_classes} x k <= {n}")
    new: dict[int, np.ndarray] = {}
    while True:
        counts = y.sum(axis=0)
        lack = k - counts
        if lack.max() <= 0:
            return new
        cls = int(np.argmax(lack))  # the most lacking class (ties: the first in CLASSES)
        spare = counts > k
        free = np.flatnonzero(np.all(spare[None, :] | (y == 0), axis=1))
        # free is never empty with 6 k <= n: every other row holds a class with <= k positives, and those
        # classes hold fewer than 6 k positives in all while one of them lacks some.
        row = int(free[rng.integers(len(free))])
        y[row] = sample_labels_given(np.array([cls]), weights, combo_prob, rng)[0]
        new[row] = y[row].copy()

