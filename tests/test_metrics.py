import json
import math
import time
import warnings

import numpy as np
import pytest
import torch

from simulator.core.labels import CLASSES
from simulator.core.metrics import (
    ClassificationMetrics,
    UndefinedMetricWarning,
    compute_metrics,
    forgetting,
    json_safe,
)


def brute_auroc(s: np.ndarray, y: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), over all pos/neg pairs."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def random_data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.float32)
    # Coarse rounding makes plenty of ties.
    s = np.round(rng.normal(size=y.shape) + y, 1).astype(np.float32)
    return s, y


def quiet(*args, **kwargs) -> ClassificationMetrics:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # well-posed inputs must not warn
        return compute_metrics(*args, **kwargs)


def test_auroc_matches_brute_force_with_ties():
    s, y = random_data()
    m = quiet(s, y)
    for c, name in enumerate(CLASSES):
        assert m.auroc[name] == pytest.approx(brute_auroc(s[:, c], y[:, c]), abs=1e-12)
    assert m.macro_auroc == pytest.approx(np.mean([m.auroc[c] for c in CLASSES]))


def test_auroc_known_values():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)[:, None]
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])[:, None]
    one = ("X",)
    assert quiet(s, y, logits=False, class_names=one).auroc["X"] == 1.0
    assert quiet(1 - s, y, logits=False, class_names=one).auroc["X"] == 0.0
    assert quiet(np.full_like(s, 0.4), y, logits=False, class_names=one).auroc["X"] == 0.5


def test_auroc_not_tied_by_saturated_sigmoid():
    # sigmoid(40) == sigmoid(50) == 1.0 in float64; ranking the logits keeps them apart.
    y = np.array([[0], [1]], dtype=float)
    s = np.array([[40.0], [50.0]])
    assert quiet(s, y, logits=True, class_names=("X",)).auroc["X"] == 1.0


def test_precision_recall_f1_hand_computed():
    # Class A: y=[1,1,0,0,1], p=[.9,.4,.6,.1,.5] -> pred=[1,0,1,0,1]: tp=2 fp=1 fn=1 -> P=R=F1=2/3
    # Class B: y=[1,0,0,1,1], p=[.9,.8,.7,.2,.95] -> pred=[1,1,1,0,1]: tp=2 fp=2 fn=1 -> P=1/2 R=2/3 F1=4/7
    y = np.array([[1, 1], [1, 0], [0, 0], [0, 1], [1, 1]], dtype=float)
    p = np.array([[0.9, 0.9], [0.4, 0.8], [0.6, 0.7], [0.1, 0.2], [0.5, 0.95]])
    m = quiet(p, y, logits=False, class_names=("A", "B"))
    assert m.precision == pytest.approx({"A": 2 / 3, "B": 1 / 2})
    assert m.recall == pytest.approx({"A": 2 / 3, "B": 2 / 3})
    assert m.f1 == pytest.approx({"A": 2 / 3, "B": 4 / 7})
    assert m.macro_f1 == pytest.approx((2 / 3 + 4 / 7) / 2)
    assert m.macro_precision == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m.support == {"A": 3, "B": 3} and m.n == 5
    # Same decisions from logits: p >= 0.5 <=> logit >= 0.
    logit = np.log(p / (1 - p))
    assert quiet(logit, y, logits=True, class_names=("A", "B")).f1 == pytest.approx(m.f1)


def test_zero_division_is_zero_when_defined():
    # A: positives but nothing predicted -> P=0 (zero_division), R=0, F1=0.
    # B: no positives but false alarms -> P=0, R=0 (zero_division), F1=0. Both stay in the macro.
    y = np.array([[1, 0], [0, 0]], dtype=float)
    p = np.array([[0.1, 0.9], [0.2, 0.1]])
    with pytest.warns(UndefinedMetricWarning, match="AUROC.*B"):
        m = compute_metrics(p, y, logits=False, class_names=("A", "B"))
    assert m.precision == {"A": 0.0, "B": 0.0} and m.recall == {"A": 0.0, "B": 0.0} and m.f1 == {"A": 0.0, "B": 0.0}
    assert m.macro_f1 == 0.0


