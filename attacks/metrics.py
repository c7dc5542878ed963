"""How much leaked: scores of reconstructed records, labels and features against the truth.

Signals are (n, length, leads). The similarity of two records is the mean over leads of the per-lead
Pearson r; reconstructions are paired with true records by the Hungarian algorithm on it. Every
waveform score is also computed for the population-mean ECG (the prior), and the gain over the
prior is reported, so a smooth average beat does not count as leakage.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


# ------------------------------------------------------------------------------------------ similarity
def _standardise(x: np.ndarray) -> np.ndarray:
    """Per record and lead: zero mean, unit norm over time (constant leads become all zero)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=-2, keepdims=True)
    norm = np.linalg.norm(xc, axis=-2, keepdims=True)
    return np.where(norm > 1e-12, xc / np.where(norm > 1e-12, norm, 1.0), 0.0)


def similarity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m): mean over leads of the Pearson r between record i of a and record j of b."""
    za, zb = _standardise(a), _standardise(b)
    return np.einsum("nlk,mlk->nm", za, zb) / a.shape[-1]


def match_records(rec: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian pairing maximising similarity: (rec indices, true indices, similarity matrix)."""
    sim = similarity_matrix(rec, true)
    rows, cols = linear_sum_assignment(-sim)
    return rows, cols, sim


# ------------------------------------------------------------------------------------------ waveforms
def pearson_per_lead(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(leads,) Pearson r of one record pair (L, leads); nan for a constant lead."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    den = np.linalg.norm(ac, axis=0) * np.linalg.norm(bc, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (ac * bc).sum(0) / np.where(den > 1e-12, den, 1.0), np.nan)


def lagged_pearson_per_lead(a: np.ndarray, b: np.ndarray, max_lag: int) -> np.ndarray:
    """(leads,) the best Pearson r over shifts of b by -max_lag..max_lag samples (overlap only)."""
    L = a.shape[0]
    best = np.full(a.shape[1], -np.inf)
    for lag in range(-max_lag, max_lag + 1):
        if L - abs(lag) < 8:
            continue
        aa, bb = (a[lag:], b[: L - lag]) if lag >= 0 else (a[: L + lag], b[-lag:])
        r = pearson_per_lead(aa, bb)
        best = np.fmax(best, r)
    return np.where(np.isfinite(best), best, np.nan)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def prd(rec: np.ndarray, true: np.ndarray) -> float:
    """Percentage root-mean-square difference (normalised: the true signal's mean is removed per lead)."""
    t = np.asarray(true, np.float64)
    err = np.sum((np.asarray(rec, np.float64) - t) ** 2)
    ref = np.sum((t - t.mean(0)) ** 2)
    return float(100.0 * math.sqrt(err / ref)) if ref > 0 else math.nan


def snr_db(rec: np.ndarray, true: np.ndarray) -> float:
    t = np.asarray(true, np.float64)
    err = np.sum((np.asarray(rec, np.float64) - t) ** 2)
    ref = np.sum((t - t.mean(0)) ** 2)
    return float(10.0 * math.log10(ref / err)) if err > 0 and ref > 0 else (math.inf if ref > 0 else math.nan)


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def waveform_scores(rec: np.ndarray, true: np.ndarray, prior_mean: np.ndarray, max_lag: int) -> dict[str, float]:
    """One record pair (L, leads): r, best-lag r, MSE, PRD, SNR, the same for the prior mean, and the gains."""
    out = {
        "r": _nanmean(pearson_per_lead(rec, true)),
        "lag_r": _nanmean(lagged_pearson_per_lead(true, rec, max_lag)),
        "mse": mse(rec, true),
        "prd": prd(rec, true),
        "snr_db": snr_db(rec, true),
        "prior_r": _nanmean(pearson_per_lead(prior_mean, true)),
        "prior_lag_r": _nanmean(lagged_pearson_per_lead(true, prior_mean, max_lag)),
        "prior_mse": mse(prior_mean, true),
    }
    out["r_gain"] = out["r"] - (0.0 if math.isnan(out["prior_r"]) else out["prior_r"])
    out["lag_r_gain"] = out["lag_r"] - (0.0 if math.isnan(out["prior_lag_r"]) else out["prior_lag_r"])
    out["mse_skill"] = 1.0 - out["mse"] / out["prior_mse"] if out["prior_mse"] > 0 else math.nan
    return out


# ------------------------------------------------------------------------------------------ re-identification
def reid_rank(rec: np.ndarray, cohort: np.ndarray, true_index: int) -> int:
    """1-based rank of the true record among the cohort's records by similarity to the reconstruction."""
    sims = similarity_matrix(rec[None], cohort)[0]
    return int(1 + np.sum(sims > sims[true_index]))


# ------------------------------------------------------------------------------------------ labels
def f1_per_class(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(classes,) F1 over records; nan where a class has no true and no predicted positive."""
    p, t = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp = (p & t).sum(0).astype(np.float64)
    fp = (p & ~t).sum(0)
    fn = (~p & t).sum(0)
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def label_scores(pred: np.ndarray, true: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Record-level: exact-match rate, per-class F1 and their nan-mean (macro F1)."""
    pred, true = np.asarray(pred).astype(int), np.asarray(true).astype(int)
    f1 = f1_per_class(pred, true)
    out = {"label_exact": float(np.mean(np.all(pred == true, axis=1))), "label_acc": float(np.mean(pred == true)),
           "label_macro_f1": _nanmean(f1)}
    out.update({f"f1_{c}": float(v) for c, v in zip(classes, f1)})
    return out


def presence_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Which classes occur among a client's records: accuracy, all-correct, and F1 over the classes."""
    p, t = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return {"presence_acc": float(np.mean(p == t)), "presence_exact": float(np.all(p == t)),
            "presence_f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan}


# ------------------------------------------------------------------------------------------ features
def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else math.nan
