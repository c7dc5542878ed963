"""Multi-label classification metrics: per-class precision/recall/F1 at p >= 0.5, AUROC, macro means, forgetting.

Conventions (the rest of mupriv relies on them):
- `known[i, c] == False` drops record i from class c's metrics entirely (the source does not label that class).
- Threshold: a record is predicted positive when p >= 0.5, i.e. logit >= 0 (thresholded on the logit itself, so
  no rounding in the sigmoid can flip a decision).
- AUROC is computed on the raw scores (logits or probabilities alike; sigmoid is monotone), which avoids ties that
  a saturated float sigmoid would introduce. Ties count 1/2, as in sklearn's roc_auc_score.
- AUROC is NaN when a class has only one label value among its known entries.
- Precision/recall/F1 follow sklearn's zero_division=0 (no predicted positives -> precision 0; no true positives ->
  recall 0), EXCEPT when a class has no known positives and no predicted positives (tp = fp = fn = 0): then there
  is nothing to find and nothing was flagged, a score of 0 would punish a correct model, so all three are NaN.
- Every NaN metric is left out of its macro mean and reported with an UndefinedMetricWarning naming the classes;
  a macro mean over no defined class is NaN.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from simulator.core.labels import CLASSES

_METRICS = ("precision", "recall", "f1", "auroc")


class UndefinedMetricWarning(UserWarning):
    """A per-class metric is undefined (NaN) on this data and is left out of the macro mean."""


@dataclass(frozen=True)
class ClassificationMetrics:
    """Per-class dicts map class name -> value (NaN where undefined); `support` = known positives, `n_known` = known records."""

    class_names: tuple[str, ...]
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    auroc: dict[str, float]
    support: dict[str, int]
    n_known: dict[str, int]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_auroc: float
    n: int

    def to_dict(self) -> dict[str, float]:
        """Flat mapping for result tables: n, macro_*, then "<metric>/<class>" and "support/<class>"; NaN kept."""
        out: dict[str, float] = {"n": self.n}
        out.update({f"macro_{m}": getattr(self, f"macro_{m}") for m in _METRICS})
        for m in _METRICS:
            out.update({f"{m}/{c}": getattr(self, m)[c] for c in self.class_names})
        out.update({f"support/{c}": self.support[c] for c in self.class_names})
        return out


def json_safe(obj: Any) -> Any:
    """Recursively turn NaN/inf floats into None and numpy scalars into Python ones, so json.dumps emits valid JSON."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _as_numpy(a: Any, dtype: type) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _macro(values: np.ndarray) -> float:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")  # avoids nanmean's empty-slice RuntimeWarning


def _auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg) with average ranks for ties == sklearn roc_auc_score."""
    n_pos = int(targets.sum())
    n_neg = targets.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    u = ranks[targets].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def compute_metrics(
    scores: Any,
    targets: Any,
    known: Any | None = None,
    logits: bool = True,
    class_names: Sequence[str] = CLASSES,
) -> ClassificationMetrics:
    """Metrics of (n, C) scores (logits if `logits`, else probabilities) against (n, C) {0,1} targets, numpy or torch."""
    s = _as_numpy(scores, np.float64)
    y_raw = _as_numpy(targets, np.float64)
    k = np.ones(s.shape, dtype=bool) if known is None else _as_numpy(known, bool)
    names = tuple(class_names)
    if s.ndim != 2 or y_raw.shape != s.shape or k.shape != s.shape or s.shape[1] != len(names):
        raise ValueError(
            f"scores {s.shape}, targets {y_raw.shape} and known {k.shape} must all be (n, {len(names)}) for classes {names}"
        )
    # Unknown entries may hold anything (e.g. NaN placeholders); only known ones are validated and used.
    if np.isnan(s[k]).any():
        raise ValueError("scores contain NaN at known entries")
    if not np.isin(y_raw[k], (0.0, 1.0)).all():
        raise ValueError("targets must be 0 or 1 at known entries")
    if not logits and ((s[k] < 0) | (s[k] > 1)).any():
        raise ValueError("probabilities outside [0, 1]; pass logits=True if these are logits")
    y = (y_raw == 1.0) & k
    pred = (s >= (0.0 if logits else 0.5)) & k

    # Counts over known entries only, all classes at once.
    tp = (pred & y).sum(0).astype(np.float64)
    fp = (pred & ~y).sum(0).astype(np.float64)
    fn = (~pred & y).sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    undefined_prf = (tp + fp + fn) == 0
    for arr in (precision, recall, f1):
        arr[undefined_prf] = np.nan

    auroc = np.array([_auroc(s[k[:, c], c], y[k[:, c], c]) for c in range(len(names))])

    n_known = k.sum(0)
    if undefined_prf.any():
        bad = [names[c] for c in np.flatnonzero(undefined_prf)]
        warnings.warn(
            f"precision/recall/F1 undefined (no known positives and none predicted) for class(es) {', '.join(bad)}; "
            "set to NaN and left out of the macro means",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    if np.isnan(auroc).any():
        bad = [f"{names[c]} ({int(y[:, c].sum())} pos / {int(n_known[c])} known)" for c in np.flatnonzero(np.isnan(auroc))]
        warnings.warn(
            f"AUROC undefined (only one label value among known records) for class(es) {', '.join(bad)}; "
            "set to NaN and left out of macro_auroc",
            UndefinedMetricWarning,
            stacklevel=2,
        )

    def per_class(values: np.ndarray, cast: type = float) -> dict:
        return {c: cast(v) for c, v in zip(names, values)}

    return ClassificationMetrics(
        class_names=names,
        precision=per_class(precision),
        recall=per_class(recall),
        f1=per_class(f1),
        auroc=per_class(auroc),
        support=per_class(y.sum(0), int),
        n_known=per_class(n_known, int),
        macro_precision=_macro(precision),
        macro_recall=_macro(recall),
        macro_f1=_macro(f1),
        macro_auroc=_macro(auroc),
        n=int(s.shape[0]),
    )


def forgetting(before: ClassificationMetrics, after: ClassificationMetrics, metric: str = "macro_auroc") -> float:
    """Drop of a source-task metric after fine-tuning: before - after (positive = forgot). `metric` is any to_dict key."""
    b, a = before.to_dict(), after.to_dict()
    if metric not in b or metric not in a:
        raise KeyError(f"unknown metric {metric!r}; choose one of {sorted(b)}")
    return float(b[metric] - a[metric])