def test_undefined_class_is_nan_excluded_and_warned():
    s, y = random_data()
    y[:, CLASSES.index("AF")] = 0  # no AF at all
    s[:, CLASSES.index("AF")] = -5.0  # and none predicted -> F1 undefined too
    with pytest.warns(UndefinedMetricWarning, match="AF") as rec:
        m = compute_metrics(s, y)
    assert any("AUROC" in str(w.message) for w in rec) and any("F1" in str(w.message) for w in rec)
    assert math.isnan(m.auroc["AF"]) and math.isnan(m.f1["AF"])
    assert math.isnan(m.precision["AF"]) and math.isnan(m.recall["AF"])
    others = [c for c in CLASSES if c != "AF"]
    assert m.macro_auroc == pytest.approx(np.mean([m.auroc[c] for c in others]))
    assert m.macro_f1 == pytest.approx(np.mean([m.f1[c] for c in others]))
    d = m.to_dict()
    assert math.isnan(d["auroc/AF"]) and not math.isnan(d["macro_auroc"])


def test_all_classes_undefined_gives_nan_macro_without_runtime_warning():
    y = np.zeros((4, 2))
    with pytest.warns(UndefinedMetricWarning):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            m = compute_metrics(np.full((4, 2), -1.0), y, class_names=("A", "B"))
    assert math.isnan(m.macro_auroc) and math.isnan(m.macro_f1)


def test_known_mask_equals_filtered_rows():
    s, y = random_data(400, seed=1)
    rng = np.random.default_rng(2)
    known = rng.random(y.shape) < 0.7
    y_noisy = y.copy()
    y_noisy[~known] = np.nan  # unknown labels may be placeholders; they must not matter
    s_noisy = s.copy()
    s_noisy[~known] = np.nan
    m = quiet(s_noisy, y_noisy, known=known)
    for c, name in enumerate(CLASSES):
        rows = known[:, c]
        ref = quiet(s[rows, c : c + 1], y[rows, c : c + 1], class_names=(name,))
        for metric in ("precision", "recall", "f1", "auroc"):
            assert getattr(m, metric)[name] == pytest.approx(getattr(ref, metric)[name], abs=1e-12)
        assert m.n_known[name] == int(rows.sum())
    assert m.n == 400


def test_forgetting_sign_convention():
    s, y = random_data()
    good = quiet(s, y)
    worse = quiet(s + np.random.default_rng(3).normal(scale=3.0, size=s.shape), y)
    assert worse.macro_auroc < good.macro_auroc
    assert forgetting(good, worse) == pytest.approx(good.macro_auroc - worse.macro_auroc)
    assert forgetting(good, worse) > 0  # forgot
    assert forgetting(worse, good) < 0  # improved
    assert forgetting(good, good) == 0.0
    assert forgetting(good, worse, "auroc/AF") == pytest.approx(good.auroc["AF"] - worse.auroc["AF"])
    with pytest.raises(KeyError):
        forgetting(good, worse, "accuracy")


def test_torch_and_numpy_agree():
    s, y = random_data()
    known = np.random.default_rng(4).random(y.shape) < 0.8
    a = quiet(s, y, known=known)
    b = quiet(torch.from_numpy(s), torch.from_numpy(y), known=torch.from_numpy(known))
    assert a == b  # exact: same float32 values, same float64 arithmetic
    g = torch.from_numpy(s).requires_grad_(True)  # model outputs straight from a forward pass
    assert quiet(g, torch.from_numpy(y), known=torch.from_numpy(known)) == a


def test_to_dict_and_json_safe():
    s, y = random_data()
    y[:, 0] = 1
    with pytest.warns(UndefinedMetricWarning):
        m = compute_metrics(s, y)
    d = m.to_dict()
    expected = {"n", "macro_precision", "macro_recall", "macro_f1", "macro_auroc"}
    expected |= {f"{k}/{c}" for k in ("precision", "recall", "f1", "auroc", "support") for c in CLASSES}
    assert set(d) == expected
    out = json.loads(json.dumps(json_safe(d), allow_nan=False))
    assert out[f"auroc/{CLASSES[0]}"] is None and out["macro_f1"] == pytest.approx(m.macro_f1)
    assert json_safe({"a": [np.float32(1.5), float("inf")]}) == {"a": [1.5, None]}


def test_input_validation():
    s, y = random_data(10)
    with pytest.raises(ValueError, match="must all be"):
        compute_metrics(s[:, :5], y)
    with pytest.raises(ValueError, match="0 or 1"):
        compute_metrics(s, y * 2 + 0.5)
    with pytest.raises(ValueError, match="logits=True"):
        compute_metrics(s, y, logits=False)


def test_fast_at_100k():
    rng = np.random.default_rng(5)
    y = (rng.random((100_000, len(CLASSES))) < 0.1).astype(np.float32)
    s = (rng.normal(size=y.shape) + 2 * y).astype(np.float32)
    t0 = time.perf_counter()
    m = quiet(s, y, known=rng.random(y.shape) < 0.9)
    assert time.perf_counter() - t0 < 2.0
    assert 0.85 < m.macro_auroc < 0.95
